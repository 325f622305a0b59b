//! A seeded tree-structured Parzen estimator over categorical choices, the Bayesian search
//! MIPROv2 uses to pick an (instruction, demonstration set) per step.
//!
//! Each trial chooses one category per dimension. The startup trials cover the space: in
//! each dimension, one of the categories tried fewest times so far, drawn at random among
//! them, until every category of every dimension has been tried and at least `startup`
//! trials were made. A category never tried has no evidence for or against it, and with the
//! few trials of a light search a uniform draw can leave out the one that matters. (Runs
//! stored before that rule draw their first `startup` trials uniformly: `cover` is off for
//! them, so they resume to the same choices.) After that, the trials seen so far are split into the better ones (the top
//! `ceil(10%)`, at most 25, at least 1, as Optuna does) and the rest; for each dimension, the
//! smoothed frequencies of each category among the better trials, `l(x)`, and among the
//! rest, `g(x)`, are compared: `draws` categories are sampled from `l`, and the one with the
//! highest `l(x) / g(x)` is chosen (the first drawn among equals). Dimensions are treated
//! independently.
//!
//! Everything depends only on the observations, in order, and the generator's state, so a
//! resumed search makes the same choices.

use crate::random::Rng;

/// The search's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Tpe {
    /// Trials before the estimator takes over, at least.
    pub startup: usize,
    /// Whether the startup trials go on until every category was tried, least-tried first
    /// (otherwise they are `startup` uniform draws).
    pub cover: bool,
    /// Categories drawn from `l` per choice.
    pub draws: usize,
}

impl Default for Tpe {
    fn default() -> Self {
        Tpe {
            startup: 4,
            cover: true,
            draws: 24,
        }
    }
}

/// A trial's choice (one category per dimension) and its score.
pub type Observation = (Vec<usize>, f64);

impl Tpe {
    /// The next choice, one category per dimension (`sizes[d]` categories in dimension `d`),
    /// given the trials so far.
    pub fn suggest(&self, sizes: &[usize], seen: &[Observation], rng: &mut Rng) -> Vec<usize> {
        if !self.cover && seen.len() < self.startup {
            return sizes.iter().map(|&k| uniform(rng, k)).collect();
        }
        let untried = self.cover
            && sizes
                .iter()
                .enumerate()
                .any(|(d, &k)| (0..k).any(|x| !seen.iter().any(|(c, _)| c[d] == x)));
        if seen.len() < self.startup || untried {
            return sizes
                .iter()
                .enumerate()
                .map(|(d, &k)| least_tried(rng, k, seen.iter().map(|(c, _)| c[d])))
                .collect();
        }
        let better = better_count(seen.len());
        // Stable order: score descending, earlier trials first among equals.
        let mut order: Vec<usize> = (0..seen.len()).collect();
        order.sort_by(|&a, &b| seen[b].1.total_cmp(&seen[a].1).then(a.cmp(&b)));
        let (good, bad) = order.split_at(better);
        sizes
            .iter()
            .enumerate()
            .map(|(d, &k)| {
                let l = density(k, good.iter().map(|&t| seen[t].0[d]));
                let g = density(k, bad.iter().map(|&t| seen[t].0[d]));
                let mut best: Option<(usize, f64)> = None;
                for _ in 0..self.draws.max(1) {
                    let x = draw(&l, rng);
                    let ratio = l[x] / g[x];
                    if best.is_none_or(|(_, r)| ratio > r) {
                        best = Some((x, ratio));
                    }
                }
                best.map_or(0, |(x, _)| x)
            })
            .collect()
    }
}

/// How many trials count as the better ones among `n`.
pub fn better_count(n: usize) -> usize {
    n.div_ceil(10).clamp(1, 25).min(n)
}

/// Smoothed category frequencies: each category starts at one count.
fn density(k: usize, chosen: impl Iterator<Item = usize>) -> Vec<f64> {
    let mut counts = vec![1.0; k];
    for x in chosen {
        if let Some(c) = counts.get_mut(x) {
            *c += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    counts.iter().map(|c| c / total).collect()
}

fn uniform(rng: &mut Rng, k: usize) -> usize {
    if k == 0 {
        0
    } else {
        (rng.next_u64() % k as u64) as usize
    }
}

/// One of the `k` categories chosen fewest times in `chosen`, drawn uniformly among them.
fn least_tried(rng: &mut Rng, k: usize, chosen: impl Iterator<Item = usize>) -> usize {
    let mut counts = vec![0usize; k];
    for x in chosen {
        if let Some(c) = counts.get_mut(x) {
            *c += 1;
        }
    }
    let fewest = counts.iter().copied().min().unwrap_or(0);
    let candidates: Vec<usize> = (0..k).filter(|&x| counts[x] == fewest).collect();
    if candidates.is_empty() {
        0
    } else {
        candidates[(rng.next_u64() % candidates.len() as u64) as usize]
    }
}

/// A category drawn with probability proportional to `weights`.
fn draw(weights: &[f64], rng: &mut Rng) -> usize {
    // 53 random bits make a uniform number in [0, 1).
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let mut acc = 0.0;
    for (x, w) in weights.iter().enumerate() {
        acc += w;
        if u < acc {
            return x;
        }
    }
    weights.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_trials_are_uniform_and_seeded() {
        let tpe = Tpe::default();
        let a = tpe.suggest(&[3, 5], &[], &mut Rng::new(1));
        let b = tpe.suggest(&[3, 5], &[], &mut Rng::new(1));
        assert_eq!(a, b, "the same seed makes the same choice");
        assert!(a[0] < 3 && a[1] < 5);
        let many: std::collections::BTreeSet<Vec<usize>> = (0..40)
            .map(|s| tpe.suggest(&[3, 5], &[], &mut Rng::new(s)))
            .collect();
        assert!(many.len() > 8, "seeds spread over the space: {many:?}");
    }

    #[test]
    fn startup_tries_every_category_before_repeating_one() {
        let tpe = Tpe::default();
        let sizes = [7, 3];
        let mut seen: Vec<Observation> = Vec::new();
        for _ in 0..7 {
            let choice = tpe.suggest(&sizes, &seen, &mut Rng::new(seen.len() as u64));
            seen.push((choice, 0.5));
        }
        let firsts: std::collections::BTreeSet<usize> = seen.iter().map(|(c, _)| c[0]).collect();
        assert_eq!(firsts.len(), 7, "each of the seven once: {seen:?}");
        let mut seconds = [0usize; 3];
        for (c, _) in &seen {
            seconds[c[1]] += 1;
        }
        assert!(seconds.iter().all(|&n| n == 2 || n == 3), "{seconds:?}");
    }

    #[test]
    fn without_cover_the_startup_is_the_stored_runs_uniform_draws() {
        // Pinned: runs stored before the covering startup resume to these choices.
        let tpe = Tpe {
            cover: false,
            ..Tpe::default()
        };
        let mut rng = Rng::new(7);
        let mut seen: Vec<Observation> = Vec::new();
        for _ in 0..4 {
            let choice = tpe.suggest(&[7, 7], &seen, &mut rng);
            seen.push((choice, 0.5));
        }
        let mut again = Rng::new(7);
        let uniform: Vec<Vec<usize>> = (0..4)
            .map(|_| vec![uniform(&mut again, 7), uniform(&mut again, 7)])
            .collect();
        let chosen: Vec<Vec<usize>> = seen.into_iter().map(|(c, _)| c).collect();
        assert_eq!(chosen, uniform);
    }

    #[test]
    fn after_startup_the_better_categories_are_preferred() {
        let tpe = Tpe::default();
        // Category 2 of dimension 0 scored best every time; dimension 1 does not matter.
        let seen: Vec<Observation> = (0..12)
            .map(|t| {
                let x = t % 4;
                (vec![x, t % 3], if x == 2 { 0.9 } else { 0.2 })
            })
            .collect();
        let mut picks = [0usize; 4];
        for seed in 0..50 {
            picks[tpe.suggest(&[4, 3], &seen, &mut Rng::new(seed))[0]] += 1;
        }
        assert!(picks[2] > 40, "the estimator exploits: {picks:?}");
    }

    #[test]
    fn the_better_split_follows_optuna() {
        assert_eq!(better_count(1), 1);
        assert_eq!(better_count(10), 1);
        assert_eq!(better_count(11), 2);
        assert_eq!(better_count(400), 25);
    }

    #[test]
    fn draws_follow_their_weights() {
        let mut rng = Rng::new(3);
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            counts[draw(&[0.1, 0.2, 0.7], &mut rng)] += 1;
        }
        assert!((200..400).contains(&counts[0]), "{counts:?}");
        assert!((1900..2300).contains(&counts[2]), "{counts:?}");
    }
}

//! The Pareto front of a candidate pool, as GEPA uses it to choose what to improve next.
//!
//! Every candidate in the pool is scored on every validation example. An example's front is
//! the set of candidates with the best score on it. A candidate is dominated when every front
//! it is on also holds another, not dominated, candidate; removing dominated candidates keeps
//! the pool's strengths while favouring candidates that are best somewhere nobody else is. A
//! parent is drawn among the remaining ones in proportion to how many fronts each is on.
//!
//! Everything here is a pure function of the scores and a seeded generator, so a resumed run
//! draws the same parents.

use std::collections::{BTreeMap, BTreeSet};

use crate::random::Rng;

/// For each example, the candidates (by pool index) with the best score on it.
/// `scores[candidate][example]`; every candidate has a score for every example.
pub fn fronts(scores: &[Vec<f64>]) -> Vec<BTreeSet<usize>> {
    let examples = scores.iter().map(Vec::len).min().unwrap_or(0);
    (0..examples)
        .map(|e| {
            let best = scores
                .iter()
                .map(|s| s[e])
                .fold(f64::NEG_INFINITY, f64::max);
            scores
                .iter()
                .enumerate()
                .filter(|(_, s)| s[e] == best)
                .map(|(c, _)| c)
                .collect()
        })
        .collect()
}

/// Whether `candidate` is on no front without one of `others` beside it.
fn dominated(candidate: usize, others: &BTreeSet<usize>, fronts: &[BTreeSet<usize>]) -> bool {
    fronts
        .iter()
        .filter(|front| front.contains(&candidate))
        .all(|front| front.iter().any(|c| *c != candidate && others.contains(c)))
}

/// The fronts with every dominated candidate removed. Candidates are considered from the
/// lowest mean score up (ties by pool index), one at a time, until none is dominated.
pub fn without_dominated(scores: &[Vec<f64>], fronts: &[BTreeSet<usize>]) -> Vec<BTreeSet<usize>> {
    let on_a_front: BTreeSet<usize> = fronts.iter().flatten().copied().collect();
    let mean = |c: usize| scores[c].iter().sum::<f64>() / scores[c].len().max(1) as f64;
    let mut order: Vec<usize> = on_a_front.iter().copied().collect();
    order.sort_by(|a, b| mean(*a).total_cmp(&mean(*b)).then(a.cmp(b)));
    let mut removed = BTreeSet::new();
    loop {
        let found = order.iter().copied().find(|&c| {
            if removed.contains(&c) {
                return false;
            }
            let others: BTreeSet<usize> = on_a_front
                .iter()
                .copied()
                .filter(|o| *o != c && !removed.contains(o))
                .collect();
            dominated(c, &others, fronts)
        });
        match found {
            Some(c) => {
                removed.insert(c);
            }
            None => break,
        }
    }
    fronts
        .iter()
        .map(|front| front.difference(&removed).copied().collect())
        .collect()
}

/// How many fronts each candidate leads on, after removing dominated candidates.
pub fn lead_counts(scores: &[Vec<f64>]) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for front in without_dominated(scores, &fronts(scores)) {
        for c in front {
            *counts.entry(c).or_insert(0) += 1;
        }
    }
    counts
}

/// A parent drawn in proportion to how many fronts it leads on; `None` for an empty pool.
pub fn sample_parent(scores: &[Vec<f64>], rng: &mut Rng) -> Option<usize> {
    let counts = lead_counts(scores);
    let total: usize = counts.values().sum();
    if total == 0 {
        return None;
    }
    let mut pick = (rng.next_u64() % total as u64) as usize;
    for (candidate, count) in counts {
        if pick < count {
            return Some(candidate);
        }
        pick -= count;
    }
    None
}

/// GEPA's acceptance rule: a child is kept only if it does strictly better than its parent
/// on the same minibatch.
pub fn accept(parent: &[f64], child: &[f64]) -> bool {
    child.iter().sum::<f64>() > parent.iter().sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[usize]) -> BTreeSet<usize> {
        items.iter().copied().collect()
    }

    #[test]
    fn each_example_is_led_by_its_best_candidates() {
        let scores = vec![
            vec![1.0, 0.0, 0.5],
            vec![1.0, 1.0, 0.0],
            vec![0.0, 0.0, 0.5],
        ];
        assert_eq!(fronts(&scores), vec![set(&[0, 1]), set(&[1]), set(&[0, 2])]);
    }

    #[test]
    fn a_candidate_never_alone_on_a_front_is_dominated() {
        // 2 is best only where 1 is best too; 0 is alone on example 2.
        let scores = vec![
            vec![0.0, 0.0, 1.0],
            vec![1.0, 1.0, 0.0],
            vec![1.0, 0.5, 0.0],
        ];
        let reduced = without_dominated(&scores, &fronts(&scores));
        assert_eq!(reduced, vec![set(&[1]), set(&[1]), set(&[0])]);
        assert_eq!(lead_counts(&scores), [(0, 1), (1, 2)].into_iter().collect());
    }

    #[test]
    fn equal_candidates_keep_one_of_them() {
        // Two identical candidates: the lower-indexed of the tied pair goes first, so
        // exactly one survives, and it is the same one every time.
        let scores = vec![vec![1.0, 1.0], vec![1.0, 1.0]];
        let counts = lead_counts(&scores);
        assert_eq!(counts.len(), 1);
        assert_eq!(counts, lead_counts(&scores));
    }

    #[test]
    fn parents_are_drawn_in_proportion_to_the_fronts_they_lead() {
        // 1 leads on three examples, 0 on one.
        let scores = vec![vec![1.0, 0.0, 0.0, 0.0], vec![0.0, 1.0, 1.0, 1.0]];
        let mut rng = Rng::new(3);
        let draws: Vec<usize> = (0..4000)
            .map(|_| sample_parent(&scores, &mut rng).unwrap())
            .collect();
        let ones = draws.iter().filter(|&&c| c == 1).count();
        assert!((2800..3200).contains(&ones), "{ones} of 4000");
        let again: Vec<usize> = {
            let mut rng = Rng::new(3);
            (0..4000)
                .map(|_| sample_parent(&scores, &mut rng).unwrap())
                .collect()
        };
        assert_eq!(draws, again, "the same seed draws the same parents");
        assert_eq!(sample_parent(&[], &mut rng), None);
    }

    #[test]
    fn a_child_must_beat_its_parent_on_the_minibatch() {
        assert!(accept(&[0.0, 1.0], &[1.0, 1.0]));
        assert!(!accept(&[1.0, 0.0], &[0.0, 1.0]), "a tie is not kept");
        assert!(!accept(&[1.0, 1.0], &[1.0, 0.0]));
    }
}

//! The sampler behind [`Grammar::sample`]: short, readable members of the language, drawn
//! with the caller's generator, that take the shortest way out once deep or long.

use super::{first_outside, Class, Grammar, Node, Shortest, MAX_FRAMES};
use crate::random::Rng;

/// Nodes sampled after which sampling only takes the shortest way out.
const SAMPLE_SOFT_BUDGET: usize = 5_000;
/// Nodes sampled after which sampling stops.
const SAMPLE_HARD_BUDGET: usize = 200_000;
/// Bytes of sample output after which sampling stops.
pub(super) const MAX_SAMPLE_BYTES: usize = 1 << 20;
/// Rule depth past which sampling takes the alternative and the count that end soonest.
const SAMPLE_DEPTH: usize = 8;
/// The characters a sample draws from, most readable first; the first tier that has a
/// character in the class wins.
pub(super) const PREFERRED: [&str; 2] = [
    "abcdefghijklmnopqrstuvwxyz0123456789",
    " ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:;!?-+'\"/\\()[]{}<>=_*&%$#@^~`|",
];

/// A random member of `grammar`'s language, the same for the same generator state.
pub(super) fn sample(grammar: &Grammar, rng: &mut Rng) -> String {
    let mut sampler = Sampler {
        grammar,
        rng,
        out: String::new(),
        depth: 0,
        frames: 0,
        work: 0,
    };
    sampler.emit(&Node::Rule(grammar.root));
    sampler.out
}

struct Sampler<'a> {
    grammar: &'a Grammar,
    rng: &'a mut Rng,
    out: String,
    /// Rules being expanded.
    depth: usize,
    frames: usize,
    work: usize,
}

impl Sampler<'_> {
    fn spent(&self) -> bool {
        self.work > SAMPLE_HARD_BUDGET || self.out.len() > MAX_SAMPLE_BYTES
    }

    fn emit(&mut self, node: &Node) {
        self.work += 1;
        if self.spent() || self.frames >= MAX_FRAMES {
            return;
        }
        self.frames += 1;
        self.emit_inner(node);
        self.frames -= 1;
    }

    /// Emits a node that can finish (its `shortest` is `Some`), choosing only among the
    /// alternatives and counts that can finish too.
    fn emit_inner(&mut self, node: &Node) {
        let grammar = self.grammar;
        let hurry = self.depth > SAMPLE_DEPTH || self.work > SAMPLE_SOFT_BUDGET;
        match node {
            Node::Literal(chars) => self.out.extend(chars.iter()),
            Node::Class(class) => {
                if let Some(c) = class.pick(self.rng) {
                    self.out.push(c);
                }
            }
            Node::Rule(id) => {
                if let Some(body) = grammar.rules.get(*id) {
                    self.depth += 1;
                    self.emit(body);
                    self.depth -= 1;
                }
            }
            Node::Seq(items) => {
                for item in items {
                    if self.spent() {
                        break;
                    }
                    self.emit(item);
                }
            }
            Node::Alt(alts) => {
                let open: Vec<(&Node, Shortest)> = alts
                    .iter()
                    .filter_map(|alt| Some((alt, grammar.shortest_of(alt)?)))
                    .collect();
                let chosen = if hurry {
                    open.iter().min_by_key(|(_, s)| *s)
                } else {
                    open.get(below(self.rng, open.len()))
                };
                if let Some((alt, _)) = chosen {
                    self.emit(alt);
                }
            }
            Node::Repeat { item, min, max } => {
                let count = if grammar.shortest_of(item).is_none() {
                    0
                } else if hurry {
                    *min
                } else {
                    let most = match max {
                        Some(max) => (*max).min(min.saturating_add(3)),
                        None => min.saturating_add(2),
                    };
                    *min + below(self.rng, (most - *min) as usize + 1) as u32
                };
                for _ in 0..count {
                    if self.spent() {
                        break;
                    }
                    self.emit(item);
                }
            }
        }
    }
}

impl Class {
    fn pick(&self, rng: &mut Rng) -> Option<char> {
        for tier in PREFERRED {
            let candidates: Vec<char> = tier.chars().filter(|&c| self.contains(c)).collect();
            if !candidates.is_empty() {
                return candidates.get(below(rng, candidates.len())).copied();
            }
        }
        if self.negated {
            return first_outside(&self.ranges);
        }
        let &(lo, hi) = self.ranges.get(below(rng, self.ranges.len()))?;
        let offset = rng.next_u64() % (u64::from(hi as u32 - lo as u32) + 1);
        // A range across the surrogate gap can land on a code point that is no char.
        char::from_u32(lo as u32 + offset as u32).or(Some(lo))
    }
}

fn below(rng: &mut Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (rng.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{grammar, output_grammars};
    use crate::random::Rng;

    #[test]
    fn samples_match_their_grammar() {
        let mut grammars = output_grammars();
        grammars.push(
            "root ::= (\"a\" | [x-z]{2,} | item)+ \".\"?\nitem ::= \"(\" root? \")\"\n".into(),
        );
        grammars.push("root ::= [^a-z]{3} [\\n\\t] . \"\\\"\"".into());
        for text in grammars {
            let g = grammar(&text);
            for seed in 0..300 {
                let sample = g.sample(&mut Rng::new(seed));
                assert!(
                    g.matches(&sample),
                    "seed {seed}: {sample:?} is not in\n{text}"
                );
            }
        }
    }

    #[test]
    fn samples_are_short_readable_and_repeatable() {
        let g = grammar("root ::= [^\\n]+ \" \" \"x\"* \" \" \"y\"{2,} \" \" \"z\"{1,10}");
        for seed in 0..100 {
            let sample = g.sample(&mut Rng::new(seed));
            assert_eq!(sample, g.sample(&mut Rng::new(seed)));
            let parts: Vec<&str> = sample.split(' ').collect();
            let [text, xs, ys, zs] = parts[..] else {
                panic!("{sample:?}")
            };
            assert!((1..=3).contains(&text.len()), "{sample:?}");
            assert!(text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
            assert!(xs.len() <= 2 && (2..=4).contains(&ys.len()) && (1..=4).contains(&zs.len()));
        }
    }
}

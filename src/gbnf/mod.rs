//! A small interpreter for GBNF, the grammar language llama.cpp constrains decoding with.
//!
//! It exists so that the fake model ([`crate::lm::FakeLm`]) can obey a request's grammar without
//! llama.cpp ([`Grammar::matches`] checks a reply, [`Grammar::sample`] makes one up), and so
//! that the engine knows where a reply stands ([`Grammar::continuation`]: the shortest way to
//! finish it, the text it cannot avoid next). It covers
//! what [`crate::program::grammar`] generates and a little more, for grammars written by hand
//! in tests: rules `name ::= body` (a body may go on over following lines), `#` comments,
//! sequences, `|`, groups, string literals, character classes (negated, with ranges and
//! escapes), `.`, rule references and one postfix operator per item: `?`, `*`, `+`, `{m}`,
//! `{m,}`, `{m,n}`. Escapes are `\n`, `\r`, `\t`, `\xHH`, `\uHHHH` and `\UHHHHHHHH`; any
//! other escaped character stands for itself.
//!
//! No input makes it panic or run unbounded: parsing caps nesting and repetition counts, and
//! matching and sampling give up (matching answers `false`, sampling returns what it has) past
//! budgets far above what any reply of ours needs.
//!
//! This file holds the grammar's data types, the public API and each rule's shortest
//! derivation (worked out when parsing, read when sampling); the work is done in `parse`
//! (text to rules), `matching` (the recognizer) and `sample` (the generator of members).

mod matching;
mod parse;
mod prefix;
mod sample;

pub use prefix::Continuation;

use crate::random::Rng;

/// Nodes in progress at once while matching or sampling; past it a branch is abandoned, long
/// before the thread's stack runs out.
const MAX_FRAMES: usize = 256;

/// A grammar that does not parse: the line and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct GrammarError(String);

/// A parsed grammar, ready to match and sample text.
#[derive(Debug, Clone)]
pub struct Grammar {
    rules: Vec<Node>,
    /// Per rule, its shortest derivation; `None` for a rule that can never finish.
    shortest: Vec<Option<Shortest>>,
    root: usize,
    /// What prefix analysis needs of every rule, worked out at its first use.
    prefix_tables: std::sync::OnceLock<prefix::Tables>,
}

#[derive(Debug, Clone)]
enum Node {
    Literal(Vec<char>),
    Class(Class),
    Rule(usize),
    Seq(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        item: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

#[derive(Debug, Clone)]
struct Class {
    negated: bool,
    ranges: Vec<(char, char)>,
}

/// The least rule-nesting height and the least length of any text a node can produce. Taking
/// the lowest height at every choice is what guarantees that sampling finishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Shortest {
    height: u32,
    len: usize,
}

impl Grammar {
    /// Parses GBNF text; the rule named `root` is the whole language.
    pub fn parse(text: &str) -> Result<Grammar, GrammarError> {
        parse::grammar(text)
    }

    /// Whether the whole of `text` is in the language.
    ///
    /// Work is bounded: text nested more than a few dozen levels deep, or a grammar so
    /// ambiguous that it needs more than a million steps, is answered `false`. Left-recursive
    /// rules (which llama.cpp rejects) match only through their other alternatives.
    pub fn matches(&self, text: &str) -> bool {
        matching::matches(self, text)
    }

    /// A random member of the language, the same for the same generator state.
    ///
    /// Samples are short and readable: `*` repeats 0 to 2 times, `+` 1 to 3, `{m,}` m to m+2,
    /// `{m,n}` m to min(n, m+3); classes give lowercase letters and digits where they can,
    /// then capitals, space and punctuation; alternatives are equally likely. Past a rule
    /// depth of 8 every choice takes the shortest way out. A grammar whose shortest members
    /// are enormous gets a sample cut short, which then does not match.
    pub fn sample(&self, rng: &mut Rng) -> String {
        sample::sample(self, rng)
    }

    fn shortest_of(&self, node: &Node) -> Option<Shortest> {
        shortest(node, &self.shortest)
    }
}

impl Class {
    fn contains(&self, c: char) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != self.negated
    }

    fn is_empty(&self) -> bool {
        if self.negated {
            first_outside(&self.ranges).is_none()
        } else {
            self.ranges.is_empty()
        }
    }
}

/// The lowest char that none of `ranges` covers.
fn first_outside(ranges: &[(char, char)]) -> Option<char> {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut next: u32 = 0;
    for (lo, hi) in sorted {
        if lo as u32 > next {
            break;
        }
        next = next.max(hi as u32 + 1);
        if (0xD800..0xE000).contains(&next) {
            next = 0xE000;
        }
    }
    char::from_u32(next)
}

fn shortest(node: &Node, table: &[Option<Shortest>]) -> Option<Shortest> {
    let zero = Shortest { height: 0, len: 0 };
    match node {
        Node::Literal(chars) => Some(Shortest {
            height: 0,
            len: chars.len(),
        }),
        Node::Class(class) => (!class.is_empty()).then_some(Shortest { height: 0, len: 1 }),
        Node::Rule(id) => table.get(*id).copied().flatten(),
        Node::Seq(items) => items.iter().try_fold(zero, |acc, item| {
            let s = shortest(item, table)?;
            Some(Shortest {
                height: acc.height.max(s.height),
                len: acc.len.saturating_add(s.len),
            })
        }),
        Node::Alt(alts) => alts
            .iter()
            .filter_map(|alt| shortest(alt, table))
            .reduce(|a, b| Shortest {
                height: a.height.min(b.height),
                len: a.len.min(b.len),
            }),
        Node::Repeat { min: 0, .. } => Some(zero),
        Node::Repeat { item, min, .. } => shortest(item, table).map(|s| Shortest {
            height: s.height,
            len: s.len.saturating_mul(*min as usize),
        }),
    }
}

/// Each rule's shortest derivation, by rounds until nothing changes: values only ever
/// decrease, and a shortest derivation never needs more rounds than there are rules.
fn shortest_table(rules: &[Node]) -> Vec<Option<Shortest>> {
    let mut table = vec![None; rules.len()];
    for _ in 0..=rules.len() {
        let mut changed = false;
        for (id, body) in rules.iter().enumerate() {
            let found = shortest(body, &table).map(|s| Shortest {
                height: s.height.saturating_add(1),
                len: s.len,
            });
            if let Some(entry) = table.get_mut(id) {
                if *entry != found {
                    *entry = found;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    //! The bounds that hold across parsing, matching and sampling, and the helpers the test
    //! modules of `parse`, `matching` and `sample` share.

    use super::sample::MAX_SAMPLE_BYTES;
    use super::*;
    use crate::program::grammar::for_outputs;
    use crate::program::{FieldType, OutputField};

    pub(super) fn grammar(text: &str) -> Grammar {
        Grammar::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    pub(super) fn error(text: &str) -> String {
        match Grammar::parse(text) {
            Ok(_) => panic!("{text:?} parsed"),
            Err(e) => e.to_string(),
        }
    }

    pub(super) fn output_grammars() -> Vec<String> {
        let kinds = [
            FieldType::Text,
            FieldType::Choice {
                choices: vec!["yes".into(), "say \"no\"".into()],
            },
            FieldType::Integer,
            FieldType::Number,
            FieldType::Boolean,
            FieldType::List,
            FieldType::Json,
        ];
        let field = |name: &str, ty: FieldType| OutputField {
            name: name.into(),
            description: None,
            ty,
            max_chars: None,
        };
        kinds
            .into_iter()
            .map(|ty| for_outputs(&[field("reasoning", FieldType::Text), field("answer", ty)]))
            .collect()
    }

    #[test]
    fn pathological_grammars_stay_bounded() {
        let g = grammar("root ::= root \"a\" | \"b\"");
        assert!(g.matches("b"));
        assert!(g.sample(&mut Rng::new(1)).starts_with('b'));
        let g = grammar("root ::= ((\"ab\"{1000}){1000}){1000}");
        assert!(!g.matches("ab"));
        assert!(g.sample(&mut Rng::new(1)).len() <= MAX_SAMPLE_BYTES + 2);
        let g = grammar("root ::= (\"\" | \"a\"*)* \"b\"");
        assert!(g.matches("aab"));
        assert!(error(&format!(
            "root ::= {}\"a\"{}",
            "(".repeat(100),
            ")".repeat(100)
        ))
        .contains("nested"));
        let grammars = output_grammars();
        let json = &grammars[6];
        for end in 0..json.len() {
            if let Ok(g) = Grammar::parse(json.get(..end).unwrap_or_default()) {
                g.matches(&g.sample(&mut Rng::new(end as u64)));
            }
        }
    }
}

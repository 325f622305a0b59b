//! Where a partial reply stands in a grammar: the shortest text that completes it, and the
//! text it must continue with whatever comes next.
//!
//! Both come from one analysis of the prefix. For every node started at some position, with
//! the rest of the prefix consumed by it, the analysis finds the shortest text that finishes
//! the node, the characters that may come next and whether the node may end right there.
//! Complete sub-derivations inside the prefix are found by the recognizer of `matching`
//! (positions where a node can end), so the analysis of a rule at a start position is done
//! once and remembered.

use std::collections::{HashMap, HashSet};

use super::matching::Matcher;
use super::sample::PREFERRED;
use super::{first_outside, Class, Grammar, Node, MAX_FRAMES};

/// Characters of forced text after which the search for more stops.
const MAX_FORCED_CHARS: usize = 256;

/// How a prefix of some member of the language can go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Continuation {
    /// The shortest text that makes the prefix a member ("" when it is one).
    pub shortest: String,
    /// Text that every member starting with the prefix continues with, up to the first point
    /// where there is a choice (of characters, or of ending there).
    pub forced: String,
    /// Whether the prefix itself is a member.
    pub complete: bool,
    /// Whether some member is longer than the prefix.
    pub can_continue: bool,
}

impl Grammar {
    /// How `prefix` can go on, or `None` when no member starts with it (or when the analysis
    /// runs past its work budget).
    pub fn continuation(&self, prefix: &str) -> Option<Continuation> {
        let tables = self.prefix_tables.get_or_init(|| Tables::new(self));
        let first = Analysis::new(self, tables, prefix.chars().collect()).root()?;
        let mut forced = String::new();
        let mut current = first.clone();
        while !current.done && !current.next.many && forced.len() < MAX_FORCED_CHARS {
            let Some(c) = current.next.one else { break };
            forced.push(c);
            let text: Vec<char> = prefix.chars().chain(forced.chars()).collect();
            match Analysis::new(self, tables, text).root() {
                Some(next) => current = next,
                None => {
                    // Only a budget overrun gets here: keep what is certain.
                    forced.pop();
                    break;
                }
            }
        }
        Some(Continuation {
            can_continue: first.next.one.is_some() || first.next.many,
            shortest: first.rest,
            forced,
            complete: first.done,
        })
    }
}

/// The characters that may come next: none, exactly one, or more than one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Next {
    one: Option<char>,
    many: bool,
}

impl Next {
    fn char(c: char) -> Next {
        Next {
            one: Some(c),
            many: false,
        }
    }

    fn union(self, other: Next) -> Next {
        let many = self.many
            || other.many
            || matches!((self.one, other.one), (Some(a), Some(b)) if a != b);
        Next {
            one: self.one.or(other.one),
            many,
        }
    }

    fn of_class(class: &Class) -> Next {
        if class.is_empty() {
            return Next::default();
        }
        match class.single() {
            Some(c) => Next::char(c),
            None => Next {
                one: None,
                many: true,
            },
        }
    }
}

impl Class {
    /// The one character the class holds, if it holds exactly one.
    fn single(&self) -> Option<char> {
        let &(lo, hi) = self.ranges.first()?;
        (!self.negated && lo == hi && self.ranges.iter().all(|&r| r == (lo, hi))).then_some(lo)
    }

    /// A readable character of the class, always the same one.
    fn typical(&self) -> Option<char> {
        for tier in PREFERRED {
            if let Some(c) = tier.chars().find(|&c| self.contains(c)) {
                return Some(c);
            }
        }
        if self.negated {
            first_outside(&self.ranges)
        } else {
            self.ranges.first().map(|&(lo, _)| lo)
        }
    }
}

/// A node in progress at the end of the prefix.
#[derive(Debug, Clone)]
struct Open {
    /// The shortest text that finishes the node.
    rest: String,
    next: Next,
    /// The node may end at the end of the prefix.
    done: bool,
}

impl Open {
    /// Either way of going on: the shorter rest (the first on a tie), every next character.
    fn union(a: Option<Open>, b: Open) -> Option<Open> {
        Some(match a {
            None => b,
            Some(a) => Open {
                rest: if b.rest.chars().count() < a.rest.chars().count() {
                    b.rest
                } else {
                    a.rest
                },
                next: a.next.union(b.next),
                done: a.done || b.done,
            },
        })
    }
}

/// What a node can do from scratch: the first characters of its texts, its shortest text.
#[derive(Debug, Clone)]
pub(super) struct Tables {
    /// Per rule, the characters its texts can start with.
    first: Vec<Next>,
    /// Per rule, its shortest text (`None`: it never finishes, or it is too deep to write).
    text: Vec<Option<String>>,
}

impl Tables {
    fn new(grammar: &Grammar) -> Tables {
        let n = grammar.rules.len();
        let mut first = vec![Next::default(); n];
        // `Next` only grows, and by at most two steps per rule.
        for _ in 0..=2 * n + 1 {
            let mut changed = false;
            for id in 0..n {
                let found = first_of(grammar, &grammar.rules[id], &first);
                if found != first[id] {
                    first[id] = found;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut tables = Tables {
            first,
            text: vec![None; n],
        };
        for id in 0..n {
            tables.text[id] = shortest_text(grammar, &grammar.rules[id], &tables.text, 0);
        }
        tables
    }
}

fn nullable(grammar: &Grammar, node: &Node) -> bool {
    grammar.shortest_of(node).is_some_and(|s| s.len == 0)
}

fn first_of(grammar: &Grammar, node: &Node, table: &[Next]) -> Next {
    match node {
        Node::Literal(chars) => chars.first().map_or(Next::default(), |&c| Next::char(c)),
        Node::Class(class) => Next::of_class(class),
        Node::Rule(id) => table.get(*id).copied().unwrap_or_default(),
        Node::Seq(items) => first_of_seq(grammar, items, table),
        Node::Alt(alts) => alts.iter().fold(Next::default(), |acc, alt| {
            acc.union(first_of(grammar, alt, table))
        }),
        Node::Repeat { max: Some(0), .. } => Next::default(),
        Node::Repeat { item, .. } => first_of(grammar, item, table),
    }
}

fn first_of_seq(grammar: &Grammar, items: &[Node], table: &[Next]) -> Next {
    let mut next = Next::default();
    for item in items {
        next = next.union(first_of(grammar, item, table));
        if !nullable(grammar, item) {
            break;
        }
    }
    next
}

/// The shortest text of `node`: at each choice the alternative of least length, then least
/// rule height (which is what makes the descent end).
fn shortest_text(
    grammar: &Grammar,
    node: &Node,
    rules: &[Option<String>],
    depth: usize,
) -> Option<String> {
    if depth > MAX_FRAMES {
        return None;
    }
    grammar.shortest_of(node)?;
    match node {
        Node::Literal(chars) => Some(chars.iter().collect()),
        Node::Class(class) => class.typical().map(String::from),
        Node::Rule(id) => match rules.get(*id).cloned().flatten() {
            Some(text) => Some(text),
            None => shortest_text(grammar, grammar.rules.get(*id)?, rules, depth + 1),
        },
        Node::Seq(items) => items.iter().try_fold(String::new(), |mut acc, item| {
            acc.push_str(&shortest_text(grammar, item, rules, depth + 1)?);
            Some(acc)
        }),
        Node::Alt(alts) => {
            let best = alts
                .iter()
                .filter_map(|alt| grammar.shortest_of(alt).map(|s| (s.len, s.height, alt)))
                .min_by_key(|&(len, height, _)| (len, height))?;
            shortest_text(grammar, best.2, rules, depth + 1)
        }
        Node::Repeat { item, min, .. } => {
            let one = shortest_text(grammar, item, rules, depth + 1)?;
            Some(one.repeat(*min as usize))
        }
    }
}

/// The analysis of one prefix.
struct Analysis<'a> {
    grammar: &'a Grammar,
    tables: &'a Tables,
    matcher: Matcher<'a>,
    len: usize,
    memo: HashMap<(usize, usize), Option<Open>>,
    active: HashSet<(usize, usize)>,
    frames: usize,
}

impl<'a> Analysis<'a> {
    fn new(grammar: &'a Grammar, tables: &'a Tables, text: Vec<char>) -> Self {
        let len = text.len();
        Analysis {
            grammar,
            tables,
            matcher: Matcher::new(grammar, text),
            len,
            memo: HashMap::new(),
            active: HashSet::new(),
            frames: 0,
        }
    }

    fn root(&mut self) -> Option<Open> {
        let open = self.open(&Node::Rule(self.grammar.root), 0);
        if self.matcher.spent() {
            return None;
        }
        open
    }

    /// The node started at `start`, having consumed the rest of the prefix.
    fn open(&mut self, node: &Node, start: usize) -> Option<Open> {
        if self.frames >= MAX_FRAMES || self.matcher.spent() {
            return None;
        }
        if start == self.len {
            return self.fresh(node);
        }
        self.frames += 1;
        let open = self.open_inner(node, start);
        self.frames -= 1;
        open
    }

    /// A node that has not consumed anything yet.
    fn fresh(&self, node: &Node) -> Option<Open> {
        Some(Open {
            rest: shortest_text(self.grammar, node, &self.tables.text, 0)?,
            next: first_of(self.grammar, node, &self.tables.first),
            done: nullable(self.grammar, node),
        })
    }

    fn open_inner(&mut self, node: &Node, start: usize) -> Option<Open> {
        let grammar = self.grammar;
        match node {
            Node::Literal(chars) => {
                let have = &self.matcher.text[start..];
                if have.len() > chars.len() || !chars.starts_with(have) {
                    return None;
                }
                let rest = &chars[have.len()..];
                Some(Open {
                    rest: rest.iter().collect(),
                    next: rest.first().map_or(Next::default(), |&c| Next::char(c)),
                    done: rest.is_empty(),
                })
            }
            Node::Class(class) => {
                (start + 1 == self.len && class.contains(self.matcher.text[start])).then(|| Open {
                    rest: String::new(),
                    next: Next::default(),
                    done: true,
                })
            }
            Node::Rule(id) => {
                let key = (*id, start);
                if let Some(found) = self.memo.get(&key) {
                    return found.clone();
                }
                if !self.active.insert(key) {
                    return None;
                }
                let open = match grammar.rules.get(*id) {
                    Some(body) => self.open(body, start),
                    None => None,
                };
                self.active.remove(&key);
                self.memo.insert(key, open.clone());
                open
            }
            Node::Seq(items) => {
                let mut found = None;
                let mut starts = vec![start];
                for (i, item) in items.iter().enumerate() {
                    let tail = &items[i + 1..];
                    for &p in &starts {
                        if let Some(open) = self.open(item, p) {
                            if let Some(open) = self.then(open, tail) {
                                found = Open::union(found, open);
                            }
                        }
                    }
                    starts = self.matcher.step(item, &starts);
                    starts.retain(|&p| p < self.len);
                    if starts.is_empty() {
                        break;
                    }
                }
                found
            }
            Node::Alt(alts) => {
                let mut found = None;
                for alt in alts {
                    if let Some(open) = self.open(alt, start) {
                        found = Open::union(found, open);
                    }
                }
                found
            }
            Node::Repeat { item, min, max } => {
                let mut found = None;
                let mut starts = vec![start];
                // Repetitions that consume nothing cannot go on forever.
                let limit = (self.len - start) as u32 + *min + 1;
                let mut count = 0u32;
                while !starts.is_empty() && max.is_none_or(|m| count < m) && count <= limit {
                    // Repetition `count + 1` is the one in progress.
                    let needed = min.saturating_sub(count + 1) as usize;
                    let more = max.is_none_or(|m| count + 1 < m);
                    for &p in &starts {
                        let Some(open) = self.open(item, p) else {
                            continue;
                        };
                        let mut rest = open.rest;
                        if needed > 0 {
                            let one = shortest_text(grammar, item, &self.tables.text, 0)?;
                            rest.push_str(&one.repeat(needed));
                        }
                        let mut next = open.next;
                        if open.done && more {
                            next = next.union(first_of(grammar, item, &self.tables.first));
                        }
                        found = Open::union(
                            found,
                            Open {
                                rest,
                                next,
                                done: open.done && needed == 0,
                            },
                        );
                    }
                    starts = self.matcher.step(item, &starts);
                    starts.retain(|&p| p < self.len);
                    count += 1;
                }
                found
            }
        }
    }

    /// `open` followed by the untouched items `tail`.
    fn then(&self, open: Open, tail: &[Node]) -> Option<Open> {
        if tail.is_empty() {
            return Some(open);
        }
        let grammar = self.grammar;
        let mut rest = open.rest;
        for item in tail {
            rest.push_str(&shortest_text(grammar, item, &self.tables.text, 0)?);
        }
        let mut next = open.next;
        if open.done {
            next = next.union(first_of_seq(grammar, tail, &self.tables.first));
        }
        Some(Open {
            rest,
            next,
            done: open.done && tail.iter().all(|item| nullable(grammar, item)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{grammar, output_grammars};
    use super::*;
    use crate::program::grammar::for_outputs;
    use crate::program::{FieldType, OutputField};
    use crate::random::Rng;

    fn field(name: &str, ty: FieldType) -> OutputField {
        OutputField {
            name: name.into(),
            description: None,
            ty,
            max_chars: None,
        }
    }

    fn contacts() -> Grammar {
        grammar(&for_outputs(&[
            field("name", FieldType::Text),
            field("city", FieldType::Text),
            field("quantity", FieldType::Integer),
        ]))
    }

    #[test]
    fn field_names_and_separators_are_forced() {
        let g = contacts();
        let start = g.continuation("").unwrap();
        assert_eq!(start.forced, "name: ");
        assert_eq!(start.shortest, "name: a\ncity: a\nquantity: 0");
        assert!(!start.complete);
        let inside = g.continuation("name: Jo").unwrap();
        assert_eq!(inside.forced, "");
        assert_eq!(inside.shortest, "\ncity: a\nquantity: 0");
        let line = g.continuation("name: Jo\n").unwrap();
        assert_eq!(line.forced, "city: ");
        assert_eq!(line.shortest, "city: a\nquantity: 0");
        let end = g.continuation("name: Jo\ncity: Oslo\nquantity: 4").unwrap();
        assert!(end.complete && end.can_continue);
        let last = grammar("root ::= \"a: \" (\"x\" | \"y\")")
            .continuation("a: y")
            .unwrap();
        assert!(last.complete && !last.can_continue);
        assert_eq!((end.shortest.as_str(), end.forced.as_str()), ("", ""));
        assert!(g.continuation("name: Jo\nquantity").is_none());
        assert!(g.continuation("nope").is_none());
    }

    #[test]
    fn a_choice_is_forced_once_its_prefix_is_unique() {
        let g = grammar(&for_outputs(&[
            field(
                "label",
                FieldType::Choice {
                    choices: vec!["positive".into(), "negative".into(), "neutral".into()],
                },
            ),
            field("why", FieldType::Text),
        ]));
        assert_eq!(g.continuation("label: ").unwrap().forced, "");
        assert_eq!(g.continuation("label: ne").unwrap().forced, "");
        let neg = g.continuation("label: neg").unwrap();
        assert_eq!(neg.forced, "ative\nwhy: ");
        assert_eq!(neg.shortest, "ative\nwhy: a");
        assert_eq!(
            g.continuation("label: p").unwrap().shortest,
            "ositive\nwhy: a"
        );
    }

    #[test]
    fn counted_repetitions_and_optional_parts() {
        let g = grammar("root ::= \"x\" [0-9]{2,3} \"-\"? \"!\"");
        assert_eq!(g.continuation("x").unwrap().shortest, "00!");
        assert_eq!(g.continuation("x1").unwrap().shortest, "0!");
        let two = g.continuation("x12").unwrap();
        assert_eq!((two.shortest.as_str(), two.forced.as_str()), ("!", ""));
        let three = g.continuation("x123").unwrap();
        assert_eq!(three.shortest, "!");
        assert!(g.continuation("x1234").is_none());
        assert_eq!(g.continuation("x123-").unwrap().forced, "!");
    }

    #[test]
    fn json_values_close_their_brackets() {
        let g = grammar(&for_outputs(&[field("data", FieldType::Json)]));
        let open = g.continuation("data: {\"a\": [1, {\"b\": \"x").unwrap();
        assert_eq!(open.shortest, "\"}]}");
        assert!(g.continuation("data: {\"a\": ]").is_none());
    }

    /// Every prefix of a sample continues to a member, and what is forced is a prefix of the
    /// rest of the sample.
    #[test]
    fn prefixes_of_members_complete_to_members() {
        for text in output_grammars() {
            let g = grammar(&text);
            for seed in 0..6 {
                let member = g.sample(&mut Rng::new(seed));
                assert!(g.matches(&member));
                let chars: Vec<char> = member.chars().collect();
                for cut in 0..=chars.len() {
                    let prefix: String = chars[..cut].iter().collect();
                    let rest: String = chars[cut..].iter().collect();
                    let c = g
                        .continuation(&prefix)
                        .unwrap_or_else(|| panic!("{prefix:?} of {member:?} under {text}"));
                    assert!(
                        g.matches(&format!("{prefix}{}", c.shortest)),
                        "{prefix:?} + {:?} under {text}",
                        c.shortest
                    );
                    assert!(
                        rest.starts_with(&c.forced),
                        "{prefix:?}: forced {:?}, member goes on with {rest:?}",
                        c.forced
                    );
                    assert_eq!(c.complete, g.matches(&prefix), "{prefix:?}");
                    assert!(!c.complete || c.shortest.is_empty());
                }
            }
        }
    }
}

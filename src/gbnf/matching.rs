//! The recognizer behind [`Grammar::matches`]: sets of end positions, memoized per rule and
//! start position, within a budget of work and of nesting.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::{Grammar, Node, MAX_FRAMES};

/// Steps of matching work after which `matches` gives up.
const MATCH_BUDGET: usize = 1_000_000;

/// Whether the whole of `text` is in `grammar`'s language.
pub(super) fn matches(grammar: &Grammar, text: &str) -> bool {
    let mut matcher = Matcher::new(grammar, text.chars().collect());
    let len = matcher.text.len();
    matcher.ends(&Node::Rule(grammar.root), 0).contains(&len)
}

/// Matching over sets of end positions, memoized per rule and start position.
pub(super) struct Matcher<'a> {
    grammar: &'a Grammar,
    pub(super) text: Vec<char>,
    memo: HashMap<(usize, usize), Vec<usize>>,
    /// Rule applications under way; meeting one again at the same position is left recursion.
    active: HashSet<(usize, usize)>,
    frames: usize,
    work: usize,
}

impl<'a> Matcher<'a> {
    pub(super) fn new(grammar: &'a Grammar, text: Vec<char>) -> Self {
        Matcher {
            grammar,
            text,
            memo: HashMap::new(),
            active: HashSet::new(),
            frames: 0,
            work: 0,
        }
    }

    /// Whether the work budget is spent (answers after that are incomplete).
    pub(super) fn spent(&self) -> bool {
        self.work > MATCH_BUDGET
    }

    /// The sorted positions where `node` can end when it starts at `start`.
    pub(super) fn ends(&mut self, node: &Node, start: usize) -> Vec<usize> {
        self.work += 1;
        if self.work > MATCH_BUDGET || self.frames >= MAX_FRAMES {
            return Vec::new();
        }
        self.frames += 1;
        let ends = self.ends_inner(node, start);
        self.frames -= 1;
        ends
    }

    fn ends_inner(&mut self, node: &Node, start: usize) -> Vec<usize> {
        let grammar = self.grammar;
        match node {
            Node::Literal(chars) => {
                let end = start + chars.len();
                if self.text.get(start..end) == Some(chars.as_slice()) {
                    vec![end]
                } else {
                    Vec::new()
                }
            }
            Node::Class(class) => match self.text.get(start) {
                Some(&c) if class.contains(c) => vec![start + 1],
                _ => Vec::new(),
            },
            Node::Rule(id) => {
                let key = (*id, start);
                if let Some(found) = self.memo.get(&key) {
                    return found.clone();
                }
                if !self.active.insert(key) {
                    return Vec::new();
                }
                let ends = match grammar.rules.get(*id) {
                    Some(body) => self.ends(body, start),
                    None => Vec::new(),
                };
                self.active.remove(&key);
                self.memo.insert(key, ends.clone());
                ends
            }
            Node::Seq(items) => {
                let mut positions = vec![start];
                for item in items {
                    if positions.is_empty() {
                        break;
                    }
                    positions = self.step(item, &positions);
                }
                positions
            }
            Node::Alt(alts) => {
                let mut all = BTreeSet::new();
                for alt in alts {
                    all.extend(self.ends(alt, start));
                }
                all.into_iter().collect()
            }
            Node::Repeat { item, min, max } => {
                let mut current = vec![start];
                for _ in 0..*min {
                    current = self.step(item, &current);
                    if current.is_empty() {
                        return current;
                    }
                }
                // A position reached again after more repetitions leads nowhere new.
                let mut seen: BTreeSet<usize> = current.iter().copied().collect();
                let mut frontier = current;
                let mut count = *min;
                while !frontier.is_empty() && max.is_none_or(|max| count < max) {
                    frontier = self.step(item, &frontier);
                    frontier.retain(|&p| seen.insert(p));
                    count += 1;
                }
                seen.into_iter().collect()
            }
        }
    }

    pub(super) fn step(&mut self, node: &Node, from: &[usize]) -> Vec<usize> {
        self.work += from.len();
        let mut next = BTreeSet::new();
        for &position in from {
            next.extend(self.ends(node, position));
        }
        next.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::grammar;
    use crate::program::grammar::for_outputs;
    use crate::program::{FieldType, OutputField};

    fn check(text: &str, input: &str, expected: bool) {
        assert_eq!(
            grammar(text).matches(input),
            expected,
            "{input:?} under {text}"
        );
    }

    #[test]
    fn literals_classes_groups_and_repetitions() {
        check(r#"root ::= "a" [b-d]{2,3} "\n""#, "abd\n", true);
        check(r#"root ::= "a" [b-d]{2,3} "\n""#, "ab\n", false);
        check(r#"root ::= "a" [b-d]{2,3} "\n""#, "abcdb\n", false);
        check(r#"root ::= [^"\\] [\]\-]"#, "x]", true);
        check(r#"root ::= [^"\\] [\]\-]"#, "\\-", false);
        check(r#"root ::= [^\x00-\x1f"] "\u00e9""#, "a\u{e9}", true);
        check(r#"root ::= [^\x00-\x1f"] "\u00e9""#, "\u{1}\u{e9}", false);
        check(r#"root ::= ("ab" | "a") "b""#, "ab", true);
        check(r#"root ::= ("ab" | "a") "b""#, "abb", true);
        let continued = "root ::= \"a\"\n    | \"b\"  # a comment\n    \"c\"\n";
        check(continued, "bc", true);
        check(continued, "b", false);
        let counted = "root ::= x{3} x{1,}  x?\nx ::= \"x\"";
        check(counted, "xxxxx", true);
        check(counted, "xxx", false);
    }

    #[test]
    fn json_nests() {
        let g = grammar(&for_outputs(&[OutputField {
            name: "data".into(),
            description: None,
            ty: FieldType::Json,
            max_chars: None,
        }]));
        assert!(g.matches(r#"data: {"a": [1, "x\n", {"b": null}], "c": -2.5e3}"#));
        assert!(!g.matches(r#"data: {"a": }"#));
        assert!(!g.matches("data: {\"a\": 1}\n"));
        let deep = format!("data: {}1{}", "{\"a\": ".repeat(3), "}".repeat(3));
        assert!(g.matches(&deep));
        // Past the nesting cap text is refused, not a stack overflow.
        let deeper = format!("data: {}1{}", "{\"a\": ".repeat(5000), "}".repeat(5000));
        assert!(!g.matches(&deeper));
    }
}

//! The parser: GBNF text to rules, with the error messages a grammar that does not parse gets.
//!
//! Once the rules are read it fills in the table of each rule's shortest derivation (worked out
//! in the parent module) and rejects a grammar whose `root` can never finish.

use std::collections::HashMap;

use super::{shortest_table, Class, Grammar, GrammarError, Node};

/// Groups nested deeper than this are rejected when parsing.
const MAX_NESTING: usize = 64;
/// The largest count a `{m,n}` repetition may name.
const MAX_REPEAT: u32 = 1000;

/// Parses GBNF text into a [`Grammar`] whose `root` rule can finish.
pub(super) fn grammar(text: &str) -> Result<Grammar, GrammarError> {
    let mut parser = Parser {
        chars: text.chars().collect(),
        pos: 0,
        ids: HashMap::new(),
        slots: Vec::new(),
    };
    parser.rules()?;
    let root = parser.ids.get("root").copied();
    let mut rules = Vec::with_capacity(parser.slots.len());
    for slot in parser.slots {
        match slot.body {
            Some(body) => rules.push(body),
            None => {
                return Err(GrammarError(format!(
                    "grammar line {}: the rule `{}` is used but never defined",
                    slot.line, slot.name
                )))
            }
        }
    }
    let root = root.ok_or_else(|| {
        GrammarError("the grammar has no `root` rule, where matching starts".to_string())
    })?;
    let shortest = shortest_table(&rules);
    if shortest.get(root).copied().flatten().is_none() {
        return Err(GrammarError(
            "the grammar matches no text: every way through `root` needs a rule that never \
             finishes or an empty character class"
                .to_string(),
        ));
    }
    Ok(Grammar {
        rules,
        shortest,
        root,
        prefix_tables: std::sync::OnceLock::new(),
    })
}
struct Slot {
    name: String,
    body: Option<Node>,
    /// Where the rule is defined, or else first used.
    line: usize,
}

/// A recursive-descent parser over the grammar's characters.
struct Parser {
    chars: Vec<char>,
    pos: usize,
    ids: HashMap<String, usize>,
    slots: Vec<Slot>,
}

impl Parser {
    fn rules(&mut self) -> Result<(), GrammarError> {
        loop {
            self.skip_space();
            let start = self.pos;
            if self.peek().is_none() {
                return Ok(());
            }
            if !self.at_rule_start() {
                return Err(self.error(start, "expected a rule, `name ::= …`"));
            }
            let name = self.name();
            self.skip_blanks();
            self.pos += "::=".len();
            let body = self.alternatives(0)?;
            if let Some(c) = self.peek().filter(|_| !self.at_rule_start()) {
                let message = format!("unexpected `{c}` in the rule `{name}`");
                return Err(self.error(self.pos, message));
            }
            let id = self.intern(&name, start);
            let line = self.line_at(start);
            if self.slots.get(id).is_none_or(|slot| slot.body.is_some()) {
                return Err(self.error(start, format!("the rule `{name}` is defined twice")));
            }
            if let Some(slot) = self.slots.get_mut(id) {
                slot.body = Some(body);
                slot.line = line;
            }
        }
    }

    fn alternatives(&mut self, depth: usize) -> Result<Node, GrammarError> {
        let mut alts = vec![self.sequence(depth)?];
        while self.eat('|') {
            alts.push(self.sequence(depth)?);
        }
        Ok(collapse(alts, Node::Alt))
    }

    /// Items up to `|`, `)`, the next rule's `name ::=` or the end; leaves `pos` on that.
    fn sequence(&mut self, depth: usize) -> Result<Node, GrammarError> {
        let mut items = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                None | Some('|' | ')') => break,
                Some(_) if self.at_rule_start() => break,
                Some(_) => items.push(self.item(depth)?),
            }
        }
        Ok(collapse(items, Node::Seq))
    }

    /// A primary with at most one postfix operator.
    fn item(&mut self, depth: usize) -> Result<Node, GrammarError> {
        let item = self.primary(depth)?;
        self.skip_blanks();
        let (min, max) = if self.eat('?') {
            (0, Some(1))
        } else if self.eat('*') {
            (0, None)
        } else if self.eat('+') {
            (1, None)
        } else if self.peek() == Some('{') {
            self.braces()?
        } else {
            return Ok(item);
        };
        Ok(Node::Repeat {
            item: Box::new(item),
            min,
            max,
        })
    }

    fn primary(&mut self, depth: usize) -> Result<Node, GrammarError> {
        let start = self.pos;
        if self.eat('"') {
            let mut text = Vec::new();
            while !self.eat('"') {
                text.push(self.char_in(start, "string literal")?);
            }
            Ok(Node::Literal(text))
        } else if self.eat('[') {
            let negated = self.eat('^');
            let mut ranges = Vec::new();
            while !self.eat(']') {
                let lo = self.char_in(start, "character class")?;
                let ranged = self.peek() == Some('-')
                    && !matches!(self.chars.get(self.pos + 1), None | Some(']'));
                let hi = if ranged {
                    self.pos += 1;
                    self.char_in(start, "character class")?
                } else {
                    lo
                };
                if hi < lo {
                    let message = format!("the class range {lo:?}-{hi:?} runs backwards");
                    return Err(self.error(start, message));
                }
                ranges.push((lo, hi));
            }
            Ok(Node::Class(Class { negated, ranges }))
        } else if self.eat('.') {
            Ok(Node::Class(Class {
                negated: true,
                ranges: Vec::new(),
            }))
        } else if self.eat('(') {
            if depth >= MAX_NESTING {
                let message = format!("groups are nested more than {MAX_NESTING} deep");
                return Err(self.error(start, message));
            }
            let inner = self.alternatives(depth + 1)?;
            if !self.eat(')') {
                return Err(self.error(start, "this `(` is never closed"));
            }
            Ok(inner)
        } else {
            let name = self.name();
            if name.is_empty() {
                let found = self
                    .peek()
                    .map_or("the end".to_string(), |c| format!("`{c}`"));
                return Err(self.error(start, format!("unexpected {found}")));
            }
            Ok(Node::Rule(self.intern(&name, start)))
        }
    }

    /// One character of a literal or class, unescaped; the literal or class began at `start`.
    fn char_in(&mut self, start: usize, inside: &str) -> Result<char, GrammarError> {
        let Some(c) = self.peek().filter(|&c| c != '\n') else {
            return Err(self.error(start, format!("unterminated {inside}")));
        };
        self.pos += 1;
        if c != '\\' {
            return Ok(c);
        }
        let Some(escaped) = self.peek().filter(|&c| c != '\n') else {
            return Err(self.error(start, format!("unterminated {inside}")));
        };
        self.pos += 1;
        let digits = match escaped {
            'n' => return Ok('\n'),
            'r' => return Ok('\r'),
            't' => return Ok('\t'),
            'x' => 2,
            'u' => 4,
            'U' => 8,
            other => return Ok(other),
        };
        let mut code: u32 = 0;
        for _ in 0..digits {
            let Some(digit) = self.peek().and_then(|c| c.to_digit(16)) else {
                let message = format!("`\\{escaped}` needs {digits} hex digits");
                return Err(self.error(start, message));
            };
            code = code * 16 + digit;
            self.pos += 1;
        }
        char::from_u32(code)
            .ok_or_else(|| self.error(start, format!("U+{code:X} is not a character")))
    }

    /// `{m}`, `{m,}` or `{m,n}`, with `pos` on the `{`.
    fn braces(&mut self) -> Result<(u32, Option<u32>), GrammarError> {
        let start = self.pos;
        self.pos += 1;
        let min = self.count();
        let max = if self.eat(',') { self.count() } else { min };
        let (true, Some(min)) = (self.eat('}'), min) else {
            return Err(self.error(start, "a repetition must be written {m}, {m,} or {m,n}"));
        };
        if let Some(max) = max.filter(|&max| max < min) {
            let message = format!("a repetition's maximum {max} is below its minimum {min}");
            return Err(self.error(start, message));
        }
        if max.unwrap_or(min) > MAX_REPEAT {
            let message = format!("a repetition count is above {MAX_REPEAT}");
            return Err(self.error(start, message));
        }
        Ok((min, max))
    }

    /// Digits between blanks, if there are any.
    fn count(&mut self) -> Option<u32> {
        self.skip_blanks();
        let mut value = None;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            value = Some(value.unwrap_or(0u32).saturating_mul(10).saturating_add(d));
            self.pos += 1;
        }
        self.skip_blanks();
        value
    }

    fn intern(&mut self, name: &str, pos: usize) -> usize {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let line = self.line_at(pos);
        self.slots.push(Slot {
            name: name.to_string(),
            body: None,
            line,
        });
        self.ids.insert(name.to_string(), self.slots.len() - 1);
        self.slots.len() - 1
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek().filter(|&c| is_name_char(c)) {
            name.push(c);
            self.pos += 1;
        }
        name
    }

    /// Whether `pos` starts `name ::=`, which ends the rule before it.
    fn at_rule_start(&self) -> bool {
        let mut i = self.pos;
        while self.chars.get(i).is_some_and(|&c| is_name_char(c)) {
            i += 1;
        }
        let named = i > self.pos;
        while matches!(self.chars.get(i), Some(' ' | '\t')) {
            i += 1;
        }
        named && self.chars.get(i..i + 3) == Some(&[':', ':', '='][..])
    }

    fn eat(&mut self, c: char) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.pos += 1;
        }
        found
    }

    /// Skips whitespace, line breaks included, and comments.
    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c == '#' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.pos += 1;
                }
            } else if c.is_whitespace() {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn line_at(&self, pos: usize) -> usize {
        1 + self.chars.iter().take(pos).filter(|&&c| c == '\n').count()
    }

    fn error(&self, pos: usize, message: impl std::fmt::Display) -> GrammarError {
        GrammarError(format!("grammar line {}: {message}", self.line_at(pos)))
    }
}

/// The only node of a one-element list, or `wrap` of the list.
fn collapse(mut nodes: Vec<Node>, wrap: fn(Vec<Node>) -> Node) -> Node {
    match nodes.len() {
        1 => nodes.pop().unwrap_or_else(|| wrap(Vec::new())),
        _ => wrap(nodes),
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

#[cfg(test)]
mod tests {
    use super::super::tests::error;

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let cases = [
            (
                "root ::= \"a\"\nother ::= missing\n",
                "line 2: the rule `missing` is used",
            ),
            ("root ::= \"abc\n", "line 1: unterminated string literal"),
            (
                "root ::= \"a\"\nx ::= [a-z\n",
                "line 2: unterminated character class",
            ),
            ("start ::= \"a\"", "no `root` rule"),
            (
                "root ::= (\"a\"\n| \"b\"\n",
                "line 1: this `(` is never closed",
            ),
            (
                "root ::= \"a\"\nroot ::= \"b\"",
                "line 2: the rule `root` is defined twice",
            ),
            ("root ::= [z-a]", "runs backwards"),
            ("root ::= \"a\"{3,1}", "below its minimum"),
            ("root ::= \"a\"{x}", "{m}, {m,} or {m,n}"),
            ("root ::= \"a\"{5000}", "above 1000"),
            ("root ::= \"a\" root", "matches no text"),
            ("root ::= \"a\" )", "unexpected `)`"),
            ("root = \"a\"", "expected a rule"),
            ("root ::= \"\\x4\"", "needs 2 hex digits"),
            ("root ::= \"\\uD800\"", "U+D800 is not a character"),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(message.contains(expected), "{text:?}: {message}");
        }
    }
}

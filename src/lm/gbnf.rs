//! A small interpreter for GBNF, the grammar language llama.cpp constrains decoding with.
//!
//! It exists so that the fake model ([`super::FakeLm`]) can obey a request's grammar without
//! llama.cpp: [`Grammar::matches`] checks a reply, [`Grammar::sample`] makes one up. It covers
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

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::random::Rng;

/// Groups nested deeper than this are rejected when parsing.
const MAX_NESTING: usize = 64;
/// The largest count a `{m,n}` repetition may name.
const MAX_REPEAT: u32 = 1000;
/// Nodes in progress at once while matching or sampling; past it a branch is abandoned, long
/// before the thread's stack runs out.
const MAX_FRAMES: usize = 256;
/// Steps of matching work after which `matches` gives up.
const MATCH_BUDGET: usize = 1_000_000;
/// Nodes sampled after which sampling only takes the shortest way out.
const SAMPLE_SOFT_BUDGET: usize = 5_000;
/// Nodes sampled after which sampling stops.
const SAMPLE_HARD_BUDGET: usize = 200_000;
/// Bytes of sample output after which sampling stops.
const MAX_SAMPLE_BYTES: usize = 1 << 20;
/// Rule depth past which sampling takes the alternative and the count that end soonest.
const SAMPLE_DEPTH: usize = 8;
/// The characters a sample draws from, most readable first; the first tier that has a
/// character in the class wins.
const PREFERRED: [&str; 2] = [
    "abcdefghijklmnopqrstuvwxyz0123456789",
    " ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:;!?-+'\"/\\()[]{}<>=_*&%$#@^~`|",
];

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
        })
    }

    /// Whether the whole of `text` is in the language.
    ///
    /// Work is bounded: text nested more than a few dozen levels deep, or a grammar so
    /// ambiguous that it needs more than a million steps, is answered `false`. Left-recursive
    /// rules (which llama.cpp rejects) match only through their other alternatives.
    pub fn matches(&self, text: &str) -> bool {
        let text: Vec<char> = text.chars().collect();
        let len = text.len();
        let mut matcher = Matcher {
            grammar: self,
            text,
            memo: HashMap::new(),
            active: HashSet::new(),
            frames: 0,
            work: 0,
        };
        matcher.ends(&Node::Rule(self.root), 0).contains(&len)
    }

    /// A random member of the language, the same for the same generator state.
    ///
    /// Samples are short and readable: `*` repeats 0 to 2 times, `+` 1 to 3, `{m,}` m to m+2,
    /// `{m,n}` m to min(n, m+3); classes give lowercase letters and digits where they can,
    /// then capitals, space and punctuation; alternatives are equally likely. Past a rule
    /// depth of 8 every choice takes the shortest way out. A grammar whose shortest members
    /// are enormous gets a sample cut short, which then does not match.
    pub fn sample(&self, rng: &mut Rng) -> String {
        let mut sampler = Sampler {
            grammar: self,
            rng,
            out: String::new(),
            depth: 0,
            frames: 0,
            work: 0,
        };
        sampler.emit(&Node::Rule(self.root));
        sampler.out
    }

    fn shortest_of(&self, node: &Node) -> Option<Shortest> {
        shortest(node, &self.shortest)
    }
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

fn below(rng: &mut Rng, n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (rng.next_u64() % n as u64) as usize
    }
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

/// Matching over sets of end positions, memoized per rule and start position.
struct Matcher<'a> {
    grammar: &'a Grammar,
    text: Vec<char>,
    memo: HashMap<(usize, usize), Vec<usize>>,
    /// Rule applications under way; meeting one again at the same position is left recursion.
    active: HashSet<(usize, usize)>,
    frames: usize,
    work: usize,
}

impl Matcher<'_> {
    /// The sorted positions where `node` can end when it starts at `start`.
    fn ends(&mut self, node: &Node, start: usize) -> Vec<usize> {
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

    fn step(&mut self, node: &Node, from: &[usize]) -> Vec<usize> {
        self.work += from.len();
        let mut next = BTreeSet::new();
        for &position in from {
            next.extend(self.ends(node, position));
        }
        next.into_iter().collect()
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::grammar::for_outputs;
    use crate::program::{FieldType, OutputField};

    fn grammar(text: &str) -> Grammar {
        Grammar::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn check(text: &str, input: &str, expected: bool) {
        assert_eq!(
            grammar(text).matches(input),
            expected,
            "{input:?} under {text}"
        );
    }

    fn error(text: &str) -> String {
        match Grammar::parse(text) {
            Ok(_) => panic!("{text:?} parsed"),
            Err(e) => e.to_string(),
        }
    }

    fn output_grammars() -> Vec<String> {
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
        };
        kinds
            .into_iter()
            .map(|ty| for_outputs(&[field("reasoning", FieldType::Text), field("answer", ty)]))
            .collect()
    }

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

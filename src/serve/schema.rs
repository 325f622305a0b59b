//! OpenAI's `response_format` as a llama.cpp GBNF grammar (root rule `root`), so that every
//! reply is JSON: any object for `json_object`, a value valid under the schema for
//! `json_schema` (callers pass the inner `schema`, not OpenAI's `{name, schema, strict}`).
//!
//! The grammar may be stricter than the schema, never looser. Properties come in the order
//! serde_json keeps them (sorted by name: this crate has no `preserve_order`);
//! `additionalProperties` absent or `true` is taken as `false`; whitespace between tokens is
//! at most two characters, and numbers have at most 16 integer digits, 15 decimals and a
//! two-digit exponent, so that a small model cannot pad forever and every number fits a double;
//! `\u` escapes never name a lone surrogate. `oneOf` is read as `anyOf` (exclusivity is not
//! enforced); `format`, `title`, `description`, `default`, `examples`, `$schema`, `$id` and
//! `$comment` are ignored. Any other keyword that would change which values are valid (and any
//! keyword of a type without `type`) is a [`SchemaError`] naming its path. Each `$ref` target
//! becomes one rule, so recursive schemas work; definitions with no finite value and
//! references that loop without consuming text (left recursion) are refused.
//!
//! Only constructs that llama.cpp and our interpreter ([`crate::gbnf`]) both accept are
//! written: names of `[a-zA-Z0-9-]`, literals, classes with `\xHH`, `\t`, `\n` escapes, groups,
//! `| ? * +` and `{m}`, `{m,}`, `{m,n}` up to 1000. The same schema always gives the same text:
//! grammars are part of cache keys.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::{Display, Write as _};

use serde_json::{Map, Value};

use crate::gbnf::Grammar;
use crate::program::grammar::literal;

/// Why a schema cannot be turned into a grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchemaError(pub String);

type Fields = Map<String, Value>;
/// A schema's grammar expression: a name, a literal or a group, so that it can stand anywhere.
type Built = Result<String, SchemaError>;

/// The largest length or item count a schema may name: llama.cpp expands `{m,n}` into a rule
/// per count, and our interpreter refuses larger counts.
const MAX_COUNT: u64 = 1000;
/// Keywords that change nothing about which values are valid.
const ANNOTATIONS: &str = "$comment $defs $id $schema default definitions deprecated \
                           description examples format readOnly title writeOnly";
/// Keywords that make up the whole schema: only annotations (and `type`, which filters the
/// values of `enum` and `const`) may stand beside them.
const COMBINATORS: &str = "$ref anyOf oneOf allOf enum const";
const TYPES: &str = "object array string number integer boolean null";
/// The keywords of each type, irrelevant (so ignored) for values of other types.
const TYPE_KEYWORDS: [(&str, &str); 4] = [
    ("object", "properties required additionalProperties"),
    ("array", "items minItems maxItems"),
    ("string", "minLength maxLength"),
    (
        "number",
        "minimum exclusiveMinimum maximum exclusiveMaximum multipleOf",
    ),
];
const SUPPORTED: &str = "type, properties, required, additionalProperties (false), items, \
    minItems, maxItems, minLength, maxLength, minimum (0), enum, const, anyOf, oneOf, \
    allOf (one schema), $ref (#/$defs/NAME) and annotations such as title or format";
/// Shared rules, written after the schema's own when used (with the shared rules they use).
const SHARED: &str = r#"value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ws ( string ws ":" ws value ( ws "," ws string ws ":" ws value )* ws )? "}"
array ::= "[" ws ( value ( ws "," ws value )* ws )? "]"
string ::= "\"" char* "\""
char ::= [^"\\\x7F\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" unicode )
unicode ::= [0-9a-cA-C] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2} | [eEfF] [0-9a-fA-F]{3}
number ::= "-"? number-nonneg
number-nonneg ::= integer-nonneg ( "." [0-9]{1,15} )? ( [eE] [-+]? [0-9]{1,2} )?
integer ::= "0" | "-"? integer-pos
integer-nonneg ::= "0" | integer-pos
integer-pos ::= [1-9] [0-9]{0,15}
ws ::= [ \t\n]{0,2}
"#;

/// A grammar for any JSON object (OpenAI's `json_object` mode).
pub fn json_object_grammar() -> String {
    let mut builder = Builder::default();
    let root = builder.shared("object");
    builder.finish(&root)
}

/// A grammar for JSON values valid under `schema` (OpenAI's `json_schema` mode).
pub fn grammar_for_schema(schema: &Value) -> Result<String, SchemaError> {
    let mut builder = Builder {
        document: Some(schema),
        ..Builder::default()
    };
    let root = builder.visit(schema, "$", "root")?;
    let text = builder.finish(&root);
    // llama.cpp takes a rule that can never finish and lets the model run to max_tokens; our
    // parser refuses a `root` that cannot finish, so each definition is tried as the root.
    let rules = text.split_once('\n').map_or("", |(_, rest)| rest);
    for (rule, path) in &builder.defs {
        if Grammar::parse(&format!("root ::= {rule}\n{rules}")).is_err() {
            return Err(error(path, "no value is finite: each contains another one"));
        }
    }
    Grammar::parse(&text).map_err(|e| error("$", format!("no grammar: {e}")))?;
    Ok(text)
}

#[derive(Default)]
struct Builder<'a> {
    /// The whole schema, where `$ref`s are looked up.
    document: Option<&'a Value>,
    /// Rules in the order they were named; `None` for a name reserved but not needed.
    rules: Vec<(String, Option<String>)>,
    taken: HashSet<String>,
    /// The rule of each `$ref` target met so far.
    refs: HashMap<String, String>,
    /// The `$ref`s entered since the last `{` or `[`: meeting one again is left recursion.
    bare: Vec<String>,
    /// Each definition's rule and path, for the check that it can finish.
    defs: Vec<(String, String)>,
    needs: BTreeSet<&'static str>,
}

impl Builder<'_> {
    fn shared(&mut self, name: &'static str) -> String {
        self.needs.insert(name);
        name.to_string()
    }

    /// A fresh rule name made from `hint`; its body comes later through [`Self::define`].
    fn reserve(&mut self, hint: &str) -> (usize, String) {
        let clean = |c: char| if c.is_ascii_alphanumeric() { c } else { '-' };
        let base: String = hint.chars().map(clean).take(48).collect();
        let (mut name, mut n) = (base.clone(), 2);
        while name == "root"
            || shared_rules().any(|(shared, _)| shared == name)
            || !self.taken.insert(name.clone())
        {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.rules.push((name.clone(), None));
        (self.rules.len() - 1, name)
    }

    fn define(&mut self, index: usize, body: String) {
        if let Some(rule) = self.rules.get_mut(index) {
            rule.1 = Some(body);
        }
    }

    fn finish(&mut self, root: &str) -> String {
        // A shared rule needs the shared rules its body names, until nothing more is needed.
        loop {
            let before = self.needs.len();
            let used: Vec<&'static str> = shared_rules()
                .filter(|(name, _)| self.needs.contains(name))
                .flat_map(|(_, body)| body.split(|c: char| c == ' ' || "()*?+".contains(c)))
                .filter(|word| shared_rules().any(|(name, _)| name == *word))
                .collect();
            self.needs.extend(used);
            if self.needs.len() == before {
                break;
            }
        }
        let mut out = format!("root ::= {root}\n");
        for (name, body) in &self.rules {
            if let Some(body) = body {
                let _ = writeln!(out, "{name} ::= {body}");
            }
        }
        for (name, body) in shared_rules().filter(|(name, _)| self.needs.contains(name)) {
            let _ = writeln!(out, "{name} ::= {body}");
        }
        out
    }

    /// The expression for `schema`, found at `path`; rules it makes are named after `hint`.
    fn visit(&mut self, schema: &Value, path: &str, hint: &str) -> Built {
        let map = match schema {
            Value::Bool(true) => return Ok(self.shared("value")),
            Value::Object(map) => map,
            _ => {
                return Err(error(
                    path,
                    "must be an object or `true` (`false` admits nothing)",
                ))
            }
        };
        if let Some(key) = map.keys().find(|k| !known(k)) {
            let message = format!("`{key}` is not supported; supported are {SUPPORTED}");
            return Err(keyword_error(path, key, message));
        }
        let mut combinators = COMBINATORS.split(' ').filter(|c| map.contains_key(*c));
        let one = match (combinators.next(), combinators.next()) {
            (None, _) => return self.typed(map, path, hint),
            (Some(one), None) => one,
            (Some(a), Some(b)) => {
                return Err(error(path, format!("`{a}` beside `{b}` is not supported")))
            }
        };
        let filtered = matches!(one, "enum" | "const");
        let beside =
            |k: &&String| !has_word(ANNOTATIONS, k) && *k != one && !(filtered && *k == "type");
        if let Some(key) = map.keys().find(beside) {
            let message = format!("`{key}` beside `{one}` is not supported");
            return Err(keyword_error(path, key, message));
        }
        let at = format!("{path}.{one}");
        match (one, map.get(one).unwrap_or(&Value::Null)) {
            ("$ref", target) => self.reference(target, &at),
            ("allOf", Value::Array(list)) if list.len() == 1 => {
                self.visit(&list[0], &format!("{at}[0]"), hint)
            }
            ("allOf", _) => Err(error(&at, "must be a list of exactly one schema")),
            ("anyOf" | "oneOf", Value::Array(list)) if !list.is_empty() => {
                let mut alternatives = Vec::new();
                for (i, branch) in list.iter().enumerate() {
                    alternatives.push(self.visit(branch, &format!("{at}[{i}]"), hint)?);
                }
                Ok(any_of(alternatives))
            }
            ("anyOf" | "oneOf", _) => Err(error(&at, "must be a non-empty list of schemas")),
            ("const", value) => constants(std::slice::from_ref(value), map, path, &at),
            (_, Value::Array(values)) => constants(values, map, path, &at),
            _ => Err(error(&at, "must be a list of values")),
        }
    }

    /// A `$ref` to `#/$defs/NAME` or `#/definitions/NAME`: one rule per definition, so that
    /// recursive schemas become recursive rules.
    fn reference(&mut self, target: &Value, at: &str) -> Built {
        let unsupported = || {
            let only = "only references to `#/$defs/NAME` or `#/definitions/NAME` are supported";
            error(at, format!("{only}, not {target}"))
        };
        let target = target.as_str().ok_or_else(unsupported)?;
        let (table, name) = [("$defs", "#/$defs/"), ("definitions", "#/definitions/")]
            .into_iter()
            .find_map(|(table, prefix)| Some((table, target.strip_prefix(prefix)?)))
            .filter(|(_, name)| !name.is_empty() && !name.contains('/'))
            .ok_or_else(unsupported)?;
        if let Some(rule) = self.refs.get(target) {
            if self.bare.iter().any(|r| r == target) {
                let message = "refers back to itself before any JSON is written (left \
                               recursion), which a grammar cannot express";
                return Err(error(at, message));
            }
            return Ok(rule.clone());
        }
        let name = name.replace("~1", "/").replace("~0", "~");
        let definition = self.document.and_then(|d| d.get(table)?.get(&name));
        let definition =
            definition.ok_or_else(|| error(at, format!("`{target}` is not defined")))?;
        let path = format!("$.{table}.{name}");
        let (index, rule) = self.reserve(&name);
        self.refs.insert(target.to_string(), rule.clone());
        self.bare.push(target.to_string());
        let body = self.visit(definition, &path, &rule)?;
        self.bare.pop();
        self.define(index, body);
        self.defs.push((rule.clone(), path));
        Ok(rule)
    }

    fn typed(&mut self, map: &Fields, path: &str, hint: &str) -> Built {
        let Some(mut types) = type_list(map, path)? else {
            // Without `type` such keywords constrain only values of their type; a grammar for
            // "anything, but objects with these properties" is rarely what was meant.
            let keyword = |k: &&String| TYPE_KEYWORDS.iter().any(|(_, keys)| has_word(keys, k));
            if let Some(key) = map.keys().find(keyword) {
                return Err(keyword_error(path, key, "needs a `type` beside it"));
            }
            return Ok(self.shared("value"));
        };
        // Every integer is a number: both would only make the grammar ambiguous.
        if types.contains(&"number") {
            types.retain(|t| *t != "integer");
        }
        let mut alternatives = Vec::new();
        for ty in types {
            alternatives.push(match ty {
                "null" => r#""null""#.to_string(),
                "boolean" => r#"("true" | "false")"#.to_string(),
                "integer" | "number" => self.numeric(ty == "integer", map, path)?,
                "string" => self.string(map, path)?,
                "array" => self.array(map, path, hint)?,
                _ => self.object(map, path, hint)?,
            });
        }
        Ok(any_of(alternatives))
    }

    fn numeric(&mut self, integer: bool, map: &Fields, path: &str) -> Built {
        let unsupported = |key: &str| {
            let message = "only `minimum: 0` (and, for integers, `minimum: 1` or \
                           `exclusiveMinimum: 0`) can be enforced by a grammar";
            keyword_error(path, key, message)
        };
        let bound = |key: &str| map.get(key).map(|v| v.as_f64().unwrap_or(f64::NAN));
        let rule = match (bound("minimum"), bound("exclusiveMinimum"), integer) {
            (None, None, true) => "integer",
            (None, None, false) => "number",
            (Some(0.0), None, true) => "integer-nonneg",
            (Some(0.0), None, false) => "number-nonneg",
            (Some(1.0), None, true) | (None, Some(0.0), true) => "integer-pos",
            (Some(_), ..) => return Err(unsupported("minimum")),
            (None, ..) => return Err(unsupported("exclusiveMinimum")),
        };
        let upper = ["maximum", "exclusiveMaximum", "multipleOf"];
        match upper.into_iter().find(|k| map.contains_key(*k)) {
            Some(key) => Err(unsupported(key)),
            None => Ok(self.shared(rule)),
        }
    }

    fn string(&mut self, map: &Fields, path: &str) -> Built {
        Ok(match counts(map, path, "minLength", "maxLength")? {
            (0, None) => self.shared("string"),
            (_, Some(0)) => r#""\"\"""#.to_string(),
            (min, max) => {
                let chars = repeat(&self.shared("char"), min, max);
                format!(r#"( "\""{chars} "\"" )"#)
            }
        })
    }

    fn array(&mut self, map: &Fields, path: &str, hint: &str) -> Built {
        let (min, max) = counts(map, path, "minItems", "maxItems")?;
        self.needs.insert("ws");
        let outer = std::mem::take(&mut self.bare);
        let item = match map.get("items") {
            None => self.shared("value"),
            Some(items) => {
                // A rule of its own, so that nested arrays do not double the text per level.
                let (index, rule) = self.reserve(&format!("{hint}-item"));
                let item = self.visit(items, &format!("{path}.items"), &rule)?;
                if item.contains(' ') {
                    self.define(index, item);
                    rule
                } else {
                    item
                }
            }
        };
        self.bare = outer;
        let more = format!(r#"( ws "," ws {item} )"#);
        let rest = |min| repeat(&more, min, max.map(|max: u64| max.saturating_sub(1)));
        Ok(match (min, max) {
            (_, Some(0)) => r#"( "[" ws "]" )"#.to_string(),
            (0, _) => format!(r#"( "[" ws ( {item}{} ws )? "]" )"#, rest(0)),
            _ => format!(r#"( "[" ws {item}{} ws "]" )"#, rest(min - 1)),
        })
    }

    fn object(&mut self, map: &Fields, path: &str, hint: &str) -> Built {
        let others = match map.get("additionalProperties") {
            None | Some(Value::Bool(true)) => true,
            Some(Value::Bool(false)) => false,
            Some(_) => {
                let message = "only `false` is supported, not a schema for other properties";
                return Err(keyword_error(path, "additionalProperties", message));
            }
        };
        let required: Vec<&str> = match map.get("required").map(Value::as_array) {
            None => Vec::new(),
            Some(names) => names
                .and_then(|names| names.iter().map(Value::as_str).collect())
                .ok_or_else(|| keyword_error(path, "required", "must be a list of names"))?,
        };
        self.needs.insert("ws");
        let empty = Map::new();
        let properties = match map.get("properties") {
            Some(Value::Object(properties)) => properties,
            Some(_) => return Err(keyword_error(path, "properties", "must be an object")),
            None if others && required.is_empty() => return Ok(self.shared("object")),
            None => &empty,
        };
        if let Some(name) = required.iter().find(|r| !properties.contains_key(**r)) {
            let message = format!("`{name}` is not among the `properties`");
            return Err(keyword_error(path, "required", message));
        }
        let outer = std::mem::take(&mut self.bare);
        let mut members = Vec::new();
        for (key, schema) in properties {
            let (index, rule) = self.reserve(&format!("{hint}-{key}"));
            let value = self.visit(schema, &format!("{path}.properties.{key}"), &rule)?;
            let name = literal(&Value::String(key.clone()).to_string());
            self.define(index, format!(r#"{name} ws ":" ws {value}"#));
            members.push((rule, required.contains(&key.as_str())));
        }
        self.bare = outer;
        Ok(object_body(&members))
    }
}

/// An object with `members` (rule, required?) in order: one alternative per member that can
/// come first (the optional ones up to the first required one), after which every member is
/// preceded by a comma. So commas are always right and each text parses one way.
fn object_body(members: &[(String, bool)]) -> String {
    let first_required = members.iter().position(|(_, required)| *required);
    let can_be_first = first_required.map_or(members.len(), |i| i + 1);
    let mut alternatives = Vec::new();
    for (k, (first, _)) in members.iter().enumerate().take(can_be_first) {
        let mut text = first.clone();
        for (rule, required) in members.iter().skip(k + 1) {
            let _ = match *required {
                true => write!(text, r#" ws "," ws {rule}"#),
                false => write!(text, r#" ( ws "," ws {rule} )?"#),
            };
        }
        alternatives.push(text);
    }
    if alternatives.is_empty() {
        return r#"( "{" ws "}" )"#.to_string();
    }
    let members = any_of(alternatives);
    match first_required {
        Some(_) => format!(r#"( "{{" ws {members} ws "}}" )"#),
        None => format!(r#"( "{{" ws ( {members} ws )? "}}" )"#),
    }
}

/// The `enum` or `const` values (at `at`) that are of the schema's `type`, as JSON literals.
fn constants(values: &[Value], map: &Fields, path: &str, at: &str) -> Built {
    let types = type_list(map, path)?;
    let fits = |v: &&Value| {
        types
            .as_ref()
            .is_none_or(|t| t.iter().any(|t| has_type(v, t)))
    };
    let mut literals: Vec<String> = Vec::new();
    for text in values.iter().filter(fits).map(|v| literal(&v.to_string())) {
        if !literals.contains(&text) {
            literals.push(text);
        }
    }
    let message = "no value is left (none is given, or none is of `type`)";
    match literals.is_empty() {
        true => Err(error(at, message)),
        false => Ok(any_of(literals)),
    }
}

fn any_of(mut alternatives: Vec<String>) -> String {
    match alternatives.len() {
        1 => alternatives.pop().unwrap_or_default(),
        _ => format!("( {} )", alternatives.join(" | ")),
    }
}

/// The names under `type`, checked; `None` when there is no `type`.
fn type_list(map: &Fields, path: &str) -> Result<Option<Vec<&'static str>>, SchemaError> {
    let at = format!("{path}.type");
    let names: Vec<(String, &Value)> = match map.get("type") {
        None => return Ok(None),
        Some(Value::Array(list)) => list
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{at}[{i}]"), v))
            .collect(),
        Some(name) => vec![(at.clone(), name)],
    };
    let mut types = Vec::new();
    for (at, name) in names {
        let found = name
            .as_str()
            .and_then(|n| TYPES.split(' ').find(|t| *t == n));
        let Some(found) = found else {
            return Err(error(
                &at,
                format!("{name} is not one of the types: {TYPES}"),
            ));
        };
        if !types.contains(&found) {
            types.push(found);
        }
    }
    match types.is_empty() {
        true => Err(error(&at, "an empty list of types admits no value")),
        false => Ok(Some(types)),
    }
}

/// The bounds under `min_key` and `max_key`: whole numbers up to [`MAX_COUNT`], in order.
fn counts(
    map: &Fields,
    path: &str,
    min_key: &str,
    max_key: &str,
) -> Result<(u64, Option<u64>), SchemaError> {
    let count = |key: &str| match map.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= MAX_COUNT)
            .map(Some)
            .ok_or_else(|| {
                let message = format!("must be a whole number from 0 to {MAX_COUNT}, not {v}");
                keyword_error(path, key, message)
            }),
    };
    let (min, max) = (count(min_key)?.unwrap_or(0), count(max_key)?);
    if max.is_some_and(|max| max < min) {
        let message = format!("is below `{min_key}` ({min}): no value fits");
        return Err(keyword_error(path, max_key, message));
    }
    Ok((min, max))
}

/// ` item` (atomic) `min` to `max` times (`None`: no bound) in the shortest notation, with a
/// space in front; empty for exactly none.
fn repeat(item: &str, min: u64, max: Option<u64>) -> String {
    match (min, max) {
        (0, Some(0)) => String::new(),
        (1, Some(1)) => format!(" {item}"),
        (0, Some(1)) => format!(" {item}?"),
        (0, None) => format!(" {item}*"),
        (1, None) => format!(" {item}+"),
        (m, None) => format!(" {item}{{{m},}}"),
        (m, Some(n)) if m == n => format!(" {item}{{{m}}}"),
        (m, Some(n)) => format!(" {item}{{{m},{n}}}"),
    }
}

fn shared_rules() -> impl Iterator<Item = (&'static str, &'static str)> {
    SHARED.lines().filter_map(|line| line.split_once(" ::= "))
}

fn has_word(words: &str, word: &str) -> bool {
    words.split_whitespace().any(|w| w == word)
}

fn known(key: &str) -> bool {
    let typed = TYPE_KEYWORDS.map(|(_, keys)| keys);
    key == "type"
        || [ANNOTATIONS, COMBINATORS]
            .into_iter()
            .chain(typed)
            .any(|w| has_word(w, key))
}

/// Whether JSON Schema counts `value` as of type `ty` (`1.0` is an integer).
fn has_type(value: &Value, ty: &str) -> bool {
    match value {
        Value::Null => ty == "null",
        Value::Bool(_) => ty == "boolean",
        Value::Number(n) if ty == "integer" => n.as_f64().is_some_and(|f| f.fract() == 0.0),
        Value::Number(_) => ty == "number",
        Value::String(_) => ty == "string",
        Value::Array(_) => ty == "array",
        Value::Object(_) => ty == "object",
    }
}

fn error(path: &str, message: impl Display) -> SchemaError {
    SchemaError(format!("`{path}`: {message}"))
}

fn keyword_error(path: &str, key: &str, message: impl Display) -> SchemaError {
    error(&format!("{path}.{key}"), message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::random::Rng;

    /// `check!(schema, [accepted texts], [rejected texts])`, one case a line: see `check`.
    macro_rules! check {
        ($schema:tt, $accepted:expr, $rejected:expr) => {
            check(json!($schema), &$accepted, &$rejected)
        };
    }

    /// `refuses!(schema, start of the message)`: the schema has no grammar, and says where.
    macro_rules! refuses {
        ($schema:tt, $expected:expr) => {{
            let message = grammar_for_schema(&json!($schema)).unwrap_or_else(|e| e.0);
            assert!(message.starts_with($expected), "{message}");
        }};
    }

    /// The grammar of `schema` (the same text twice) takes each of `accepted`, none of
    /// `rejected`, and makes up only JSON that it takes: those samples are returned.
    fn check(schema: Value, accepted: &[&str], rejected: &[&str]) -> Vec<Value> {
        let text = grammar_for_schema(&schema).unwrap_or_else(|e| panic!("{schema}: {e}"));
        let again = grammar_for_schema(&schema);
        assert_eq!(again.as_ref(), Ok(&text), "not deterministic");
        check_grammar(&text, accepted, rejected)
    }

    fn check_grammar(text: &str, accepted: &[&str], rejected: &[&str]) -> Vec<Value> {
        let grammar = Grammar::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        for json in accepted {
            assert!(grammar.matches(json), "{json} is refused by\n{text}");
        }
        for json in rejected {
            assert!(!grammar.matches(json), "{json} is taken by\n{text}");
        }
        let sample = |seed| grammar.sample(&mut Rng::new(seed));
        let parse = |sample: String| {
            assert!(grammar.matches(&sample), "{sample:?} is not in\n{text}");
            serde_json::from_str(&sample).unwrap_or_else(|e| panic!("{sample:?}: {e}"))
        };
        (0..40).map(sample).map(parse).collect()
    }

    #[test]
    fn json_object_mode_takes_any_object_and_nothing_else() {
        let objects = [
            "{}",
            r#"{"a": [1, "x\n", {"b": null}], "c": -2.5e3}"#,
            "{\n \"k\": 1\n}",
        ];
        let not = [
            "[]",
            r#""x""#,
            r#"{"a": }"#,
            r#"{"a": 1,}"#,
            r#"{"a": 01}"#,
            "{     }",
        ];
        let samples = check_grammar(&json_object_grammar(), &objects, &not);
        assert!(samples.iter().all(Value::is_object));
    }

    #[test]
    fn scalars_and_lists_of_types() {
        check!({"type": "integer"}, ["0", "-12", "1234567890123456"], ["01", "-0", "1.5", "1e3"]);
        check!({"type": "number"}, ["0", "-0.25", "3e5", "1.5E-10"], [".5", "1.", "01", "1e100"]);
        check!({"type": "boolean"}, ["true", "false"], ["1", "null", "\"true\""]);
        let strings = ["\"hi\"", "null", r#""\u00e9 \"q\"""#];
        let not = ["1", "\"a\u{1}\"", r#""\ud800""#, "\"a\"   "];
        check(json!({"type": ["string", "null"]}), &strings, &not);
        check!({"type": "integer", "minimum": 0}, ["0", "17"], ["-1"]);
        check!({"type": "integer", "exclusiveMinimum": 0}, ["1"], ["0", "-3"]);
        check!({"type": "number", "minimum": 0}, ["0.5", "2e-3"], ["-0.5"]);
    }

    #[test]
    fn objects_have_their_required_properties_and_no_others() {
        let person = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer"},
                "nick": {"type": "string", "title": "Nickname"},
                "role": {"type": "string", "enum": ["admin", "user"]}
            },
            "required": ["name", "age", "role"]
        });
        // Properties come in serde_json's order: sorted by name.
        let accepted = [
            r#"{"age": 30, "name": "Ann", "role": "user"}"#,
            r#"{ "age":30 ,"name":"Ann", "nick": "A","role":"admin" }"#,
        ];
        let rejected = [
            r#"{"age": 30, "role": "user"}"#,
            r#"{"age": 30, "name": "Ann", "role": "user", "zip": 1}"#,
            r#"{"age": "30", "name": "Ann", "role": "user"}"#,
            r#"{"age": 30, "name": "Ann", "role": "root"}"#,
            r#"{"name": "Ann", "age": 30, "role": "user"}"#,
            r#"{"age": 30, "name": "Ann", "role": "user",}"#,
            r#"{   "age": 30, "name": "Ann", "role": "user"}"#,
        ];
        for person in check(person, &accepted, &rejected) {
            let known = |k: &String| ["age", "name", "nick", "role"].contains(&k.as_str());
            assert!(
                person.as_object().is_some_and(|o| o.keys().all(known)),
                "{person}"
            );
            assert!(
                person["age"].is_i64() && person["name"].is_string(),
                "{person}"
            );
            assert!(
                matches!(person["role"].as_str(), Some("admin" | "user")),
                "{person}"
            );
        }
    }

    #[test]
    fn optional_properties_may_each_be_left_out() {
        let abc = json!({"a": {"type": "null"}, "b": {"type": "null"}, "c": {"type": "null"}});
        let accepted = ["{}", "{ }", r#"{"b": null}"#, r#"{"a": null, "c": null}"#];
        let rejected = [
            r#"{,"b": null}"#,
            r#"{"b": null,}"#,
            r#"{"a": null "b": null}"#,
        ];
        check!({"type": "object", "properties": abc}, accepted, rejected);
        let full = r#"{"a":null,"b":null,"c":null}"#;
        let rejected = [r#"{"c": null, "a": null}"#, r#"{"a": null, "a": null}"#];
        check!({"type": "object", "properties": abc}, [full], rejected);
        let accepted = [
            r#"{"b": null}"#,
            r#"{"a": null, "b": null}"#,
            r#"{"b": null, "c": null}"#,
        ];
        let rejected = ["{}", r#"{"a": null, "c": null}"#];
        check!({"type": "object", "properties": abc, "required": ["b"]}, accepted, rejected);
        check!({"type": "object"}, [r#"{"any": [1, {"x": null}]}"#], ["[]"]);
        check!({"type": "object", "additionalProperties": false}, ["{}"], [r#"{"a": 1}"#]);
    }

    #[test]
    fn enums_and_consts_are_literal_json() {
        let allowed = [
            json!("red"),
            json!("green"),
            json!(3),
            Value::Null,
            json!({"a": [1, "x"]}),
        ];
        let accepted = [r#""red""#, "3", "null", r#"{"a":[1,"x"]}"#];
        let rejected = [r#""blue""#, "4", r#"{"a": [1, "x"]}"#, r#""Red""#];
        let samples = check(json!({"enum": allowed}), &accepted, &rejected);
        assert!(samples.iter().all(|sample| allowed.contains(sample)));
        check!({"type": "string", "enum": ["a", "b\"c", 1]}, [r#""a""#, r#""b\"c""#], ["1"]);
        check!({"const": "fixed", "description": "always"}, [r#""fixed""#], ["\"f\""]);
    }

    #[test]
    fn arrays_respect_their_items_and_counts() {
        let some =
            json!({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 3});
        let rejected = ["[]", "[1, 2, 3, 4]", r#"["1"]"#, "[1,]"];
        let samples = check(some, &["[1]", "[ 1, 2 ,3 ]"], &rejected);
        assert!(samples
            .iter()
            .all(|s| s.as_array().is_some_and(|a| (1..=3).contains(&a.len()))));
        check!({"type": "array", "maxItems": 0}, ["[]", "[ ]"], ["[1]"]);
        let flags = json!({"type": "boolean"});
        check!({"type": "array", "items": flags}, ["[]", "[true, false, true]"], ["[0]"]);
        check!({"type": "array", "minItems": 2}, [r#"[1, "a"]"#, "[{}, [], null]"], ["[1]"]);
        let words = json!({"type": "array", "items": {"enum": ["x y", 2]}});
        check!({"type": "array", "items": words}, [r#"[["x y"], [], [2, 2]]"#], [r#"[["x"]]"#]);
    }

    #[test]
    fn string_lengths_count_characters() {
        let short = json!({"type": "string", "minLength": 2, "maxLength": 3});
        let samples = check(
            short,
            &[r#""ab""#, r#""a\nb""#, "\"é€x\""],
            &[r#""a""#, r#""abcd""#],
        );
        let fits = |s: &Value| {
            s.as_str()
                .is_some_and(|s| (2..=3).contains(&s.chars().count()))
        };
        assert!(samples.iter().all(fits));
        check!({"type": "string", "maxLength": 0}, [r#""""#], [r#""a""#]);
    }

    #[test]
    fn alternatives_and_any_value() {
        let strings = json!({"type": "array", "items": {"type": "string"}});
        check!({"anyOf": [{"type": "integer"}, strings]}, ["1", r#"["a"]"#], ["\"a\"", "[1]"]);
        check!({"oneOf": [{"const": 1}, {"const": 2}]}, ["1", "2"], ["3"]);
        check!({"allOf": [{"type": "null"}], "title": "nothing"}, ["null"], ["1"]);
        check!({}, ["1", r#"{"a": [null]}"#], ["", "{"]);
        check!(true, ["\"x\""], ["x"]);
    }

    #[test]
    fn recursive_definitions_become_recursive_rules() {
        let children = json!({"type": "array", "items": {"$ref": "#/$defs/node"}});
        let properties = json!({"children": children, "value": {"type": "integer"}});
        let node = json!({"type": "object", "properties": properties, "required": ["value"]});
        let tree = json!({"$ref": "#/$defs/node", "$defs": {"node": node}});
        let accepted = [
            r#"{"value": 1}"#,
            r#"{"children": [{"value": 2}, {"children": [], "value": 3}], "value": 1}"#,
        ];
        let rejected = [r#"{"children": [{}], "value": 1}"#, r#"{"children": []}"#];
        fn valid(node: &Value) -> bool {
            let children = node.get("children").map(Value::as_array);
            let children = children.is_none_or(|c| c.is_some_and(|c| c.iter().all(valid)));
            node["value"].is_i64() && children
        }
        assert!(check(tree, &accepted, &rejected).iter().all(valid));
        let point =
            json!({"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2});
        let (p, definitions) = (
            json!({"$ref": "#/definitions/point"}),
            json!({"point": point}),
        );
        let pointed = json!({"type": "object", "properties": {"p": p}, "required": ["p"]});
        let schema = json!({"allOf": [pointed], "definitions": definitions});
        check(
            schema,
            &[r#"{"p": [1, 2.5]}"#],
            &[r#"{"p": [1]}"#, r#"{"p": [1, 2, 3]}"#],
        );
    }

    #[test]
    fn unsupported_schemas_are_errors_naming_the_path() {
        let code = json!({"type": "string", "pattern": "^[A-Z]+$"});
        let coded = json!({"type": "object", "properties": {"code": code}});
        refuses!(
            coded,
            "`$.properties.code.pattern`: `pattern` is not supported"
        );
        refuses!({"type": "object", "additionalProperties": {}}, "`$.additionalProperties`");
        let remote = json!({"$ref": "http://example.com/s.json"});
        refuses!({"type": "object", "properties": {"x": remote}}, "`$.properties.x.$ref`");
        let age = json!({"age": {"type": "int"}});
        refuses!({"type": "object", "properties": age}, "`$.properties.age.type`");
        refuses!({"type": "integer", "maximum": 10}, "`$.maximum`");
        refuses!({"type": "number", "minimum": 1}, "`$.minimum`");
        refuses!({"type": "array", "prefixItems": [{"type": "string"}]}, "`$.prefixItems`");
        refuses!({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "`$.allOf`");
        refuses!({"$ref": "#/$defs/missing"}, "`$.$ref`");
        refuses!({"type": "string", "maxLength": 5000}, "`$.maxLength`");
        refuses!({"type": "array", "minItems": 3, "maxItems": 2}, "`$.maxItems`");
        refuses!({"type": "object", "properties": {}, "required": ["a"]}, "`$.required`");
        refuses!({"anyOf": [{"type": "string"}], "type": "string"}, "`$.type`");
        refuses!({"properties": {"a": {}}}, "`$.properties`");
        refuses!({"enum": []}, "`$.enum`");
        refuses!(false, "`$`");
        let next = json!({"next": {"$ref": "#/$defs/list"}});
        let list = json!({"type": "object", "properties": next, "required": ["next"]});
        refuses!({"$ref": "#/$defs/list", "$defs": {"list": list}}, "`$.$defs.list`");
        let again = json!({"anyOf": [{"$ref": "#/$defs/a"}, {"type": "null"}]});
        refuses!({"$ref": "#/$defs/a", "$defs": {"a": again}}, "`$.$defs.a.anyOf[0].$ref`");
    }

    #[test]
    fn the_text_is_stable() {
        let schema =
            json!({"type": "object", "properties": {"a": {"type": "boolean"}}, "required": ["a"]});
        let expected = r#"root ::= ( "{" ws root-a ws "}" )
root-a ::= "\"a\"" ws ":" ws ("true" | "false")
ws ::= [ \t\n]{0,2}
"#;
        assert_eq!(grammar_for_schema(&schema).as_deref(), Ok(expected));
    }
}

//! The built-in metrics that compare text and numbers: exact match (with normalisation
//! options), one-of, token F1, contains, regex, numeric tolerance and per-field match.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{MetricError, MetricSpec, Score};
use crate::program::adapter::format_value;
use crate::program::Values;

/// How text is compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Normalize {
    /// Ignore letter case.
    pub case: bool,
    /// Trim and collapse runs of white space.
    pub whitespace: bool,
    /// Drop ASCII punctuation.
    pub punctuation: bool,
}

impl Default for Normalize {
    fn default() -> Self {
        Normalize {
            case: true,
            whitespace: true,
            punctuation: false,
        }
    }
}

impl Normalize {
    /// The text as compared.
    ///
    /// ```
    /// use tuningfork::metrics::Normalize;
    /// let all = Normalize { case: true, whitespace: true, punctuation: true };
    /// assert_eq!(all.apply("  Hello,   World! "), "hello world");
    /// assert_eq!(Normalize::default().apply("  Hello,   World! "), "hello, world!");
    /// ```
    pub fn apply(&self, text: &str) -> String {
        let mut out: String = text
            .chars()
            .filter(|c| !(self.punctuation && c.is_ascii_punctuation()))
            .collect();
        if self.case {
            out = out.to_lowercase();
        }
        if self.whitespace {
            out = out.split_whitespace().collect::<Vec<_>>().join(" ");
        }
        out
    }
}

/// Scores a built-in comparison. The metrics that are not comparisons (weighted, command,
/// judge) are [`MetricSpec::score`]'s own.
pub(super) fn score(
    spec: &MetricSpec,
    gold: &Values,
    prediction: &Values,
) -> Result<Score, MetricError> {
    Ok(match spec {
        MetricSpec::ExactMatch {
            field,
            gold: key,
            normalize,
        } => {
            let (p, g) = texts(prediction, gold, field, key);
            let ok = normalize.apply(&p) == normalize.apply(&g);
            judged(ok, field, &p, &g)
        }
        MetricSpec::OneOf {
            field,
            gold: key,
            normalize,
        } => {
            let p = normalize.apply(&text(prediction, field));
            let answers: Vec<String> = match gold.get(key.as_ref().unwrap_or(field)) {
                Some(Value::Array(items)) => items.iter().map(format_value).collect(),
                Some(v) => vec![format_value(v)],
                None => Vec::new(),
            };
            let ok = answers.iter().any(|a| normalize.apply(a) == p);
            let s = Score::new(if ok { 1.0 } else { 0.0 });
            if ok {
                s
            } else {
                s.with_feedback(format!(
                    "`{field}` was {p:?}; acceptable: {}",
                    answers.join(" | ")
                ))
            }
        }
        MetricSpec::TokenF1 {
            field,
            gold: key,
            normalize,
        } => {
            let (p, g) = texts(prediction, gold, field, key);
            let f1 = token_f1(&normalize.apply(&p), &normalize.apply(&g));
            let s = Score::new(f1);
            if f1 < 1.0 {
                s.with_feedback(format!(
                    "`{field}` overlaps the expected {g:?} with F1 {f1:.2}"
                ))
            } else {
                s
            }
        }
        MetricSpec::Contains {
            field,
            gold: key,
            normalize,
        } => {
            let (p, g) = texts(prediction, gold, field, key);
            let ok = normalize.apply(&p).contains(&normalize.apply(&g));
            let s = Score::new(if ok { 1.0 } else { 0.0 });
            if ok {
                s
            } else {
                s.with_feedback(format!("`{field}` should contain {g:?}"))
            }
        }
        MetricSpec::Regex { field, pattern } => {
            let p = text(prediction, field);
            let ok = match compile_regex(pattern) {
                Ok(re) => re.is_match(&p),
                Err(e) => return Err(e),
            };
            let s = Score::new(if ok { 1.0 } else { 0.0 });
            if ok {
                s
            } else {
                s.with_feedback(format!("`{field}` = {p:?} does not match /{pattern}/"))
            }
        }
        MetricSpec::Numeric {
            field,
            gold: key,
            tolerance,
            relative,
        } => {
            let number = |v: Option<&Value>| -> Option<f64> {
                match v? {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().parse().ok(),
                    _ => None,
                }
            };
            let g = number(gold.get(key.as_ref().unwrap_or(field)));
            let p = number(prediction.get(field));
            match (p, g) {
                (Some(p), Some(g)) => {
                    let allowed = if *relative {
                        tolerance * g.abs()
                    } else {
                        *tolerance
                    };
                    let ok = (p - g).abs() <= allowed;
                    let s = Score::new(if ok { 1.0 } else { 0.0 });
                    if ok {
                        s
                    } else {
                        s.with_feedback(format!("`{field}` was {p}, expected {g}"))
                    }
                }
                _ => Score::new(0.0).with_feedback(format!("`{field}` is not a number")),
            }
        }
        MetricSpec::PerField { fields, normalize } => {
            let mut wrong = Vec::new();
            for field in fields {
                let (p, g) = texts(prediction, gold, field, &None);
                if normalize.apply(&p) != normalize.apply(&g) {
                    wrong.push(format!("`{field}` was {p:?}, expected {g:?}"));
                }
            }
            let s = Score::new((fields.len() - wrong.len()) as f64 / fields.len() as f64);
            if wrong.is_empty() {
                s
            } else {
                s.with_feedback(wrong.join("; "))
            }
        }
        MetricSpec::Weighted { .. }
        | MetricSpec::Command { .. }
        | MetricSpec::Judge { .. }
        | MetricSpec::RecallAtK { .. }
        | MetricSpec::Mrr { .. } => {
            return Err(MetricError::Invalid(
                "weighted, command, judge and retrieval metrics are not text comparisons".into(),
            ))
        }
    })
}

fn text(values: &Values, field: &str) -> String {
    values.get(field).map(format_value).unwrap_or_default()
}

fn texts(
    prediction: &Values,
    gold: &Values,
    field: &str,
    key: &Option<String>,
) -> (String, String) {
    (
        text(prediction, field),
        text(gold, key.as_deref().unwrap_or(field)),
    )
}

fn judged(ok: bool, field: &str, predicted: &str, expected: &str) -> Score {
    let s = Score::new(if ok { 1.0 } else { 0.0 });
    if ok {
        s
    } else {
        s.with_feedback(format!(
            "`{field}` was {predicted:?}, expected {expected:?}"
        ))
    }
}

/// Token-level F1 over white-space tokens (multiset overlap).
///
/// ```
/// use tuningfork::metrics::token_f1;
/// assert_eq!(token_f1("the cat", "the cat"), 1.0);
/// assert_eq!(token_f1("a dog", "the cat"), 0.0);
/// // 2 of 3 predicted tokens are right, 2 of 4 expected ones are found.
/// assert!((token_f1("the cat sat", "the cat is here") - 4.0 / 7.0).abs() < 1e-12);
/// ```
pub fn token_f1(prediction: &str, gold: &str) -> f64 {
    let p: Vec<&str> = prediction.split_whitespace().collect();
    let g: Vec<&str> = gold.split_whitespace().collect();
    if p.is_empty() && g.is_empty() {
        return 1.0;
    }
    if p.is_empty() || g.is_empty() {
        return 0.0;
    }
    let mut remaining: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for t in &g {
        *remaining.entry(t).or_default() += 1;
    }
    let mut common = 0usize;
    for t in &p {
        if let Some(n) = remaining.get_mut(t).filter(|n| **n > 0) {
            *n -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / p.len() as f64;
    let recall = common as f64 / g.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

pub(super) fn compile_regex(pattern: &str) -> Result<regex::Regex, MetricError> {
    regex::Regex::new(pattern).map_err(|e| MetricError::Invalid(format!("regex /{pattern}/: {e}")))
}

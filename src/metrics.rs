//! Metrics: score a prediction against an example's gold values, in [0, 1], with optional
//! textual feedback (which reflective optimizers read).
//!
//! Built in: exact match (with normalisation options), one-of, token F1, contains, regex,
//! numeric tolerance, per-field match and weighted combinations. A command metric runs a user
//! program on JSON (no shell), with a timeout.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::generator::Generator;
use crate::program::adapter::format_value;
use crate::program::{
    CallSettings, FieldType, InputField, OutputField, Predictor, PredictorKind, Program,
    ProgramError, Signature, Values,
};

/// A score and what to say about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    pub score: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<String>,
}

impl Score {
    pub fn new(score: f64) -> Self {
        Score {
            score: score.clamp(0.0, 1.0),
            feedback: None,
        }
    }

    pub fn with_feedback(mut self, feedback: impl Into<String>) -> Self {
        self.feedback = Some(feedback.into());
        self
    }
}

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

/// A metric as written in a task file (`[metric]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MetricSpec {
    /// The predicted field equals the gold field.
    ExactMatch {
        field: String,
        #[serde(default)]
        gold: Option<String>,
        #[serde(default)]
        normalize: Normalize,
    },
    /// The prediction equals one of the gold field's values (a list, or one value).
    OneOf {
        field: String,
        #[serde(default)]
        gold: Option<String>,
        #[serde(default)]
        normalize: Normalize,
    },
    /// Harmonic mean of token precision and recall.
    TokenF1 {
        field: String,
        #[serde(default)]
        gold: Option<String>,
        #[serde(default)]
        normalize: Normalize,
    },
    /// The prediction contains the gold text.
    Contains {
        field: String,
        #[serde(default)]
        gold: Option<String>,
        #[serde(default)]
        normalize: Normalize,
    },
    /// The prediction matches a regular expression (no gold needed).
    Regex { field: String, pattern: String },
    /// |prediction − gold| ≤ tolerance (absolute, or relative to |gold| when `relative`).
    Numeric {
        field: String,
        #[serde(default)]
        gold: Option<String>,
        #[serde(default)]
        tolerance: f64,
        #[serde(default)]
        relative: bool,
    },
    /// The share of fields whose prediction equals the gold value.
    PerField {
        fields: Vec<String>,
        #[serde(default)]
        normalize: Normalize,
    },
    /// A weighted mean of other metrics.
    Weighted { parts: Vec<WeightedPart> },
    /// A program that reads `{example, prediction, gold}` as JSON on stdin and prints
    /// `{"score": …, "feedback": …}`.
    Command {
        program: Vec<String>,
        #[serde(default = "default_timeout")]
        timeout_s: f64,
    },
    /// A pinned local model grades the prediction against the example, following
    /// `instructions`, with a score and feedback. Its calls are recorded like any other.
    Judge {
        /// The judge model (default: the task's model).
        #[serde(default)]
        model: Option<String>,
        instructions: String,
        #[serde(default = "default_judge_tokens")]
        max_tokens: u32,
    },
}

fn default_judge_tokens() -> u32 {
    128
}

fn default_timeout() -> f64 {
    30.0
}

/// One part of a weighted metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedPart {
    pub weight: f64,
    #[serde(flatten)]
    pub metric: MetricSpec,
}

#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    #[error("invalid metric: {0}")]
    Invalid(String),
    #[error("the metric command {program:?} failed: {message}")]
    Command {
        program: Vec<String>,
        message: String,
    },
    #[error("the judge failed: {0}")]
    Judge(String),
}

impl MetricSpec {
    /// Checks what can be checked before scoring: regexes compile, weights are positive,
    /// commands are non-empty.
    pub fn validate(&self) -> Result<(), MetricError> {
        match self {
            MetricSpec::Regex { pattern, .. } => compile_regex(pattern).map(|_| ()),
            MetricSpec::Weighted { parts } => {
                if parts.is_empty() {
                    return Err(MetricError::Invalid("a weighted metric needs parts".into()));
                }
                for part in parts {
                    if !(part.weight.is_finite() && part.weight > 0.0) {
                        return Err(MetricError::Invalid(format!(
                            "weights must be positive, got {}",
                            part.weight
                        )));
                    }
                    part.metric.validate()?;
                }
                Ok(())
            }
            MetricSpec::Command { program, timeout_s } => {
                if program.is_empty() {
                    return Err(MetricError::Invalid(
                        "a command metric needs a program".into(),
                    ));
                }
                if !(timeout_s.is_finite() && *timeout_s > 0.0) {
                    return Err(MetricError::Invalid("timeout_s must be positive".into()));
                }
                Ok(())
            }
            MetricSpec::PerField { fields, .. } if fields.is_empty() => Err(MetricError::Invalid(
                "per_field needs at least one field".into(),
            )),
            _ => Ok(()),
        }
    }

    /// The example fields this metric reads as gold.
    pub fn gold_fields(&self) -> Vec<String> {
        match self {
            MetricSpec::ExactMatch { field, gold, .. }
            | MetricSpec::OneOf { field, gold, .. }
            | MetricSpec::TokenF1 { field, gold, .. }
            | MetricSpec::Contains { field, gold, .. }
            | MetricSpec::Numeric { field, gold, .. } => {
                vec![gold.clone().unwrap_or_else(|| field.clone())]
            }
            MetricSpec::PerField { fields, .. } => fields.clone(),
            MetricSpec::Weighted { parts } => {
                let mut all: Vec<String> =
                    parts.iter().flat_map(|p| p.metric.gold_fields()).collect();
                all.sort();
                all.dedup();
                all
            }
            MetricSpec::Regex { .. } | MetricSpec::Command { .. } | MetricSpec::Judge { .. } => {
                Vec::new()
            }
        }
    }

    /// The judge model this metric needs, if any (`Some(None)`: the task's model).
    pub fn judge_model(&self) -> Option<Option<String>> {
        match self {
            MetricSpec::Judge { model, .. } => Some(model.clone()),
            MetricSpec::Weighted { parts } => parts.iter().find_map(|p| p.metric.judge_model()),
            _ => None,
        }
    }

    /// Scores `prediction` against `gold` (the example's values). `judge` runs the calls of
    /// a judge metric.
    pub async fn score(
        &self,
        gold: &Values,
        prediction: &Values,
        judge: Option<&Generator>,
    ) -> Result<Score, MetricError> {
        Ok(match self {
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
                let ok = compile_regex(pattern)?.is_match(&p);
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
            MetricSpec::Weighted { parts } => {
                let total: f64 = parts.iter().map(|p| p.weight).sum();
                let mut sum = 0.0;
                let mut feedback = Vec::new();
                for part in parts {
                    let s = Box::pin(part.metric.score(gold, prediction, judge)).await?;
                    sum += part.weight * s.score;
                    feedback.extend(s.feedback);
                }
                let s = Score::new(sum / total);
                if feedback.is_empty() {
                    s
                } else {
                    s.with_feedback(feedback.join("; "))
                }
            }
            MetricSpec::Command { program, timeout_s } => {
                run_command(program, *timeout_s, gold, prediction).await?
            }
            MetricSpec::Judge {
                instructions,
                max_tokens,
                ..
            } => {
                let generator = judge.ok_or_else(|| {
                    MetricError::Judge("no judge model is loaded for this evaluation".into())
                })?;
                run_judge(generator, instructions, *max_tokens, gold, prediction).await?
            }
        })
    }
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

fn compile_regex(pattern: &str) -> Result<regex::Regex, MetricError> {
    regex::Regex::new(pattern).map_err(|e| MetricError::Invalid(format!("regex /{pattern}/: {e}")))
}

/// The scores a judge may give: a grammar-constrained choice, read as a number.
const JUDGE_SCORES: [&str; 5] = ["0", "0.25", "0.5", "0.75", "1"];

/// The judge as a one-step program: it reads the example and the prediction as JSON and
/// writes a score, then feedback.
pub fn judge_program(instructions: &str) -> Program {
    Program {
        steps: vec![Predictor {
            name: "judge".into(),
            kind: PredictorKind::Predict,
            signature: Signature {
                instructions: format!(
                    "{}\n\nYou grade a prediction against the expected answer: a score from 0 \
                     (wrong) to 1 (fully right), then brief feedback.",
                    instructions.trim()
                ),
                inputs: vec![
                    InputField {
                        name: "expected".into(),
                        description: Some("the example, with its expected answer, as JSON".into()),
                    },
                    InputField {
                        name: "prediction".into(),
                        description: Some("the prediction to grade, as JSON".into()),
                    },
                ],
                // The score first: a small judge that rambles in its feedback still scores.
                outputs: vec![
                    OutputField {
                        name: "score".into(),
                        description: None,
                        ty: FieldType::Choice {
                            choices: JUDGE_SCORES.iter().map(|s| s.to_string()).collect(),
                        },
                    },
                    OutputField {
                        name: "feedback".into(),
                        description: Some("what is right or wrong, in one sentence".into()),
                        ty: FieldType::Text,
                    },
                ],
            },
            demos: Vec::new(),
        }],
    }
}

/// Reads a judge's parsed outputs as a [`Score`].
pub fn judge_score(outputs: &Values) -> Result<Score, MetricError> {
    let score = outputs
        .get("score")
        .and_then(|v| v.as_str())
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| (0.0..=1.0).contains(s))
        .ok_or_else(|| MetricError::Judge(format!("no score in {outputs:?}")))?;
    let feedback = outputs.get("feedback").map(format_value);
    Ok(Score { score, feedback })
}

async fn run_judge(
    generator: &Generator,
    instructions: &str,
    max_tokens: u32,
    gold: &Values,
    prediction: &Values,
) -> Result<Score, MetricError> {
    let program = judge_program(instructions);
    let inputs: Values = [
        (
            "expected".to_string(),
            Value::String(serde_json::to_string(gold).expect("values serialize")),
        ),
        (
            "prediction".to_string(),
            Value::String(serde_json::to_string(prediction).expect("values serialize")),
        ),
    ]
    .into_iter()
    .collect();
    let settings = CallSettings {
        max_tokens,
        ..CallSettings::default()
    };
    match program.forward(generator, &inputs, &settings).await {
        Ok(prediction) => judge_score(&prediction.outputs),
        Err(ProgramError::Unparsable { raw, error, .. }) => Err(MetricError::Judge(format!(
            "its reply {raw:?} could not be read: {error}"
        ))),
        Err(e) => Err(MetricError::Judge(e.to_string())),
    }
}

/// Runs a command metric: JSON on stdin, `{score, feedback}` on stdout, killed at the timeout.
async fn run_command(
    program: &[String],
    timeout_s: f64,
    gold: &Values,
    prediction: &Values,
) -> Result<Score, MetricError> {
    let fail = |message: String| MetricError::Command {
        program: program.to_vec(),
        message,
    };
    let input = serde_json::json!({ "gold": gold, "prediction": prediction }).to_string();
    let mut child = tokio::process::Command::new(PathBuf::from(&program[0]))
        .args(&program[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start it: {e}")))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let work = async {
        // A program that exits without reading its input is not an error of ours.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        let mut out = String::new();
        stdout
            .read_to_string(&mut out)
            .await
            .map_err(|e| fail(format!("cannot read its output: {e}")))?;
        let status = child.wait().await.map_err(|e| fail(e.to_string()))?;
        Ok::<_, MetricError>((status, out))
    };
    let (status, out) = tokio::time::timeout(Duration::from_secs_f64(timeout_s), work)
        .await
        .map_err(|_| fail(format!("it ran longer than {timeout_s} s and was stopped")))??;
    if !status.success() {
        return Err(fail(format!("it exited with {status}")));
    }
    let parsed: Score = serde_json::from_str(out.trim()).map_err(|e| {
        fail(format!(
            "its output {:?} is not {{\"score\": <0..1>, \"feedback\": <text>}}: {e}",
            out.trim()
        ))
    })?;
    if !(0.0..=1.0).contains(&parsed.score) {
        return Err(fail(format!(
            "it returned score {}, outside [0, 1]",
            parsed.score
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(pairs: &[(&str, Value)]) -> Values {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn score(spec: &MetricSpec, gold: &[(&str, Value)], prediction: &[(&str, Value)]) -> Score {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(spec.score(&values(gold), &values(prediction), None))
            .unwrap()
    }

    fn parse(toml_text: &str) -> MetricSpec {
        let spec: MetricSpec = toml::from_str(toml_text).unwrap();
        spec.validate().unwrap();
        spec
    }

    #[test]
    fn exact_match_normalises_as_asked() {
        let m = parse("kind = \"exact_match\"\nfield = \"label\"\n");
        assert_eq!(
            score(
                &m,
                &[("label", json!("Positive"))],
                &[("label", json!(" positive "))]
            )
            .score,
            1.0
        );
        let strict = parse("kind = \"exact_match\"\nfield = \"label\"\nnormalize = { case = false, whitespace = false }\n");
        let s = score(
            &strict,
            &[("label", json!("Positive"))],
            &[("label", json!("positive"))],
        );
        assert_eq!(s.score, 0.0);
        assert!(s.feedback.unwrap().contains("expected \"Positive\""));
        let punct =
            parse("kind = \"exact_match\"\nfield = \"a\"\nnormalize = { punctuation = true }\n");
        assert_eq!(
            score(&punct, &[("a", json!("Paris."))], &[("a", json!("paris"))]).score,
            1.0
        );
    }

    #[test]
    fn one_of_token_f1_contains_numeric() {
        let m = parse("kind = \"one_of\"\nfield = \"city\"\ngold = \"answers\"\n");
        assert_eq!(
            score(
                &m,
                &[("answers", json!(["NYC", "New York"]))],
                &[("city", json!("new york"))]
            )
            .score,
            1.0
        );
        assert_eq!(
            score(
                &m,
                &[("answers", json!(["NYC"]))],
                &[("city", json!("Boston"))]
            )
            .score,
            0.0
        );

        assert!((token_f1("the cat sat", "the cat sat down") - 0.857).abs() < 0.001);
        assert_eq!(token_f1("", ""), 1.0);
        assert_eq!(token_f1("a", ""), 0.0);

        let c = parse("kind = \"contains\"\nfield = \"answer\"\n");
        assert_eq!(
            score(
                &c,
                &[("answer", json!("Paris"))],
                &[("answer", json!("It is paris, France"))]
            )
            .score,
            1.0
        );

        let n = parse("kind = \"numeric\"\nfield = \"total\"\ntolerance = 0.5\n");
        assert_eq!(
            score(&n, &[("total", json!(10))], &[("total", json!(10.4))]).score,
            1.0
        );
        assert_eq!(
            score(&n, &[("total", json!("10"))], &[("total", json!(11))]).score,
            0.0
        );
        let r = parse("kind = \"numeric\"\nfield = \"t\"\ntolerance = 0.1\nrelative = true\n");
        assert_eq!(
            score(&r, &[("t", json!(100))], &[("t", json!(109))]).score,
            1.0
        );
        assert_eq!(
            score(&r, &[("t", json!(100))], &[("t", json!("x"))]).score,
            0.0
        );
    }

    #[test]
    fn regex_per_field_and_weighted() {
        let re = parse("kind = \"regex\"\nfield = \"date\"\npattern = \"^\\\\d\\\\d\\\\d\\\\d-[0-9]+-\\\\d+$\"\n");
        assert_eq!(score(&re, &[], &[("date", json!("2024-01-31"))]).score, 1.0);
        assert_eq!(score(&re, &[], &[("date", json!("Jan 31"))]).score, 0.0);
        let bad: MetricSpec =
            toml::from_str("kind = \"regex\"\nfield = \"x\"\npattern = \"(a|b\"\n").unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("regex /(a|b/"));

        let pf = parse("kind = \"per_field\"\nfields = [\"name\", \"city\"]\n");
        let s = score(
            &pf,
            &[("name", json!("Ann")), ("city", json!("Oslo"))],
            &[("name", json!("ann")), ("city", json!("Rome"))],
        );
        assert_eq!(s.score, 0.5);
        assert!(s.feedback.unwrap().contains("`city`"));

        let w = parse(
            "kind = \"weighted\"\n[[parts]]\nweight = 3.0\nkind = \"exact_match\"\nfield = \"a\"\n[[parts]]\nweight = 1.0\nkind = \"exact_match\"\nfield = \"b\"\n",
        );
        let s = score(
            &w,
            &[("a", json!("x")), ("b", json!("y"))],
            &[("a", json!("x")), ("b", json!("z"))],
        );
        assert_eq!(s.score, 0.75);
        assert_eq!(w.gold_fields(), ["a", "b"]);
    }

    #[test]
    fn judge_replies_are_read_as_scores() {
        let program = judge_program("Be strict.");
        let step = &program.steps[0];
        assert!(step.grammar().contains("\"0.25\""));
        let parsed = step
            .parse("score: 0.25\nfeedback: close but wrong city")
            .unwrap();
        let s = judge_score(&parsed).unwrap();
        assert_eq!(s.score, 0.25);
        assert_eq!(s.feedback.as_deref(), Some("close but wrong city"));
        assert!(step.parse("feedback: ok").is_err(), "the score is required");
        assert!(step.parse("score: 2\nfeedback: ok").is_err());
        let missing: Values = [("feedback".to_string(), json!("ok"))]
            .into_iter()
            .collect();
        assert!(judge_score(&missing).is_err());
        let without = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(
                MetricSpec::Judge {
                    model: None,
                    instructions: "x".into(),
                    max_tokens: 8,
                }
                .score(&Values::new(), &Values::new(), None),
            );
        assert!(without.unwrap_err().to_string().contains("no judge model"));
    }

    #[test]
    fn command_metric_reads_score_and_enforces_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("check.py");
        std::fs::write(
            &script,
            "import json, sys\nd = json.load(sys.stdin)\nok = d['prediction']['a'] == d['gold']['a']\nprint(json.dumps({'score': 1.0 if ok else 0.0, 'feedback': 'checked'}))\n",
        )
        .unwrap();
        let m = MetricSpec::Command {
            program: vec!["python3".into(), script.to_string_lossy().into()],
            timeout_s: 20.0,
        };
        let s = score(&m, &[("a", json!(1))], &[("a", json!(1))]);
        assert_eq!(
            s,
            Score {
                score: 1.0,
                feedback: Some("checked".into())
            }
        );

        let run = |program: Vec<String>, timeout_s: f64| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(MetricSpec::Command { program, timeout_s }.score(
                    &Values::new(),
                    &Values::new(),
                    None,
                ))
        };
        let slow = run(vec!["sleep".into(), "5".into()], 0.3)
            .unwrap_err()
            .to_string();
        assert!(slow.contains("longer than 0.3 s"), "{slow}");
        let garbage = run(vec!["echo".into(), "not json".into()], 5.0)
            .unwrap_err()
            .to_string();
        assert!(garbage.contains("not json"), "{garbage}");
        let out_of_range = run(vec!["echo".into(), "{\"score\": 2}".into()], 5.0)
            .unwrap_err()
            .to_string();
        assert!(out_of_range.contains("outside [0, 1]"), "{out_of_range}");
        let missing = run(vec!["/nonexistent/metric".into()], 5.0)
            .unwrap_err()
            .to_string();
        assert!(missing.contains("cannot start"), "{missing}");
    }
}

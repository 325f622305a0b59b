//! Metrics: score a prediction against an example's gold values, in [0, 1], with optional
//! textual feedback (which reflective optimizers read).
//!
//! One file per idea: `text.rs` holds the built-in comparisons (exact match with normalisation
//! options, one-of, token F1, contains, regex, numeric tolerance, per-field match);
//! `command.rs` runs a user program on JSON (no shell) with a timeout; `judge.rs` has a pinned
//! local model grade the prediction. This file holds the task-file form ([`MetricSpec`]),
//! weighted combinations and the dispatch.

mod command;
mod judge;
mod retrieval;
mod text;

use serde::{Deserialize, Serialize};

use crate::program::Values;

pub use judge::{judge_program, judge_score, Judges};
pub use text::{token_f1, Normalize};

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
    /// Recall@k: the share of the example's gold passage ids (`gold`: a list of ids) among
    /// the first `k` passages of `field` (a retrieve step's output; all of them without `k`).
    RecallAtK {
        #[serde(default = "default_passages")]
        field: String,
        gold: String,
        #[serde(default)]
        k: Option<usize>,
    },
    /// Reciprocal rank of the first gold passage in `field` (0 when none): averaged over a
    /// split, the mean reciprocal rank.
    Mrr {
        #[serde(default = "default_passages")]
        field: String,
        gold: String,
        #[serde(default)]
        k: Option<usize>,
    },
    /// A weighted mean of other metrics.
    Weighted { parts: Vec<WeightedPart> },
    /// A program that reads `{"gold": <the example's values>, "prediction": <the outputs>}` as
    /// JSON on stdin and prints `{"score": …, "feedback": …}`.
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

fn default_passages() -> String {
    "passages".to_string()
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
            MetricSpec::Regex { pattern, .. } => text::compile_regex(pattern).map(|_| ()),
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
            MetricSpec::RecallAtK { k: Some(0), .. } | MetricSpec::Mrr { k: Some(0), .. } => {
                Err(MetricError::Invalid("k must be at least 1".into()))
            }
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
            MetricSpec::RecallAtK { gold, .. } | MetricSpec::Mrr { gold, .. } => {
                vec![gold.clone()]
            }
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

    /// Every model this metric's judges run on, each once, in name order (`task_model` for a
    /// judge that names none); empty when the metric has no judge.
    pub fn judge_models(&self, task_model: &str) -> Vec<String> {
        let mut models = Vec::new();
        self.collect_judges(task_model, &mut models);
        models.sort();
        models.dedup();
        models
    }

    fn collect_judges(&self, task_model: &str, into: &mut Vec<String>) {
        match self {
            MetricSpec::Judge { model, .. } => {
                into.push(model.clone().unwrap_or_else(|| task_model.to_string()))
            }
            MetricSpec::Weighted { parts } => {
                for part in parts {
                    part.metric.collect_judges(task_model, into);
                }
            }
            _ => {}
        }
    }

    /// Scores `prediction` against `gold` (the example's values). `judges` answers the calls
    /// of judge metrics, each on its own model.
    pub async fn score(
        &self,
        gold: &Values,
        prediction: &Values,
        judges: &Judges,
    ) -> Result<Score, MetricError> {
        Ok(match self {
            MetricSpec::Weighted { parts } => {
                let total: f64 = parts.iter().map(|p| p.weight).sum();
                let mut sum = 0.0;
                let mut feedback = Vec::new();
                for part in parts {
                    let s = Box::pin(part.metric.score(gold, prediction, judges)).await?;
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
                command::run_command(program, *timeout_s, gold, prediction).await?
            }
            MetricSpec::Judge {
                model,
                instructions,
                max_tokens,
            } => {
                let lm = judges.get(model.as_deref())?;
                judge::run_judge(lm, instructions, *max_tokens, gold, prediction).await?
            }
            MetricSpec::RecallAtK { field, gold: g, k } => {
                retrieval::recall(field, g, *k, gold, prediction)?
            }
            MetricSpec::Mrr { field, gold: g, k } => {
                retrieval::reciprocal_rank(field, g, *k, gold, prediction)?
            }
            comparison => text::score(comparison, gold, prediction)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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
            .block_on(spec.score(&values(gold), &values(prediction), &Judges::none()))
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
                .score(&Values::new(), &Values::new(), &Judges::none()),
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
                    &Judges::none(),
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

    #[test]
    fn each_judge_of_a_weighted_metric_is_graded_by_its_own_model() {
        let m = parse(
            "kind = \"weighted\"\n\
             [[parts]]\nweight = 1.0\nkind = \"judge\"\nmodel = \"strict\"\ninstructions = \"Be strict.\"\n\
             [[parts]]\nweight = 1.0\nkind = \"judge\"\ninstructions = \"Be kind.\"\n",
        );
        assert_eq!(m.judge_models("task-model"), ["strict", "task-model"]);
        let fake = |reply: &'static str| {
            std::sync::Arc::new(
                crate::lm::FakeLm::new(0).with_script(move |_| Some(reply.to_string())),
            )
        };
        let strict = fake("score: 0\nfeedback: wrong city");
        let kind = fake("score: 1\nfeedback: fine");
        let judges = Judges::new("task-model")
            .with("strict", strict.clone())
            .with("task-model", kind.clone());
        let s = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(m.score(&values(&[]), &values(&[("a", json!("x"))]), &judges))
            .unwrap();
        assert_eq!(s.score, 0.5);
        assert_eq!(s.feedback.as_deref(), Some("wrong city; fine"));
        assert_eq!((strict.call_count(), kind.call_count()), (1, 1));
        assert!(strict.calls()[0].prompt.contains("Be strict."));
        assert!(kind.calls()[0].prompt.contains("Be kind."));
        let missing = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(m.score(&values(&[]), &values(&[]), &Judges::new("task-model")))
            .unwrap_err();
        assert!(missing.to_string().contains("`strict`"), "{missing}");
    }
}

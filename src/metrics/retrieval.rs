//! Retrieval metrics: how well a `retrieve` step's passages cover the example's gold passage
//! ids. Recall@k is the share of gold ids among the first k passages; MRR is the reciprocal
//! rank of the first gold passage (0 when none is retrieved).

use serde_json::Value;

use super::{MetricError, Score};
use crate::program::{passages_of, Values};

/// The gold ids of an example: a list of ids (strings or integers) or one id.
fn gold_ids(gold: &Values, field: &str) -> Result<Vec<String>, MetricError> {
    let id = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(MetricError::Invalid(format!(
            "gold field `{field}` must hold passage ids (strings or integers), not {other}"
        ))),
    };
    match gold.get(field) {
        None | Some(Value::Null) => Err(MetricError::Invalid(format!(
            "the example has no gold field `{field}` (a list of passage ids)"
        ))),
        Some(Value::Array(items)) => items.iter().map(id).collect(),
        Some(one) => Ok(vec![id(one)?]),
    }
}

/// The retrieved passage ids, best first, at most `k`.
fn retrieved_ids(
    prediction: &Values,
    field: &str,
    k: Option<usize>,
) -> Result<Vec<String>, MetricError> {
    let passages = prediction.get(field).and_then(passages_of).ok_or_else(|| {
        MetricError::Invalid(format!(
            "`{field}` is not the output of a retrieve step (a list of passages)"
        ))
    })?;
    Ok(passages
        .into_iter()
        .take(k.unwrap_or(usize::MAX))
        .map(|p| p.id)
        .collect())
}

/// Recall@k.
pub(super) fn recall(
    field: &str,
    gold_field: &str,
    k: Option<usize>,
    gold: &Values,
    prediction: &Values,
) -> Result<Score, MetricError> {
    let wanted = gold_ids(gold, gold_field)?;
    let found = retrieved_ids(prediction, field, k)?;
    if wanted.is_empty() {
        return Ok(Score::new(1.0));
    }
    let missing: Vec<&String> = wanted.iter().filter(|id| !found.contains(id)).collect();
    let score = Score::new((wanted.len() - missing.len()) as f64 / wanted.len() as f64);
    Ok(if missing.is_empty() {
        score
    } else {
        score.with_feedback(format!(
            "the passages retrieved ({}) miss {}",
            found.join(", "),
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Mean reciprocal rank (per example: 1 / rank of the first gold passage).
pub(super) fn reciprocal_rank(
    field: &str,
    gold_field: &str,
    k: Option<usize>,
    gold: &Values,
    prediction: &Values,
) -> Result<Score, MetricError> {
    let wanted = gold_ids(gold, gold_field)?;
    let found = retrieved_ids(prediction, field, k)?;
    match found.iter().position(|id| wanted.contains(id)) {
        Some(rank) => Ok(Score::new(1.0 / (rank as f64 + 1.0))),
        None => Ok(Score::new(0.0).with_feedback(format!(
            "no gold passage ({}) among those retrieved ({})",
            wanted.join(", "),
            found.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prediction(ids: &[&str]) -> Values {
        let passages: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "text": format!("about {id}"), "score": 1.0}))
            .collect();
        Values::from([("passages".to_string(), Value::Array(passages))])
    }

    fn gold(value: Value) -> Values {
        Values::from([("gold".to_string(), value)])
    }

    #[test]
    fn recall_counts_gold_ids_within_k() {
        let p = prediction(&["a", "b", "c"]);
        let r = |g: Value, k| recall("passages", "gold", k, &gold(g), &p).unwrap();
        assert_eq!(r(json!(["b"]), None).score, 1.0);
        assert_eq!(r(json!(["c"]), Some(2)).score, 0.0);
        assert_eq!(r(json!(["a", "z"]), None).score, 0.5);
        assert!(r(json!(["a", "z"]), None)
            .feedback
            .unwrap()
            .contains("miss z"));
        // One id may be given without a list, and integers count as ids.
        assert_eq!(r(json!("a"), None).score, 1.0);
        let numbered = prediction(&["7"]);
        assert_eq!(
            recall("passages", "gold", None, &gold(json!([7])), &numbered)
                .unwrap()
                .score,
            1.0
        );
    }

    #[test]
    fn reciprocal_rank_of_the_first_gold_passage() {
        let p = prediction(&["a", "b", "c"]);
        let rr = |g: Value| reciprocal_rank("passages", "gold", None, &gold(g), &p).unwrap();
        assert_eq!(rr(json!(["a"])).score, 1.0);
        assert_eq!(rr(json!(["c", "b"])).score, 0.5);
        assert_eq!(rr(json!(["z"])).score, 0.0);
    }

    #[test]
    fn wrong_fields_are_named() {
        let p = prediction(&["a"]);
        let err = recall("answer", "gold", None, &gold(json!(["a"])), &p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`answer`"), "{err}");
        let err = recall("passages", "ids", None, &gold(json!(["a"])), &p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`ids`"), "{err}");
    }
}

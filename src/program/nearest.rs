//! Demonstrations chosen per input: a predictor may carry a pool of demonstrations and show,
//! on every call, the `k` whose inputs read most like the call's, ranked by BM25 over words.
//! DSPy's KNNFewShot does the same with an embedding model; for the short inputs small task
//! models handle, words rank well and need no second model on the cores.
//!
//! A small task model that cannot follow an instruction still copies the answer of a nearly
//! identical demonstration, which is why this matters for sub-1B models: on the bundled
//! sentiment example it is what makes SmolLM2-135M answer `neutral` at all.
//!
//! Architecture Invariant: the choice depends only on the pool (in order) and the call's
//! inputs, never on other calls: ties go to the earlier pool entry, and a pool entry whose
//! inputs equal the call's is never shown, so scoring a program on its own training examples
//! does not hand the model the answer.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::adapter::{Demo, Values};
use super::signature::Signature;

/// BM25's term-frequency saturation.
const K1: f64 = 1.2;
/// BM25's length normalization.
const B: f64 = 0.75;

/// A pool of demonstrations and how many of them each call shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NearestDemos {
    /// Demonstrations shown per call (fewer when fewer share a word with the input).
    pub k: usize,
    /// The demonstrations to choose from, in a fixed order.
    pub pool: Vec<Demo>,
}

impl NearestDemos {
    /// The demonstrations shown for `inputs`: at most `k` pool entries sharing at least one
    /// word with the input fields of `signature`, the least similar first, so the most
    /// similar sits next to the input.
    pub fn select(&self, signature: &Signature, inputs: &Values) -> Vec<Demo> {
        if self.k == 0 || self.pool.is_empty() {
            return Vec::new();
        }
        let documents: Vec<Vec<String>> = self
            .pool
            .iter()
            .map(|demo| words(&input_text(signature, &demo.inputs)))
            .collect();
        let query: BTreeSet<String> = words(&input_text(signature, inputs)).into_iter().collect();
        let scores = bm25(&documents, &query);
        let mut ranked: Vec<(usize, f64)> = scores
            .into_iter()
            .enumerate()
            .filter(|&(i, score)| score > 0.0 && !same_inputs(signature, &self.pool[i], inputs))
            .collect();
        // Best first, the earlier entry among equals.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(self.k);
        ranked
            .iter()
            .rev()
            .map(|&(i, _)| self.pool[i].clone())
            .collect()
    }
}

/// Whether a pool entry was made from the same input as the call.
fn same_inputs(signature: &Signature, demo: &Demo, inputs: &Values) -> bool {
    signature
        .inputs
        .iter()
        .all(|f| demo.inputs.get(&f.name) == inputs.get(&f.name))
}

/// The text of the input fields, as the prompt shows them.
fn input_text(signature: &Signature, inputs: &Values) -> String {
    signature
        .inputs
        .iter()
        .filter_map(|f| inputs.get(&f.name))
        .map(super::render_value)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lowercased runs of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Okapi BM25 of each document for the query's distinct words.
fn bm25(documents: &[Vec<String>], query: &BTreeSet<String>) -> Vec<f64> {
    let n = documents.len() as f64;
    let average = documents.iter().map(Vec::len).sum::<usize>() as f64 / n.max(1.0);
    let mut frequency: BTreeMap<&str, f64> = BTreeMap::new();
    for document in documents {
        let distinct: BTreeSet<&str> = document.iter().map(String::as_str).collect();
        for word in distinct {
            *frequency.entry(word).or_default() += 1.0;
        }
    }
    documents
        .iter()
        .map(|document| {
            let length = document.len() as f64;
            query
                .iter()
                .map(|word| {
                    let tf = document.iter().filter(|w| *w == word).count() as f64;
                    if tf == 0.0 {
                        return 0.0;
                    }
                    let df = frequency.get(word.as_str()).copied().unwrap_or(0.0);
                    let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                    let norm = K1 * (1.0 - B + B * length / average.max(1.0));
                    idf * tf * (K1 + 1.0) / (tf + norm)
                })
                .sum()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::program::signature::{FieldType, InputField, OutputField};
    use serde_json::json;

    fn signature() -> Signature {
        Signature {
            instructions: "Classify.".into(),
            inputs: vec![InputField {
                name: "review".into(),
                description: None,
            }],
            outputs: vec![OutputField {
                name: "label".into(),
                description: None,
                ty: FieldType::Text,
                max_chars: None,
            }],
        }
    }

    fn demo(review: &str, label: &str) -> Demo {
        Demo {
            inputs: [("review".to_string(), json!(review))].into(),
            outputs: [("label".to_string(), json!(label))].into(),
        }
    }

    fn input(review: &str) -> Values {
        [("review".to_string(), json!(review))].into()
    }

    fn labels(demos: &[Demo]) -> Vec<&str> {
        demos
            .iter()
            .map(|d| d.outputs["label"].as_str().unwrap())
            .collect()
    }

    fn pool() -> NearestDemos {
        NearestDemos {
            k: 2,
            pool: vec![
                demo("The kettle has a one-year warranty.", "warranty"),
                demo("The kettle broke after two days.", "broke"),
                demo("The tent arrived on Tuesday.", "tuesday"),
                demo("The lamp has a one-year warranty.", "warranty 2"),
            ],
        }
    }

    #[test]
    fn shows_the_most_similar_last() {
        let shown = pool().select(&signature(), &input("The tent has a one-year warranty."));
        // Both warranty entries share four words; the earlier one ranks first among equals,
        // so it is shown last, next to the input.
        assert_eq!(labels(&shown), ["warranty 2", "warranty"]);
        // Only one entry shares a word with this input.
        let shown = pool().select(&signature(), &input("My tent arrived on Tuesday, late."));
        assert_eq!(labels(&shown), ["tuesday"]);
    }

    #[test]
    fn never_shows_the_input_itself_nor_unrelated_entries() {
        let nearest = NearestDemos { k: 4, ..pool() };
        let shown = nearest.select(&signature(), &input("The kettle broke after two days."));
        assert!(!labels(&shown).contains(&"broke"), "{:?}", labels(&shown));
        assert!(nearest
            .select(&signature(), &input("Zebras sing loudly"))
            .is_empty());
        let none = NearestDemos { k: 0, ..pool() };
        assert!(none
            .select(&signature(), &input("The kettle broke."))
            .is_empty());
    }

    #[test]
    fn rare_words_outweigh_common_ones() {
        // "the" and "kettle" are in most entries; "tuesday" is in one.
        let shown = NearestDemos { k: 1, ..pool() }
            .select(&signature(), &input("The kettle arrived Tuesday."));
        assert_eq!(labels(&shown), ["tuesday"]);
    }
}

//! Retrieval corpora as plain data: the files users add ([`source`]), the passages a search
//! returns, the ways to search, and the [`Retriever`] seam programs call.
//!
//! Like [`crate::lm::Lm`] for model calls, [`Retriever`] is what a program's `retrieve` step
//! knows of search: "the `k` best passages of this corpus for this query". The store-backed
//! implementation (BM25 through SQLite's FTS5, embeddings through the engine, both fused by
//! reciprocal rank) lives in [`crate::retriever`]; tests of pure logic may script their own.
//!
//! Architecture Invariant: this module knows neither the store nor the engine; results are
//! ordered by score, then by passage id, so equal scores never depend on storage order.

pub mod source;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub use source::{passage_hash, read_file, read_files, Chunker, SourceError, SourcePassage};

use crate::lm::LmError;

/// How a `retrieve` step ranks passages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Okapi BM25 over the corpus's full-text index.
    #[default]
    Bm25,
    /// Cosine similarity of embeddings from a pinned model.
    Embedding,
    /// Reciprocal rank fusion of the two.
    Hybrid,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Bm25 => "bm25",
            Method::Embedding => "embedding",
            Method::Hybrid => "hybrid",
        }
    }

    /// Whether the method needs passage embeddings.
    pub fn uses_embeddings(self) -> bool {
        self != Method::Bm25
    }
}

/// BM25's parameters as SQLite's FTS5 applies them (fixed by FTS5; recorded with every run
/// that searches, so a reader knows what the scores mean).
pub const BM25_K1: f64 = 1.2;
pub const BM25_B: f64 = 0.75;
/// The tokenizer of every corpus's full-text index.
pub const FTS_TOKENIZER: &str = "unicode61 remove_diacritics 2";
/// Reciprocal rank fusion: a passage scores `Σ 1 / (RRF_K + rank)` over the lists it is in.
pub const RRF_K: f64 = 60.0;
/// How deep each list goes before hybrid fusion: `max(RRF_DEPTH, 4k)` passages.
pub const RRF_DEPTH: usize = 20;

/// What a search is asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub corpus: String,
    pub text: String,
    pub k: usize,
    pub method: Method,
    /// The pinned model whose embeddings rank passages (embedding and hybrid methods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// A passage a search returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    pub id: String,
    pub text: String,
    pub score: f64,
}

/// A search's passages, best first, and the model call it made (the query's embedding).
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieved {
    pub passages: Vec<Passage>,
    /// The recorded embedding call, for methods that embed the query.
    pub call_id: Option<i64>,
    pub cached: bool,
    /// Tokens of the query's embedding (0 for BM25).
    pub tokens: u64,
}

/// Why a search returned nothing.
#[derive(Debug, thiserror::Error)]
pub enum RetrieveError {
    #[error("no corpus named `{0}` in the store; add it with `tuningfork corpus add {0} FILES…`")]
    UnknownCorpus(String),
    #[error(
        "corpus `{corpus}` has no embeddings from model `{model}`; compute them with \
         `tuningfork corpus embed {corpus} --model {model}`"
    )]
    NotEmbedded { corpus: String, model: String },
    #[error("this program retrieves from `{0}`, but it was run without a corpus store")]
    NoStore(String),
    #[error(transparent)]
    Lm(#[from] LmError),
    #[error("retrieval failed: {0}")]
    Failed(Box<dyn std::error::Error + Send + Sync>),
}

/// The future a search returns: boxed, so that `dyn Retriever` works.
pub type RetrieveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Retrieved, RetrieveError>> + Send + 'a>>;

/// Searches corpora.
pub trait Retriever: Send + Sync {
    fn retrieve(&self, query: Query) -> RetrieveFuture<'_>;
}

impl<T: Retriever + ?Sized> Retriever for std::sync::Arc<T> {
    fn retrieve(&self, query: Query) -> RetrieveFuture<'_> {
        (**self).retrieve(query)
    }
}

/// The retriever of programs without `retrieve` steps: every search is an error.
pub struct NoRetriever;

impl Retriever for NoRetriever {
    fn retrieve(&self, query: Query) -> RetrieveFuture<'_> {
        Box::pin(async move { Err(RetrieveError::NoStore(query.corpus)) })
    }
}

/// Sorts by score (highest first), then passage id, and keeps `k`.
pub fn rank(mut passages: Vec<Passage>, k: usize) -> Vec<Passage> {
    passages.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    passages.truncate(k);
    passages
}

/// Reciprocal rank fusion of ranked lists: each passage scores `Σ 1 / (RRF_K + rank)`, rank
/// from 1, over the lists it appears in; the best `k` are returned.
pub fn fuse(lists: &[Vec<Passage>], k: usize) -> Vec<Passage> {
    let mut fused: BTreeMap<String, Passage> = BTreeMap::new();
    for list in lists {
        for (rank, passage) in list.iter().enumerate() {
            let gain = 1.0 / (RRF_K + rank as f64 + 1.0);
            fused
                .entry(passage.id.clone())
                .and_modify(|p| p.score += gain)
                .or_insert_with(|| Passage {
                    score: gain,
                    ..passage.clone()
                });
        }
    }
    rank(fused.into_values().collect(), k)
}

/// Turns a user's query into an FTS5 query that cannot be a syntax error: every word (letters
/// and digits) quoted, joined by OR. `None` when the query has no word at all.
pub fn fts_query(text: &str) -> Option<String> {
    let mut words: Vec<String> = Vec::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let word = word.to_lowercase();
        if !words.contains(&word) {
            words.push(word);
        }
    }
    (!words.is_empty()).then(|| {
        words
            .iter()
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" OR ")
    })
}

/// A corpus's content hash: sha256 over every passage's id and hash, in id order.
pub fn content_hash<'a>(passages: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<(&str, &str)> = passages.into_iter().collect();
    sorted.sort_unstable();
    let mut hasher = Sha256::new();
    for (id, hash) in sorted {
        hasher.update(id.as_bytes());
        hasher.update([0]);
        hasher.update(hash.as_bytes());
        hasher.update([b'\n']);
    }
    hex::encode(hasher.finalize())
}

/// Renders passages as a prompt shows them: `[1] text`, one per line.
pub fn render_passages(passages: &[Passage]) -> String {
    passages
        .iter()
        .enumerate()
        .map(|(i, p)| format!("[{}] {}", i + 1, p.text.replace('\n', " ")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(id: &str, score: f64) -> Passage {
        Passage {
            id: id.into(),
            text: format!("text of {id}"),
            score,
        }
    }

    fn ids(passages: &[Passage]) -> Vec<&str> {
        passages.iter().map(|p| p.id.as_str()).collect()
    }

    #[test]
    fn ranking_breaks_ties_by_id() {
        let ranked = rank(
            vec![passage("b", 1.0), passage("c", 2.0), passage("a", 1.0)],
            2,
        );
        assert_eq!(ids(&ranked), ["c", "a"]);
    }

    #[test]
    fn fusion_rewards_passages_both_lists_rank_high() {
        let lexical = vec![passage("x", 9.0), passage("y", 8.0), passage("z", 7.0)];
        let dense = vec![passage("y", 0.9), passage("w", 0.8), passage("x", 0.1)];
        let fused = fuse(&[lexical, dense], 3);
        // y: 1/62 + 1/61; x: 1/61 + 1/63; w: 1/62; z: 1/63.
        assert_eq!(ids(&fused), ["y", "x", "w"]);
        assert!((fused[0].score - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-12);
    }

    #[test]
    fn fts_queries_quote_every_word() {
        assert_eq!(
            fts_query("When does the \"Gull\" ferry leave? (OR NOT)").as_deref(),
            Some("\"when\" OR \"does\" OR \"the\" OR \"gull\" OR \"ferry\" OR \"leave\" OR \"or\" OR \"not\"")
        );
        assert_eq!(fts_query(" ?! "), None);
        assert_eq!(fts_query("Café café").as_deref(), Some("\"café\""));
    }

    #[test]
    fn content_hash_ignores_order_but_not_content() {
        let a = content_hash([("1", "aa"), ("2", "bb")]);
        assert_eq!(a, content_hash([("2", "bb"), ("1", "aa")]));
        assert_ne!(a, content_hash([("1", "aa"), ("2", "bc")]));
        assert_ne!(a, content_hash([("1", "aa")]));
    }

    #[test]
    fn passages_render_numbered_on_one_line_each() {
        let text = render_passages(&[passage("a", 1.0), passage("b", 0.5)]);
        assert_eq!(text, "[1] text of a\n[2] text of b");
    }
}

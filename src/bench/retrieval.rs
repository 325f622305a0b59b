//! The retrieval benchmark: a synthetic corpus generated from a seed (words drawn from an
//! invented vocabulary with a Zipf-like frequency, so BM25 sees realistic term statistics),
//! indexed into a store; BM25 query latency; then, with a model, embedding throughput set
//! against a prefill of the same passages, and embedding and hybrid query latency.

use std::time::Instant;

use serde::Serialize;

use crate::corpus::{Chunker, Method, Query, Retriever, SourcePassage};
use crate::engine::{GenerationRequest, Prompt};
use crate::generator::{GenerateError, Generator};
use crate::random::Rng;
use crate::retriever::{embed_corpus, CorpusRetriever, EmbedCorpusError};
use crate::store::{FileIndex, Store, StoreError};

/// The corpus name the benchmark indexes.
pub const CORPUS: &str = "bench";

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalBenchOptions {
    pub passages: usize,
    pub queries: usize,
    pub k: usize,
    /// Passages embedded for the embedding figures (0: BM25 only). Embedding and hybrid
    /// queries then search those passages.
    pub embed: usize,
    pub seed: u64,
}

/// Latency of one kind of query.
#[derive(Debug, Clone, Serialize)]
pub struct QueryLatency {
    pub method: Method,
    /// Passages searched.
    pub passages: usize,
    pub queries: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Embedding throughput, and a prefill of the same texts for comparison.
#[derive(Debug, Clone, Serialize)]
pub struct EmbeddingFigures {
    pub model: String,
    pub passages: usize,
    pub tokens: u64,
    pub seconds: f64,
    pub passages_per_s: f64,
    pub tokens_per_s: f64,
    /// The same passages sent as prompts (one token generated, cache off): prefill speed.
    pub prefill_passages: usize,
    pub prefill_tokens_per_s: f64,
    /// Embedding time per token over prefill time per token (≤ 1: an embedding costs no more
    /// than a prefill of its tokens). Both are wall times through the generator.
    pub cost_vs_prefill: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetrievalBenchReport {
    pub options: RetrievalBenchOptions,
    pub index_seconds: f64,
    pub index_passages_per_s: f64,
    pub words_per_passage: f64,
    /// The store file after indexing (and embedding).
    pub store_bytes: u64,
    pub bm25: QueryLatency,
    pub embedding: Option<EmbeddingFigures>,
    pub dense: Vec<QueryLatency>,
}

#[derive(Debug, thiserror::Error)]
pub enum RetrievalBenchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(transparent)]
    Embed(#[from] EmbedCorpusError),
    #[error("a query failed: {0}")]
    Query(String),
}

/// A seeded synthetic corpus: `n` passages of 20 to 40 words.
pub fn synthetic_corpus(n: usize, seed: u64) -> Vec<SourcePassage> {
    let mut rng = Rng::new(seed);
    let vocabulary = vocabulary(&mut rng, 6000);
    (0..n)
        .map(|i| {
            let words = 20 + (rng.next_u64() % 21) as usize;
            let text = (0..words)
                .map(|_| zipf_word(&mut rng, &vocabulary))
                .collect::<Vec<_>>()
                .join(" ");
            SourcePassage {
                id: format!("p{i:06}"),
                text: format!("{text}."),
                metadata: None,
                file: "bench.jsonl".into(),
                line: i + 1,
            }
        })
        .collect()
}

fn vocabulary(rng: &mut Rng, size: usize) -> Vec<String> {
    const ONSETS: [&str; 16] = [
        "b", "c", "d", "f", "g", "l", "m", "n", "p", "r", "s", "t", "v", "br", "st", "tr",
    ];
    const VOWELS: [&str; 6] = ["a", "e", "i", "o", "u", "ai"];
    let mut words = Vec::with_capacity(size);
    while words.len() < size {
        let syllables = 1 + (rng.next_u64() % 3) as usize;
        let word: String = (0..syllables)
            .map(|_| {
                format!(
                    "{}{}",
                    ONSETS[(rng.next_u64() % 16) as usize],
                    VOWELS[(rng.next_u64() % 6) as usize]
                )
            })
            .collect();
        if !words.contains(&word) {
            words.push(word);
        }
    }
    words
}

/// A word with probability about 1/rank (rank drawn as ⌊size^u⌋ for uniform u).
fn zipf_word(rng: &mut Rng, vocabulary: &[String]) -> String {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let rank = ((vocabulary.len() as f64).powf(u) as usize).clamp(1, vocabulary.len());
    vocabulary[rank - 1].clone()
}

/// Queries made from passages: 4 of a passage's words and 2 random ones.
fn queries(corpus: &[SourcePassage], n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed ^ 0x5151);
    (0..n)
        .map(|_| {
            let passage = &corpus[(rng.next_u64() % corpus.len() as u64) as usize];
            let words: Vec<&str> = passage.text.trim_end_matches('.').split(' ').collect();
            let mut query: Vec<&str> = rng
                .choose(words.len(), 4)
                .into_iter()
                .map(|i| words[i])
                .collect();
            let other = &corpus[(rng.next_u64() % corpus.len() as u64) as usize];
            query.extend(other.text.split(' ').take(2));
            query.join(" ")
        })
        .collect()
}

fn latency(method: Method, passages: usize, mut ms: Vec<f64>) -> QueryLatency {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    QueryLatency {
        method,
        passages,
        queries: ms.len(),
        mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

async fn time_queries(
    retriever: &dyn Retriever,
    corpus: &str,
    method: Method,
    texts: &[String],
    k: usize,
) -> Result<Vec<f64>, RetrievalBenchError> {
    let mut ms = Vec::with_capacity(texts.len());
    for text in texts {
        let started = Instant::now();
        retriever
            .retrieve(Query {
                corpus: corpus.to_string(),
                text: text.clone(),
                k,
                method,
                model: None,
            })
            .await
            .map_err(|e| RetrievalBenchError::Query(e.to_string()))?;
        ms.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(ms)
}

/// Runs the benchmark on `store` (a scratch store: it gets the corpus). With `embedder` (a
/// generator recording under a run of that store, model `model`), the embedding figures too.
pub async fn run(
    store: &std::sync::Arc<Store>,
    store_path: Option<&std::path::Path>,
    embedder: Option<(&str, &Generator)>,
    options: &RetrievalBenchOptions,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<RetrievalBenchReport, RetrievalBenchError> {
    progress(&format!("generating {} passages", options.passages));
    let corpus = synthetic_corpus(options.passages.max(1), options.seed);
    let words = corpus
        .iter()
        .map(|p| p.text.split(' ').count())
        .sum::<usize>() as f64
        / corpus.len() as f64;
    progress("indexing (BM25)");
    let started = Instant::now();
    store.index_corpus(
        CORPUS,
        &Chunker::default(),
        &[FileIndex {
            path: "bench.jsonl".into(),
            file_hash: "synthetic".into(),
            passages: corpus.clone(),
        }],
    )?;
    let index_seconds = started.elapsed().as_secs_f64();
    let texts = queries(&corpus, options.queries.max(1), options.seed);
    let mut retriever = CorpusRetriever::new(std::sync::Arc::clone(store));
    progress("BM25 queries");
    let bm25 = latency(
        Method::Bm25,
        corpus.len(),
        time_queries(&retriever, CORPUS, Method::Bm25, &texts, options.k).await?,
    );
    let mut report = RetrievalBenchReport {
        options: options.clone(),
        index_seconds,
        index_passages_per_s: corpus.len() as f64 / index_seconds,
        words_per_passage: words,
        store_bytes: 0,
        bm25,
        embedding: None,
        dense: Vec::new(),
    };
    if let Some((model, generator)) = embedder.filter(|_| options.embed > 0) {
        // The embedded subset is its own corpus, so dense queries search exactly it.
        let subset = &corpus[..options.embed.min(corpus.len())];
        let name = format!("{CORPUS}-embedded");
        store.index_corpus(
            &name,
            &Chunker::default(),
            &[FileIndex {
                path: "bench.jsonl".into(),
                file_hash: "synthetic".into(),
                passages: subset.to_vec(),
            }],
        )?;
        progress(&format!("embedding {} passages with {model}", subset.len()));
        let started = Instant::now();
        let embedded = embed_corpus(store, generator, &name, &|_, _| {}).await?;
        let seconds = started.elapsed().as_secs_f64();
        // The same texts as prompts: prefill, one generated token, no cache.
        let sample = subset.len().min(200);
        progress(&format!("prefilling {sample} of them for comparison"));
        let uncached = generator.clone().with_cache(false);
        let mut prefill_tokens = 0u64;
        let mut prefill_seconds = 0.0;
        for passage in &subset[..sample] {
            // Wall time through the generator, like the embeddings: tokenizing, the engine,
            // recording the call.
            let started = Instant::now();
            let generated = uncached
                .generate(GenerationRequest::new(Prompt::Raw(passage.text.clone()), 1))
                .await?;
            prefill_seconds += started.elapsed().as_secs_f64();
            prefill_tokens += u64::from(generated.completion.prompt_tokens);
        }
        let prefill_rate = prefill_tokens as f64 / prefill_seconds.max(1e-9);
        let embed_rate = embedded.tokens as f64 / seconds;
        report.embedding = Some(EmbeddingFigures {
            model: model.to_string(),
            passages: embedded.embedded,
            tokens: embedded.tokens,
            seconds,
            passages_per_s: embedded.embedded as f64 / seconds,
            tokens_per_s: embed_rate,
            prefill_passages: sample,
            prefill_tokens_per_s: prefill_rate,
            cost_vs_prefill: prefill_rate / embed_rate,
        });
        // Dense queries scan the whole corpus: passages past the embedded ones get copies of
        // their vectors (real vectors, meaningless ranks: for the scan's latency at full size).
        let engine = generator.engine();
        let (sha, fingerprint) = (engine.model_sha256(), engine.fingerprint().id());
        let embedded_id = store.corpus_id(&name)?.unwrap_or_default();
        if let Some(vectors) = store.corpus_vectors(embedded_id, sha, &fingerprint)? {
            progress("copying vectors to the whole corpus");
            let bench_id = store.corpus_id(CORPUS)?.unwrap_or_default();
            let rows = vectors.ids.len().max(1);
            let todo = store.passages_to_embed(bench_id, sha, &fingerprint)?;
            store.in_transaction(|| {
                for (i, (row, _)) in todo.iter().enumerate() {
                    let at = (i % rows) * vectors.dim;
                    store.store_vector(
                        *row,
                        sha,
                        &fingerprint,
                        None,
                        &vectors.matrix[at..at + vectors.dim],
                    )?;
                }
                Ok(())
            })?;
        }
        // Every query embedded anew (cache off), as a new question would be.
        retriever = retriever
            .with_embedder(model, generator.clone().with_cache(false))
            .with_default_model(model);
        for method in [Method::Embedding, Method::Hybrid] {
            progress(&format!("{} queries", method.as_str()));
            let ms = time_queries(&retriever, CORPUS, method, &texts, options.k).await?;
            report.dense.push(latency(method, corpus.len(), ms));
        }
    }
    if let Some(path) = store_path {
        report.store_bytes = ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                std::fs::metadata(format!("{}{suffix}", path.display()))
                    .ok()
                    .map(|m| m.len())
            })
            .sum();
    }
    Ok(report)
}

impl std::fmt::Display for RetrievalBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "corpus     {} synthetic passages, {:.1} words each (seed {})",
            self.options.passages, self.words_per_passage, self.options.seed
        )?;
        writeln!(
            f,
            "indexing   {:.0} passages/s (BM25, {:.2} s)",
            self.index_passages_per_s, self.index_seconds
        )?;
        if let Some(e) = &self.embedding {
            writeln!(
                f,
                "embedding  {:.1} passages/s, {:.0} tokens/s with {} ({} passages, {:.1} s)",
                e.passages_per_s, e.tokens_per_s, e.model, e.passages, e.seconds
            )?;
            writeln!(
                f,
                "prefill    {:.0} tokens/s on {} of the same passages: an embedding costs {:.2}× a prefill of its tokens",
                e.prefill_tokens_per_s, e.prefill_passages, e.cost_vs_prefill
            )?;
        }
        writeln!(
            f,
            "store      {:.1} MiB",
            self.store_bytes as f64 / 1048576.0
        )?;
        writeln!(
            f,
            "\n{:<10} {:>9} {:>8} {:>9} {:>9} {:>9}",
            "method", "passages", "queries", "mean ms", "p50 ms", "p99 ms"
        )?;
        for l in std::iter::once(&self.bm25).chain(&self.dense) {
            writeln!(
                f,
                "{:<10} {:>9} {:>8} {:>9.2} {:>9.2} {:>9.2}",
                l.method.as_str(),
                l.passages,
                l.queries,
                l.mean_ms,
                l.p50_ms,
                l.p99_ms
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_corpus_is_a_function_of_its_seed() {
        let a = synthetic_corpus(50, 3);
        assert_eq!(a, synthetic_corpus(50, 3));
        assert_ne!(a, synthetic_corpus(50, 4));
        let ids: std::collections::BTreeSet<_> = a.iter().map(|p| &p.id).collect();
        assert_eq!(ids.len(), 50);
        assert!(a
            .iter()
            .all(|p| (20..=40).contains(&p.text.split(' ').count())));
        assert_eq!(queries(&a, 5, 3), queries(&a, 5, 3));
    }
}

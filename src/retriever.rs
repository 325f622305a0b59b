//! The store-backed [`Retriever`]: BM25 through each corpus's FTS5 index, cosine similarity
//! of embeddings computed through the engine (candle-core tensors over the stored vectors),
//! and reciprocal rank fusion of the two.
//!
//! Query embeddings go through a [`Generator`] like every model call: cached, recorded under
//! the run, replayed by `runs replay`. Passage embeddings are computed once per model and
//! engine build by [`embed_corpus`] (each a recorded call too) and stored with the passage.
//!
//! Embedding search scans every vector of the corpus: one matrix-vector product per query,
//! fine up to a few hundred thousand passages of a small model (the matrix is held in
//! memory: passages × dimensions × 4 bytes, 23 MB for 10,000 passages of a 576-dimension
//! model). Past that, use BM25, or split the corpus.
//!
//! Architecture Invariant: rankings are a function of the stored corpus and the query only:
//! ties are broken by passage id, and the cosine scores come from a fixed reduction order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use candle_core::{Device, Tensor};

use crate::corpus::{
    self, Method, Passage, Query, RetrieveError, RetrieveFuture, Retrieved, Retriever,
};
use crate::generator::{GenerateError, Generator};
use crate::store::{Store, StoreError};

/// A corpus's embeddings, normalized, ready to score queries.
struct Matrix {
    ids: Vec<String>,
    texts: Vec<String>,
    /// passages × dimensions, each row of unit length.
    rows: Tensor,
}

/// Searches the corpora of one store.
pub struct CorpusRetriever {
    store: Arc<Store>,
    /// Embedding models by pinned name; the first is the default.
    embedders: BTreeMap<String, Generator>,
    default_model: Option<String>,
    matrices: Mutex<BTreeMap<(i64, String), Arc<Matrix>>>,
}

fn failed(e: impl std::error::Error + Send + Sync + 'static) -> RetrieveError {
    RetrieveError::Failed(Box::new(e))
}

fn from_generate(e: GenerateError) -> RetrieveError {
    RetrieveError::Lm(e.into())
}

impl CorpusRetriever {
    /// A retriever over `store`; BM25 needs nothing else.
    pub fn new(store: Arc<Store>) -> Self {
        CorpusRetriever {
            store,
            embedders: BTreeMap::new(),
            default_model: None,
            matrices: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds a model that embeds queries, under `name`, its pinned name.
    pub fn with_embedder(mut self, name: &str, generator: Generator) -> Self {
        self.embedders.insert(name.to_string(), generator);
        self
    }

    /// The model of steps that name none (the task's).
    pub fn with_default_model(mut self, name: &str) -> Self {
        self.default_model = Some(name.to_string());
        self
    }

    fn corpus_id(&self, name: &str) -> Result<i64, RetrieveError> {
        self.store
            .corpus_id(name)
            .map_err(failed)?
            .ok_or_else(|| RetrieveError::UnknownCorpus(name.to_string()))
    }

    fn embedder(&self, query: &Query) -> Result<(&str, &Generator), RetrieveError> {
        let name = query
            .model
            .as_deref()
            .or(self.default_model.as_deref())
            .ok_or_else(|| RetrieveError::NoStore(query.corpus.clone()))?;
        self.embedders
            .get_key_value(name)
            .map(|(n, g)| (n.as_str(), g))
            .ok_or_else(|| RetrieveError::NotEmbedded {
                corpus: query.corpus.clone(),
                model: name.to_string(),
            })
    }

    fn matrix(
        &self,
        corpus_id: i64,
        corpus: &str,
        model: &str,
        generator: &Generator,
    ) -> Result<Arc<Matrix>, RetrieveError> {
        let engine = generator.engine();
        let key = (corpus_id, engine.model_sha256().to_string());
        if let Some(m) = self.matrices.lock().expect("not poisoned").get(&key) {
            return Ok(Arc::clone(m));
        }
        let stored = self
            .store
            .corpus_vectors(corpus_id, engine.model_sha256(), &engine.fingerprint().id())
            .map_err(failed)?
            .ok_or_else(|| RetrieveError::NotEmbedded {
                corpus: corpus.to_string(),
                model: model.to_string(),
            })?;
        let n = stored.ids.len();
        let rows = if n == 0 {
            Tensor::zeros((0, 1), candle_core::DType::F32, &Device::Cpu)
        } else {
            Tensor::from_vec(stored.matrix, (n, stored.dim), &Device::Cpu)
                .and_then(|m| unit_rows(&m))
        }
        .map_err(failed)?;
        let matrix = Arc::new(Matrix {
            ids: stored.ids,
            texts: stored.texts,
            rows,
        });
        self.matrices
            .lock()
            .expect("not poisoned")
            .insert(key, Arc::clone(&matrix));
        Ok(matrix)
    }

    fn bm25(&self, corpus_id: i64, text: &str, k: usize) -> Result<Vec<Passage>, RetrieveError> {
        let Some(query) = corpus::fts_query(text) else {
            return Ok(Vec::new());
        };
        let found = self
            .store
            .search_bm25(corpus_id, &query, k)
            .map_err(failed)?;
        Ok(corpus::rank(found, k))
    }

    async fn dense(
        &self,
        corpus_id: i64,
        query: &Query,
        k: usize,
    ) -> Result<(Vec<Passage>, i64, bool, u64), RetrieveError> {
        let (model, generator) = self.embedder(query)?;
        let matrix = self.matrix(corpus_id, &query.corpus, model, generator)?;
        let embedded = generator.embed(&query.text).await.map_err(from_generate)?;
        let scores = cosine(&matrix.rows, &embedded.vector).map_err(failed)?;
        let passages = scores
            .into_iter()
            .enumerate()
            .map(|(i, score)| Passage {
                id: matrix.ids[i].clone(),
                text: matrix.texts[i].clone(),
                score: f64::from(score),
            })
            .collect();
        Ok((
            corpus::rank(passages, k),
            embedded.call_id,
            embedded.cached,
            u64::from(embedded.tokens),
        ))
    }
}

/// Rows scaled to unit length (a zero row stays zero).
fn unit_rows(m: &Tensor) -> candle_core::Result<Tensor> {
    let norms = m.sqr()?.sum_keepdim(1)?.sqrt()?.maximum(1e-12f32)?;
    m.broadcast_div(&norms)
}

/// Cosine similarity of each unit row with `query`: an element-wise product and a row sum,
/// whose order of additions is fixed.
fn cosine(rows: &Tensor, query: &[f32]) -> candle_core::Result<Vec<f32>> {
    if rows.dim(0)? == 0 {
        return Ok(Vec::new());
    }
    let q = Tensor::from_slice(query, (1, query.len()), &Device::Cpu)?;
    let q = unit_rows(&q)?;
    rows.broadcast_mul(&q)?.sum(1)?.to_vec1::<f32>()
}

impl Retriever for CorpusRetriever {
    fn retrieve(&self, query: Query) -> RetrieveFuture<'_> {
        Box::pin(async move {
            let corpus_id = self.corpus_id(&query.corpus)?;
            let k = query.k;
            match query.method {
                Method::Bm25 => Ok(Retrieved {
                    passages: self.bm25(corpus_id, &query.text, k)?,
                    call_id: None,
                    cached: false,
                    tokens: 0,
                }),
                Method::Embedding => {
                    let (passages, call_id, cached, tokens) =
                        self.dense(corpus_id, &query, k).await?;
                    Ok(Retrieved {
                        passages,
                        call_id: Some(call_id),
                        cached,
                        tokens,
                    })
                }
                Method::Hybrid => {
                    let depth = corpus::RRF_DEPTH.max(4 * k);
                    let lexical = self.bm25(corpus_id, &query.text, depth)?;
                    let (dense, call_id, cached, tokens) =
                        self.dense(corpus_id, &query, depth).await?;
                    Ok(Retrieved {
                        passages: corpus::fuse(&[lexical, dense], k),
                        call_id: Some(call_id),
                        cached,
                        tokens,
                    })
                }
            }
        })
    }
}

/// What [`embed_corpus`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct EmbedReport {
    /// Passages embedded now (computed or read from the cache).
    pub embedded: usize,
    /// Of those, how many the engine computed.
    pub computed: usize,
    /// Passages that already had a stored embedding.
    pub already: usize,
    pub tokens: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedCorpusError {
    #[error(transparent)]
    Retrieve(#[from] RetrieveError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("passage {passage}: {source}")]
    Generate {
        passage: String,
        source: GenerateError,
    },
}

/// Embeds every passage of `corpus` that has no embedding from the generator's model and
/// engine build, storing each as it comes (an interrupted run keeps what it computed).
/// `progress` sees (done, to do) after each passage.
pub async fn embed_corpus(
    store: &Store,
    generator: &Generator,
    corpus: &str,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<EmbedReport, EmbedCorpusError> {
    let corpus_id = store
        .corpus_id(corpus)?
        .ok_or_else(|| RetrieveError::UnknownCorpus(corpus.to_string()))?;
    let engine = generator.engine();
    let fingerprint = engine.fingerprint().id();
    let todo = store.passages_to_embed(corpus_id, engine.model_sha256(), &fingerprint)?;
    let total_rows: i64 = store
        .corpus(corpus)?
        .map(|c| c.passages as i64)
        .unwrap_or_default();
    let mut report = EmbedReport {
        already: (total_rows as usize).saturating_sub(todo.len()),
        ..EmbedReport::default()
    };
    // A few requests in flight keep the engine busy while results are stored; the engine
    // evaluates one text at a time whatever the depth.
    const IN_FLIGHT: usize = 8;
    let total = todo.len();
    let mut pending = todo.into_iter();
    let mut running = futures_like::Window::new();
    loop {
        while running.len() < IN_FLIGHT {
            let Some((row, text)) = pending.next() else {
                break;
            };
            let generator = generator.clone();
            running.push(tokio::spawn(async move {
                let embedded = generator.embed(&text).await;
                (row, text, embedded)
            }));
        }
        let Some(joined) = running.next().await else {
            break;
        };
        let (row, text, embedded) = joined.expect("embedding tasks do not panic");
        let embedded = embedded.map_err(|source| EmbedCorpusError::Generate {
            passage: text.chars().take(60).collect(),
            source,
        })?;
        store.store_vector(
            row,
            engine.model_sha256(),
            &fingerprint,
            Some(embedded.call_id),
            &embedded.vector,
        )?;
        report.embedded += 1;
        report.computed += usize::from(!embedded.cached);
        report.tokens += u64::from(embedded.tokens);
        progress(report.embedded, total);
    }
    Ok(report)
}

/// A first-in, first-out window of spawned tasks: results come back in the order they were
/// started, so what is stored never depends on which finished first.
mod futures_like {
    use std::collections::VecDeque;

    pub struct Window<T> {
        tasks: VecDeque<tokio::task::JoinHandle<T>>,
    }

    impl<T> Window<T> {
        pub fn new() -> Self {
            Window {
                tasks: VecDeque::new(),
            }
        }

        pub fn len(&self) -> usize {
            self.tasks.len()
        }

        pub fn push(&mut self, task: tokio::task::JoinHandle<T>) {
            self.tasks.push_back(task);
        }

        pub async fn next(&mut self) -> Option<Result<T, tokio::task::JoinError>> {
            match self.tasks.pop_front() {
                Some(task) => Some(task.await),
                None => None,
            }
        }
    }

    impl<T> Drop for Window<T> {
        fn drop(&mut self) {
            // An error part-way leaves no embedding computing for nobody.
            for task in &self.tasks {
                task.abort();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_scores_rank_the_nearest_row_first() {
        let rows = Tensor::from_vec(
            vec![1.0f32, 0.0, 0.0, 2.0, 3.0, 3.0, 0.0, 0.0],
            (4, 2),
            &Device::Cpu,
        )
        .unwrap();
        let rows = unit_rows(&rows).unwrap();
        let scores = cosine(&rows, &[0.0, 5.0]).unwrap();
        assert!((scores[0] - 0.0).abs() < 1e-6);
        assert!((scores[1] - 1.0).abs() < 1e-6);
        assert!((scores[2] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        // A zero vector scores 0, not NaN.
        assert_eq!(scores[3], 0.0);
        // The same inputs give the same bits.
        assert_eq!(scores, cosine(&rows, &[0.0, 5.0]).unwrap());
    }
}

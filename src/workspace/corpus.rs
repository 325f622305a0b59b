//! Corpora in the run layer: indexing files into the store, embedding a corpus with a pinned
//! model (an `index` run, every embedding a recorded call), and what a task's `retrieve`
//! steps need before a run begins (each corpus present, embedded where the method needs it),
//! recorded with the run.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{RunKind, TaskModels, Workspace, WorkspaceError};
use crate::bench::retrieval::{RetrievalBenchOptions, RetrievalBenchReport};
use crate::corpus::{self, Chunker, Method, RetrieveError, Retriever};
use crate::engine::Engine;
use crate::observe::Observer;
use crate::program::Program;
use crate::retriever::{embed_corpus, CorpusRetriever, EmbedCorpusError, EmbedReport};
use crate::store::{FileIndex, IndexChange};

use super::lifecycle::RunHandle;
use super::CancellationToken;

/// `corpus add`: files to index into a corpus, and optionally a model to embed it with.
#[derive(Debug, Clone)]
pub struct AddCorpusRequest {
    pub name: String,
    pub files: Vec<PathBuf>,
    pub chunker: Chunker,
    /// Embed the corpus with this pinned model after indexing.
    pub embed: Option<String>,
}

/// What `corpus add` did.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusAdded {
    pub corpus: String,
    pub change: IndexChange,
    pub embedded: Option<CorpusEmbedded>,
}

/// What `corpus embed` did.
#[derive(Debug, Clone, Serialize)]
pub struct CorpusEmbedded {
    pub model: String,
    pub run: String,
    pub report: EmbedReport,
    pub seconds: f64,
}

/// The engines that embed queries, by pinned model name.
pub type Embedders = Vec<(String, Arc<Engine>)>;

/// A corpus a program searches, as its run records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorpusUse {
    pub corpus: String,
    pub content_hash: String,
    pub passages: usize,
    /// The methods steps use on it.
    pub methods: Vec<Method>,
    /// The embedding model (name and sha256) for embedding and hybrid steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_model: Option<(String, String)>,
    /// BM25's k1 and b and the index's tokenizer, and the fusion constant.
    pub bm25: serde_json::Value,
}

fn invalid(e: impl std::fmt::Display) -> WorkspaceError {
    WorkspaceError::Invalid(e.to_string())
}

impl From<EmbedCorpusError> for WorkspaceError {
    fn from(e: EmbedCorpusError) -> Self {
        match e {
            EmbedCorpusError::Store(e) => WorkspaceError::Store(e),
            EmbedCorpusError::Generate { passage, source } => WorkspaceError::Invalid(format!(
                "cannot embed the passage starting {passage:?}: {source}"
            )),
            EmbedCorpusError::Retrieve(e) => invalid(e),
        }
    }
}

/// Indexes files into a corpus (see [`crate::store::Store::index_corpus`]): a file whose
/// bytes did not change since it was last indexed is not read again; then, with `embed`,
/// embeds what has no embedding from that model.
pub async fn add_corpus(
    ws: &Workspace,
    request: &AddCorpusRequest,
    observer: &dyn Observer,
    cancel: CancellationToken,
) -> Result<CorpusAdded, WorkspaceError> {
    request
        .chunker
        .validate()
        .map_err(|e| WorkspaceError::Invalid(format!("the chunker settings are invalid: {e}")))?;
    if request.name.trim().is_empty() || request.name.chars().any(char::is_whitespace) {
        return Err(WorkspaceError::Invalid(format!(
            "`{}` cannot name a corpus: use letters, digits, `-` or `_`",
            request.name
        )));
    }
    if request.files.is_empty() {
        return Err(WorkspaceError::Invalid(
            "give at least one file to index".into(),
        ));
    }
    let store = ws.store();
    let known = store.corpus_file_hashes(&request.name)?;
    let same_chunker = store
        .corpus(&request.name)?
        .is_none_or(|c| c.chunker == request.chunker);
    let files = expand(&request.files)?;
    let mut indexed = Vec::new();
    let mut unchanged = 0;
    for path in &files {
        let bytes = std::fs::read(path)
            .map_err(|e| WorkspaceError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let file_hash = hex::encode(Sha256::digest(&bytes));
        // Recorded absolute, so that adding from another directory finds the same file.
        let recorded = std::fs::canonicalize(path)
            .unwrap_or_else(|_| path.clone())
            .display()
            .to_string();
        if same_chunker && known.get(&recorded) == Some(&file_hash) {
            unchanged += 1;
            continue;
        }
        indexed.push((path.clone(), recorded, file_hash));
    }
    let paths: Vec<PathBuf> = indexed.iter().map(|(p, _, _)| p.clone()).collect();
    let mut passages = corpus::read_files(&paths, &request.chunker).map_err(invalid)?;
    let mut by_file = Vec::new();
    for (path, recorded, file_hash) in indexed {
        let (mine, rest): (Vec<_>, Vec<_>) = passages.into_iter().partition(|p| p.file == path);
        passages = rest;
        by_file.push(FileIndex {
            path: recorded,
            file_hash,
            passages: mine,
        });
    }
    let mut change = store.index_corpus(&request.name, &request.chunker, &by_file)?;
    change.files_unchanged += unchanged;
    let embedded = match &request.embed {
        Some(model) => Some(embed(ws, &request.name, model, observer, cancel).await?),
        None => None,
    };
    Ok(CorpusAdded {
        corpus: request.name.clone(),
        change,
        embedded,
    })
}

/// The files of `paths`, directories replaced by the corpus files they hold (recursively, in
/// name order; files of other kinds skipped).
fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, WorkspaceError> {
    let mut out = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| invalid(format!("cannot list {}: {e}", path.display())))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            let (dirs, files): (Vec<_>, Vec<_>) = entries.into_iter().partition(|p| p.is_dir());
            out.extend(files.into_iter().filter(|p| {
                p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                    ["jsonl", "ndjson", "txt", "md", "markdown"]
                        .contains(&e.to_ascii_lowercase().as_str())
                })
            }));
            out.extend(expand(&dirs)?);
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// Embeds every passage of `corpus` that has no embedding from `model` (an `index` run).
pub async fn embed(
    ws: &Workspace,
    corpus: &str,
    model: &str,
    observer: &dyn Observer,
    cancel: CancellationToken,
) -> Result<CorpusEmbedded, WorkspaceError> {
    let record = ws
        .store()
        .corpus(corpus)?
        .ok_or_else(|| invalid(RetrieveError::UnknownCorpus(corpus.to_string())))?;
    let engine = ws.engine(model)?;
    let run = ws.begin_run(
        RunKind::Index,
        serde_json::json!({
            "corpus": corpus,
            "content_hash": record.content_hash,
            "model": model,
            "pooling": engine.pooling(),
        }),
        None,
        &engine,
        cancel,
    )?;
    let generator = run.generator(Arc::clone(&engine), run.group(0), true);
    let started = std::time::Instant::now();
    let todo = record.passages;
    observer.stage(&format!("embedding {corpus} with {model}"), todo as u64);
    let store = Arc::clone(ws.store());
    let report = run
        .drive(async { embed_corpus(&store, &generator, corpus, &|_, _| observer.advance()).await })
        .await?;
    Ok(CorpusEmbedded {
        model: model.to_string(),
        run: run.uid.clone(),
        report,
        seconds: started.elapsed().as_secs_f64(),
    })
}

impl Workspace {
    /// The corpora `program` searches, checked before a run begins: each is in the store, and
    /// embedded by its model where a step ranks by embeddings. Returns them as the run records
    /// them, with the engines of the embedding models.
    pub fn corpus_uses(
        &self,
        program: &Program,
        task_model: &str,
    ) -> Result<(Vec<CorpusUse>, Embedders), WorkspaceError> {
        let mut uses: Vec<CorpusUse> = Vec::new();
        let mut engines: Vec<(String, Arc<Engine>)> = Vec::new();
        for step in &program.retrievals {
            let record = self
                .store()
                .corpus(&step.corpus)?
                .ok_or_else(|| invalid(RetrieveError::UnknownCorpus(step.corpus.clone())))?;
            let mut embedding_model = None;
            if step.method.uses_embeddings() {
                let model = step.model.clone().unwrap_or_else(|| task_model.to_string());
                let engine = match engines.iter().find(|(name, _)| *name == model) {
                    Some((_, engine)) => Arc::clone(engine),
                    None => {
                        let engine = self.engine(&model)?;
                        engines.push((model.clone(), Arc::clone(&engine)));
                        engine
                    }
                };
                let missing = self.store().passages_to_embed(
                    record.id,
                    engine.model_sha256(),
                    &engine.fingerprint().id(),
                )?;
                if !missing.is_empty() {
                    return Err(WorkspaceError::Invalid(format!(
                        "{} ({} of {} passages have none)",
                        RetrieveError::NotEmbedded {
                            corpus: step.corpus.clone(),
                            model: model.clone(),
                        },
                        missing.len(),
                        record.passages
                    )));
                }
                embedding_model = Some((model, engine.model_sha256().to_string()));
            }
            match uses.iter_mut().find(|u| u.corpus == step.corpus) {
                Some(known) => {
                    if !known.methods.contains(&step.method) {
                        known.methods.push(step.method);
                    }
                    if known.embedding_model.is_none() {
                        known.embedding_model = embedding_model;
                    }
                }
                None => uses.push(CorpusUse {
                    corpus: step.corpus.clone(),
                    content_hash: record.content_hash.clone(),
                    passages: record.passages,
                    methods: vec![step.method],
                    embedding_model,
                    bm25: serde_json::json!({
                        "k1": corpus::BM25_K1,
                        "b": corpus::BM25_B,
                        "tokenizer": corpus::FTS_TOKENIZER,
                        "rrf_k": corpus::RRF_K,
                        "rrf_depth": corpus::RRF_DEPTH,
                    }),
                }),
            }
        }
        Ok((uses, engines))
    }
}

impl TaskModels {
    /// The retriever of the task's `retrieve` steps for `run`: BM25 from the store, query
    /// embeddings through generators recorded under the run.
    pub fn retriever_for_run(
        &self,
        ws: &Workspace,
        run: &RunHandle,
        task_model: &str,
        group: u64,
        use_cache: bool,
    ) -> Arc<dyn Retriever> {
        run_retriever(ws, run, &self.embedders, task_model, group, use_cache)
    }
}

/// A retriever for `run`: BM25 from the store, query embeddings from `embedders` (by model
/// name) through generators recorded under the run.
pub fn run_retriever(
    ws: &Workspace,
    run: &RunHandle,
    embedders: &[(String, Arc<Engine>)],
    task_model: &str,
    group: u64,
    use_cache: bool,
) -> Arc<dyn Retriever> {
    let mut retriever = CorpusRetriever::new(Arc::clone(ws.store())).with_default_model(task_model);
    for (name, engine) in embedders {
        retriever =
            retriever.with_embedder(name, run.generator(Arc::clone(engine), group, use_cache));
    }
    Arc::new(retriever)
}

/// `corpus search`: what a `retrieve` step would return for `query` (embedding methods
/// record the query's embedding under a `search` run).
pub async fn search(
    ws: &Workspace,
    query: corpus::Query,
    cancel: CancellationToken,
) -> Result<corpus::Retrieved, WorkspaceError> {
    if !query.method.uses_embeddings() {
        let retriever = CorpusRetriever::new(Arc::clone(ws.store()));
        return retriever.retrieve(query).await.map_err(invalid);
    }
    let model = query
        .model
        .clone()
        .unwrap_or_else(crate::task::default_model);
    let engine = ws.engine(&model)?;
    let run = ws.begin_run(
        RunKind::Search,
        serde_json::json!({ "query": query, "model": model }),
        None,
        &engine,
        cancel,
    )?;
    let retriever = run_retriever(
        ws,
        &run,
        &[(model.clone(), engine)],
        &model,
        run.group(0),
        true,
    );
    run.drive(async { retriever.retrieve(query).await.map_err(invalid) })
        .await
}

/// `bench --retrieval`: the retrieval benchmark on a scratch store in a temporary directory
/// (the user's store is not touched), with `model` embedding when `options.embed > 0`.
pub async fn bench_retrieval(
    ws: &Workspace,
    model: &str,
    options: &RetrievalBenchOptions,
    progress: &(dyn Fn(&str) + Sync),
    cancel: CancellationToken,
) -> Result<RetrievalBenchReport, WorkspaceError> {
    let dir = tempfile::tempdir()
        .map_err(|e| invalid(format!("cannot make a scratch directory: {e}")))?;
    let path = dir.path().join("bench.sqlite");
    let store = Arc::new(crate::store::Store::open(&path)?);
    let engine = if options.embed > 0 {
        Some(ws.engine(model)?)
    } else {
        None
    };
    let fingerprint = crate::engine::EngineFingerprint::current();
    let run = RunHandle::begin(
        &store,
        RunKind::Bench,
        serde_json::json!({ "retrieval": options, "model": model }),
        Some(options.seed),
        (engine.as_ref().map(|e| e.model_sha256()), &fingerprint),
        cancel,
    )?;
    let generator = engine.map(|e| run.generator(e, run.group(0), true));
    let report = run
        .drive(async {
            crate::bench::retrieval::run(
                &store,
                Some(&path),
                generator.as_ref().map(|g| (model, g)),
                options,
                progress,
            )
            .await
            .map_err(invalid)
        })
        .await?;
    Ok(report)
}

impl std::fmt::Display for CorpusAdded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.change;
        writeln!(
            f,
            "corpus {} {}: {} passages (content {})",
            self.corpus,
            if c.created { "created" } else { "updated" },
            c.passages,
            crate::artifact::short(&c.content_hash)
        )?;
        writeln!(
            f,
            "  {} added, {} changed, {} removed, {} unchanged; {} files unchanged since last indexed",
            c.added, c.updated, c.removed, c.unchanged, c.files_unchanged
        )?;
        if let Some(e) = &self.embedded {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl std::fmt::Display for CorpusEmbedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.report;
        write!(
            f,
            "embedded {} passages with {} ({} computed, {} from the cache, {} already stored) in {:.1} s; run {}",
            r.embedded,
            self.model,
            r.computed,
            r.embedded - r.computed,
            r.already,
            self.seconds,
            self.run
        )
    }
}

/// A corpus as `corpus list --json` and `corpus show --json` give it.
pub fn corpus_json(c: &crate::store::CorpusRecord) -> serde_json::Value {
    serde_json::json!({
        "name": c.name,
        "passages": c.passages,
        "content_hash": c.content_hash,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "chunker": c.chunker,
        "files": c.files.iter().map(|f| serde_json::json!({
            "path": f.path, "sha256": f.file_hash, "passages": f.passages, "indexed_at": f.indexed_at,
        })).collect::<Vec<_>>(),
        "embeddings": c.embedded.iter().map(|(sha, n)| serde_json::json!({
            "model_sha256": sha, "passages": n,
        })).collect::<Vec<_>>(),
    })
}

/// The table of `corpus list`.
pub fn corpus_table(corpora: &[crate::store::CorpusRecord]) -> String {
    let mut out = format!(
        "{:<20} {:>9} {:>6} {:<13} {:<25} {}\n",
        "name", "passages", "files", "content", "updated", "embedded by"
    );
    for c in corpora {
        let embedded: Vec<String> = c
            .embedded
            .iter()
            .map(|(sha, n)| format!("{} ({n})", crate::artifact::short(sha)))
            .collect();
        out.push_str(&format!(
            "{:<20} {:>9} {:>6} {:<13} {:<25} {}\n",
            c.name,
            c.passages,
            c.files.len(),
            crate::artifact::short(&c.content_hash),
            c.updated_at,
            if embedded.is_empty() {
                "-".to_string()
            } else {
                embedded.join(", ")
            }
        ));
    }
    out
}

/// `corpus show`: the corpus, its files, embeddings and first passages.
pub fn corpus_details(
    store: &crate::store::Store,
    c: &crate::store::CorpusRecord,
) -> Result<String, WorkspaceError> {
    let mut out = format!(
        "corpus   {}\npassages {}\ncontent  {}\nchunker  max {} chars, overlap {}\nupdated  {}\n",
        c.name,
        c.passages,
        c.content_hash,
        c.chunker.max_chars,
        c.chunker.overlap_chars,
        c.updated_at
    );
    out.push_str("files\n");
    for f in &c.files {
        out.push_str(&format!(
            "  {}  {} passages  sha256 {}\n",
            f.path,
            f.passages,
            crate::artifact::short(&f.file_hash)
        ));
    }
    for (sha, n) in &c.embedded {
        out.push_str(&format!("embedded {n} passages by model {sha}\n"));
    }
    out.push_str("first passages\n");
    for (id, file, line, text) in store.corpus_passages(c.id, 5)? {
        let text: String = text.chars().take(100).collect();
        out.push_str(&format!("  {id}  ({file}:{line})  {text}\n"));
    }
    Ok(out)
}

//! `tuningfork corpus` and `tuningfork bench --retrieval`.

use anyhow::{bail, Result};
use tuningfork::bench::retrieval::RetrievalBenchOptions;
use tuningfork::corpus::{Chunker, Method, Query};
use tuningfork::workspace::{self, AddCorpusRequest};

use super::args::{BenchArgs, CorpusCommand, GlobalArgs, MethodArg};
use super::progress::CountBar;
use super::{open_store, read_store, workspace, Runner};

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Method {
        match m {
            MethodArg::Bm25 => Method::Bm25,
            MethodArg::Embedding => Method::Embedding,
            MethodArg::Hybrid => Method::Hybrid,
        }
    }
}

fn embed_bar(corpus: &str) -> CountBar {
    CountBar::new(
        &format!("embedding {corpus}"),
        "{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
    )
}

pub fn run(global: &GlobalArgs, command: CorpusCommand) -> Result<()> {
    match command {
        CorpusCommand::Add(args) => {
            let ws = workspace(global, &args.engine)?;
            let request = AddCorpusRequest {
                name: args.name.clone(),
                files: args.files.clone(),
                chunker: Chunker {
                    max_chars: args.max_chars,
                    overlap_chars: args.overlap,
                },
                embed: args.embed.clone(),
            };
            let bar = embed_bar(&args.name);
            let runner = Runner::new()?;
            let added = runner.run(workspace::add_corpus(&ws, &request, &bar, runner.token()));
            drop(bar);
            let added = added?;
            if args.json {
                super::print_json(&added)?;
            } else {
                print!("{added}");
            }
        }
        CorpusCommand::Embed {
            name,
            model,
            json,
            engine,
        } => {
            let ws = workspace(global, &engine)?;
            let bar = embed_bar(&name);
            let runner = Runner::new()?;
            let embedded = runner.run(workspace::embed(&ws, &name, &model, &bar, runner.token()));
            drop(bar);
            let embedded = embedded?;
            if json {
                super::print_json(&embedded)?;
            } else {
                println!("{embedded}");
            }
        }
        CorpusCommand::Search {
            name,
            query,
            k,
            method,
            model,
            json,
            engine,
        } => {
            let ws = workspace(global, &engine)?;
            let runner = Runner::new()?;
            let found = runner.run(workspace::search(
                &ws,
                Query {
                    corpus: name,
                    text: query,
                    k,
                    method: method.into(),
                    model: Some(model),
                },
                runner.token(),
            ))?;
            if json {
                super::print_json(&found.passages)?;
            } else {
                for (i, p) in found.passages.iter().enumerate() {
                    println!("{:>2}. {}  {:.4}  {}", i + 1, p.id, p.score, p.text);
                }
            }
        }
        CorpusCommand::List { json } => {
            let corpora = read_store(global)?.corpora()?;
            if json {
                let rows: Vec<_> = corpora.iter().map(workspace::corpus_json).collect();
                super::print_json(&rows)?;
            } else if corpora.is_empty() {
                println!("no corpora; add one with `tuningfork corpus add NAME FILES…`");
            } else {
                print!("{}", workspace::corpus_table(&corpora));
            }
        }
        CorpusCommand::Show { name, json } => {
            let store = read_store(global)?;
            let Some(corpus) = store.corpus(&name)? else {
                bail!("no corpus named `{name}` in the store; `tuningfork corpus list` shows them");
            };
            if json {
                super::print_json(&workspace::corpus_json(&corpus))?;
            } else {
                print!("{}", workspace::corpus_details(&store, &corpus)?);
            }
        }
        CorpusCommand::Remove { name } => {
            if !open_store(global)?.remove_corpus(&name)? {
                bail!("no corpus named `{name}` in the store; `tuningfork corpus list` shows them");
            }
            println!("removed corpus {name}");
        }
    }
    Ok(())
}

/// `bench --retrieval`.
pub fn bench(global: &GlobalArgs, args: BenchArgs) -> Result<()> {
    let ws = workspace(global, &args.engine)?;
    let options = RetrievalBenchOptions {
        passages: args.passages,
        queries: args.queries,
        k: 10,
        embed: args.embed,
        seed: 1,
    };
    let runner = Runner::new()?;
    let progress = |stage: &str| {
        if !args.json {
            eprintln!("{stage}…");
        }
    };
    let report = runner.run(workspace::bench_retrieval(
        &ws,
        &args.model,
        &options,
        &progress,
        runner.token(),
    ))?;
    if args.json {
        super::print_json(&report)?;
    } else {
        println!("threads    {}", ws.engine_config().resolved_threads());
        print!("{report}");
    }
    Ok(())
}

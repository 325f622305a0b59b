//! Retrieval through the binary: corpora indexed into a real store (idempotent, diffed on
//! re-add, bad input refused with its file and line), BM25 and embedding searches that repeat
//! and replay byte for byte on the real model, and the bundled RAG example evaluated with
//! its answer step fixed and free.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn rag_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples/rag")
}

/// A copy of the handbook's first `n` passages and the visitor's guide in `dir`.
fn small_corpus(dir: &Path, n: usize) -> PathBuf {
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let handbook = std::fs::read_to_string(rag_dir().join("corpus/handbook.jsonl")).unwrap();
    let lines: Vec<&str> = handbook.lines().take(n).collect();
    std::fs::write(corpus.join("handbook.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::copy(
        rag_dir().join("corpus/visitors.md"),
        corpus.join("visitors.md"),
    )
    .unwrap();
    corpus
}

fn add(sandbox: &Sandbox, name: &str, files: &[&Path], extra: &[&str]) -> Value {
    let mut args = vec!["corpus", "add", name];
    let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    args.extend(files.iter().map(String::as_str));
    args.extend(extra);
    args.push("--json");
    report(&sandbox.run(&args))
}

fn search(sandbox: &Sandbox, corpus: &str, query: &str, method: &str) -> Value {
    report(&sandbox.run(&[
        "corpus", "search", corpus, query, "--method", method, "-k", "5", "--json",
    ]))
}

#[test]
fn indexing_is_idempotent_and_a_changed_file_reindexes_only_its_passages() {
    let sandbox = Sandbox::new();
    let corpus = small_corpus(sandbox.dir.path(), 40);
    let first = add(&sandbox, "town", &[&corpus], &[]);
    let change = &first["change"];
    assert_eq!(change["created"], true);
    let total = change["passages"].as_u64().unwrap();
    assert!(total > 40, "the guide adds passages: {first}");
    assert_eq!(change["added"].as_u64(), Some(total));

    // The same files again: nothing is read or written.
    let again = add(&sandbox, "town", &[&corpus], &[]);
    assert_eq!(again["change"]["files_unchanged"], 2, "{again}");
    assert_eq!(again["change"]["added"], 0);
    assert_eq!(again["change"]["content_hash"], change["content_hash"]);

    // One passage edited, one removed, one added: exactly those change.
    let path = corpus.join("handbook.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut edited: Value = serde_json::from_str(&lines[0]).unwrap();
    edited["text"] = "The Vellmark lighthouse keeper feeds a tame heron called Quill.".into();
    lines[0] = edited.to_string();
    lines.remove(1);
    lines.push(r#"{"id": "new1", "text": "A zeppelin mast stands on Brack Hill."}"#.into());
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let third = add(&sandbox, "town", &[&corpus], &[]);
    let c = &third["change"];
    assert_eq!(
        (
            &c["added"],
            &c["updated"],
            &c["removed"],
            &c["files_unchanged"]
        ),
        (&1.into(), &1.into(), &1.into(), &1.into()),
        "{third}"
    );
    assert_eq!(c["unchanged"].as_u64(), Some(40 - 2));
    assert_ne!(c["content_hash"], change["content_hash"]);
    // The index follows the edit.
    let found = search(&sandbox, "town", "tame heron", "bm25");
    assert_eq!(found[0]["id"], edited["id"], "{found}");
    let found = search(&sandbox, "town", "zeppelin mast", "bm25");
    assert_eq!(found[0]["id"], "new1", "{found}");

    let shown = report(&sandbox.run(&["corpus", "show", "town", "--json"]));
    assert_eq!(shown["passages"], total);
    assert_eq!(shown["files"].as_array().unwrap().len(), 2);
    ok(&sandbox.run(&["corpus", "remove", "town"]));
    let listed = report(&sandbox.run(&["corpus", "list", "--json"]));
    assert_eq!(listed, serde_json::json!([]));
}

#[test]
fn bad_corpus_input_names_the_file_and_line_and_changes_nothing() {
    let sandbox = Sandbox::new();
    let dir = sandbox.dir.path();
    let good = dir.join("good.jsonl");
    std::fs::write(&good, "{\"id\": \"a\", \"text\": \"one\"}\n").unwrap();
    add(&sandbox, "c", &[&good], &[]);
    let cases: [(&str, &[u8], &str); 5] = [
        (
            "missing.jsonl",
            b"{\"id\": \"x\", \"text\": \"ok\"}\n{\"text\": \"no id\"}\n",
            "missing.jsonl:2:",
        ),
        (
            "empty.jsonl",
            b"{\"id\": \"y\", \"text\": \"  \"}\n",
            "empty.jsonl:1:",
        ),
        (
            "twice.jsonl",
            b"{\"id\": \"z\", \"text\": \"one\"}\n{\"id\": \"z\", \"text\": \"two\"}\n",
            "line 2",
        ),
        (
            "clash.jsonl",
            b"{\"id\": \"a\", \"text\": \"again\"}\n",
            "good.jsonl",
        ),
        (
            "latin1.md",
            b"# Caf\xe9\n\nCaf\xe9 au lait.\n",
            "latin1.md:1",
        ),
    ];
    for (name, bytes, position) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = sandbox.run(&["corpus", "add", "c", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{name} was accepted");
        let err = stderr(&out);
        assert!(
            err.contains(name) && err.contains(position),
            "{name}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let shown = report(&sandbox.run(&["corpus", "show", "c", "--json"]));
    assert_eq!(shown["passages"], 1, "{shown}");
}

/// A task over the small corpus: `method` search, recall@3 against the gold ids.
fn recall_task(dir: &Path, corpus: &str, method: &str, questions: usize) -> PathBuf {
    let data = std::fs::read_to_string(rag_dir().join("data.jsonl")).unwrap();
    let known: Vec<String> = (1..=40).map(|i| format!("h{i:03}")).collect();
    let rows: Vec<&str> = data
        .lines()
        .filter(|l| {
            let row: Value = serde_json::from_str(l).unwrap();
            row["gold"]
                .as_array()
                .unwrap()
                .iter()
                .all(|g| known.contains(&g.as_str().unwrap().to_string()))
        })
        .take(questions)
        .collect();
    std::fs::write(dir.join("data.jsonl"), rows.join("\n") + "\n").unwrap();
    let task = format!(
        r#"
[task]
name = "recall-{method}"

[[steps]]
name = "search"
kind = "retrieve"
query = "question"
corpus = "{corpus}"
k = 3
method = "{method}"

[dataset]
path = "data.jsonl"
split = {{ train = 0.25, val = 0.25, test = 0.5 }}

[metric]
kind = "recall_at_k"
gold = "gold"
"#
    );
    let path = dir.join(format!("recall-{method}.toml"));
    std::fs::write(&path, task).unwrap();
    path
}

#[test]
fn bm25_and_embedding_ranks_repeat_and_replay_byte_for_byte() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let corpus = small_corpus(sandbox.dir.path(), 40);
    let added = add(&sandbox, "town", &[&corpus], &["--embed", "smollm2-135m"]);
    let embedded = &added["embedded"]["report"];
    assert_eq!(embedded["embedded"], added["change"]["passages"], "{added}");

    // An embedding method on a corpus not embedded is refused before a run begins.
    let other = sandbox.dir.path().join("other.jsonl");
    std::fs::write(&other, "{\"id\": \"1\", \"text\": \"a harbour\"}\n").unwrap();
    add(&sandbox, "bare", &[&other], &[]);
    let task = recall_task(sandbox.dir.path(), "bare", "embedding", 10);
    let out = sandbox.run(&["eval", task.to_str().unwrap(), "--split", "test"]);
    assert!(
        stderr(&out).contains("corpus embed bare --model smollm2-135m"),
        "{}",
        stderr(&out)
    );

    for method in ["bm25", "embedding", "hybrid"] {
        let query = "Which sculptor made the statue on North Pier?";
        let first = search(&sandbox, "town", query, method);
        assert_eq!(first.as_array().unwrap().len(), 5, "{method}: {first}");
        assert_eq!(first, search(&sandbox, "town", query, method), "{method}");

        // An evaluation computed twice gives the same passages and scores...
        let task = recall_task(sandbox.dir.path(), "town", method, 12);
        let eval = |extra: &[&str]| {
            let mut args = vec!["eval", task.to_str().unwrap(), "--split", "test", "--json"];
            args.extend(extra);
            report(&sandbox.run(&args))
        };
        let a = eval(&["--no-cache"]);
        let b = eval(&["--no-cache"]);
        assert_eq!(a["results"], b["results"], "{method}");
        assert!(a["mean"].as_f64().unwrap() > 0.0, "{method}: {a}");
        if method == "bm25" {
            // Lexical search finds nearly every answer in this small corpus.
            assert!(a["mean"].as_f64().unwrap() >= 0.8, "{a}");
        }
    }
    // ...and the runs that embedded (the corpus, the queries) replay byte for byte.
    let conn = db(&sandbox);
    let mut statement = conn
        .prepare(
            "SELECT r.uid, count(c.id) FROM runs r JOIN calls c ON c.run_id = r.id
             WHERE r.kind IN ('index', 'eval') GROUP BY r.id ORDER BY r.id",
        )
        .unwrap();
    let runs: Vec<(String, i64)> = statement
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(runs.len() >= 3, "{runs:?}");
    for (uid, calls) in runs {
        let replayed = report(&sandbox.run(&["replay", &uid, "--json"]));
        assert_eq!(replayed["diverged"], 0, "{replayed}");
        assert_eq!(replayed["identical"], calls, "{replayed}");
    }
}

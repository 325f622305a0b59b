//! Faults, through the binary on the real model: a store on a read-only mount, a disk that
//! fills up during an optimization, and several processes sharing one store.
//!
//! The mount tests make their own small tmpfs and need root (CI runs as root); elsewhere they
//! fail with a message saying so, unless TUNINGFORK_SKIP_MOUNT_TESTS=1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// A tmpfs of `size` mounted for one test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        if std::env::var_os("TUNINGFORK_SKIP_MOUNT_TESTS").is_some() {
            eprintln!("skipped: TUNINGFORK_SKIP_MOUNT_TESTS is set");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("cannot run mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs (this test needs root); set TUNINGFORK_SKIP_MOUNT_TESTS=1 to skip it"
        );
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(self.path())
            .output()
            .unwrap();
        stdout(&out)
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .unwrap()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// The binary with its store at `store`.
fn tuningfork(store: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tuningfork"))
        .args(args)
        .env("TUNINGFORK_STORE", store)
        .env("TUNINGFORK_MODELS", models_dir())
        .env_remove("TUNINGFORK_LOG")
        .output()
        .unwrap()
}

fn integrity(store: &Path) -> String {
    rusqlite::Connection::open(store)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap()
}

const SMALL_RUN: [&str; 6] = [
    "--max-labeled",
    "4",
    "--max-bootstrapped",
    "2",
    "--candidates",
    "2",
];

fn optimize_args(task: &Path) -> Vec<String> {
    let mut args = vec![
        "optimize".to_string(),
        task.display().to_string(),
        "--json".into(),
    ];
    args.extend(SMALL_RUN.iter().map(|s| s.to_string()));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn artifact_hashes(report: &Value) -> Vec<Value> {
    report["loops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["artifact_hash"].clone())
        .collect()
}

#[test]
fn a_store_on_a_read_only_mount_is_refused_for_writing_and_read_as_it_is() {
    let _serial = serial();
    let Some(fs) = Tmpfs::mount("8m") else { return };
    let store = fs.path().join("s.sqlite");
    ok(&tuningfork(
        &store,
        &["generate", "--max-tokens", "4", "Say hello."],
    ));
    fs.remount("ro");

    // A command that writes is refused before it looks for the model (here there is none
    // to find: had it looked first, it would say so), with the way out.
    let no_models = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tuningfork"))
        .args(["generate", "--max-tokens", "4", "Say hello."])
        .env("TUNINGFORK_STORE", &store)
        .env("TUNINGFORK_MODELS", no_models.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("read-only file system") && err.contains("--store"),
        "{err}"
    );
    assert!(!err.contains("attempt to write"), "{err}");

    // Commands that only read work on it as it is.
    let list = ok(&tuningfork(&store, &["runs", "list"]));
    assert!(
        list.contains("generate") && list.contains("completed"),
        "{list}"
    );
    let show = ok(&tuningfork(&store, &["runs", "show", "1", "--json"]));
    let show: Value = serde_json::from_str(&show).unwrap();
    assert_eq!(show["calls"].as_array().unwrap().len(), 1);
    ok(&tuningfork(&store, &["runs", "audit", "1"]));
    let bundle = tempfile::tempdir().unwrap();
    let out_file = bundle.path().join("run1.bundle");
    ok(&tuningfork(
        &store,
        &["runs", "export", "1", "--out", out_file.to_str().unwrap()],
    ));
    ok(&tuningfork(
        &store,
        &["runs", "verify", out_file.to_str().unwrap()],
    ));
    ok(&tuningfork(&store, &["artifacts", "list"]));
    ok(&tuningfork(&store, &["status"]));
}

#[test]
fn a_disk_that_fills_up_interrupts_the_run_without_harm_and_resume_finishes_it() {
    let _serial = serial();
    let Some(fs) = Tmpfs::mount("4m") else { return };
    // The run's artifact when nothing goes wrong.
    let reference = Sandbox::new();
    let (task, _) = small_task(reference.dir.path(), 24, 12, 12);
    let expected = artifact_hashes(&report(&reference.run(&strs(&optimize_args(&task)))));

    let store = fs.path().join("s.sqlite");
    let work = tempfile::tempdir().unwrap();
    let (task, _) = small_task(work.path(), 24, 12, 12);
    // An empty store, then a ballast file that leaves about 256 KiB free: the run needs more.
    ok(&tuningfork(&store, &["runs", "gc", "--keep-days", "1"]));
    let ballast: PathBuf = fs.path().join("ballast");
    let fill = fs.available().saturating_sub(256 * 1024);
    std::fs::write(&ballast, vec![0u8; fill as usize]).unwrap();

    let out = tuningfork(&store, &strs(&optimize_args(&task)));
    assert!(!out.status.success(), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("disk full"), "{err}");
    assert!(err.contains("tuningfork resume"), "{err}");
    assert_eq!(integrity(&store), "ok");
    let conn = rusqlite::Connection::open(&store).unwrap();
    let (status, calls): (String, i64) = conn
        .query_row(
            "SELECT status, (SELECT COUNT(*) FROM calls) FROM runs WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    drop(conn);
    assert_eq!(status, "interrupted");
    assert!(calls > 0, "the run stopped before storing anything");
    // The space set aside was spent on recording that.
    assert!(!fs.path().join("s.sqlite-reserve").exists());

    // Space freed: the run carries on from what it stored, to the same artifact.
    std::fs::remove_file(&ballast).unwrap();
    let resumed = report(&tuningfork(&store, &["resume", "1", "--json"]));
    assert_eq!(resumed["status"], "completed", "{resumed}");
    assert_eq!(artifact_hashes(&resumed), expected);
    assert_eq!(integrity(&store), "ok");
    assert!(fs.path().join("s.sqlite-reserve").exists());
}

#[test]
fn skipped_lines_and_dropped_rows_are_recorded_with_the_run_and_shown_in_its_audit() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let dir = sandbox.dir.path();
    let (task, _) = small_task(dir, 24, 12, 12);
    // A broken line in train, and a test row repeated in val.
    let mut train = std::fs::read_to_string(dir.join("train.jsonl")).unwrap();
    train.insert_str(0, "{\"review\": \"half a line\n");
    std::fs::write(dir.join("train.jsonl"), train).unwrap();
    let test_row = std::fs::read_to_string(dir.join("test.jsonl"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let mut val = std::fs::read_to_string(dir.join("val.jsonl")).unwrap();
    val.push_str(&test_row);
    val.push('\n');
    std::fs::write(dir.join("val.jsonl"), val).unwrap();

    // Refused by default, with the line and the way to go on.
    let out = sandbox.run(&["eval", task.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("train.jsonl:1") && err.contains("broken_lines = \"skip\""),
        "{err}"
    );

    let text = std::fs::read_to_string(&task).unwrap();
    let text = text.replace(
        "[dataset]\n",
        "[dataset]\nbroken_lines = \"skip\"\noverlap = \"drop\"\n",
    );
    std::fs::write(&task, text).unwrap();
    let run = report(&sandbox.run(&strs(&optimize_args(&task))));
    assert_eq!(run["status"], "completed", "{run}");
    let audit = ok(&sandbox.run(&["runs", "audit", "1"]));
    assert!(
        audit.contains("skipped 1 broken line ") && audit.contains("train.jsonl:1"),
        "{audit}"
    );
    assert!(
        audit.contains("dropped 1 train/val row ") && audit.contains("val.jsonl:13"),
        "{audit}"
    );
    assert!(audit.contains("val   12 rows"), "{audit}");
}

/// Calls per run, and each run's computed calls with a request computed twice.
fn calls_by_run(store: &Path) -> Vec<(i64, i64, i64)> {
    let conn = rusqlite::Connection::open(store).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT run_id, COUNT(*),
               (SELECT COUNT(*) FROM (SELECT request_hash FROM calls d
                  WHERE d.run_id = c.run_id AND d.cached = 0 AND d.error IS NULL
                  GROUP BY request_hash HAVING COUNT(*) > 1))
             FROM calls c GROUP BY run_id ORDER BY run_id",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn two_optimizations_and_an_evaluation_share_one_store_at_the_same_time() {
    let _serial = serial();
    let commands = |task: &Path| -> Vec<Vec<String>> {
        let mut first = optimize_args(task);
        first.extend(["--seed".into(), "1".into()]);
        let mut second = optimize_args(task);
        second.extend(["--seed".into(), "2".into()]);
        let eval = vec![
            "eval".to_string(),
            task.display().to_string(),
            "--json".into(),
        ];
        vec![first, second, eval]
    };
    // Each alone, in a store of its own: the reference outputs and call counts.
    let mut alone = Vec::new();
    for i in 0..3 {
        let sandbox = Sandbox::new();
        let (task, _) = small_task(sandbox.dir.path(), 24, 12, 12);
        let out = report(&sandbox.run(&strs(&commands(&task)[i])));
        let calls = calls_by_run(&sandbox.store())[0].1;
        alone.push((out, calls));
    }

    // All three at once on one store, a thread each (three engines on two cores would only
    // fight over them; outputs do not depend on thread counts).
    let sandbox = Sandbox::new();
    let (task, _) = small_task(sandbox.dir.path(), 24, 12, 12);
    let children: Vec<_> = commands(&task)
        .iter()
        .map(|args| {
            let mut args = strs(args);
            args.extend(["--threads", "1"]);
            sandbox
                .command_in(&models_dir(), &args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<Value> = children
        .into_iter()
        .map(|c| report(&c.wait_with_output().unwrap()))
        .collect();
    for (i, (together, (reference, _))) in outputs.iter().zip(&alone).enumerate() {
        if i < 2 {
            assert_eq!(artifact_hashes(together), artifact_hashes(reference));
        } else {
            assert_eq!(together["score"], reference["score"], "{together}");
        }
    }
    // Every run has every one of its calls, once; none computed a request twice.
    let runs = calls_by_run(&sandbox.store());
    assert_eq!(runs.len(), 3, "{runs:?}");
    let mut counts: Vec<i64> = runs.iter().map(|r| r.1).collect();
    let mut expected: Vec<i64> = alone.iter().map(|a| a.1).collect();
    counts.sort_unstable();
    expected.sort_unstable();
    assert_eq!(counts, expected);
    assert!(runs.iter().all(|r| r.2 == 0), "{runs:?}");
    assert_eq!(integrity(&sandbox.store()), "ok");
}

//! Program artifacts through the command line: create, export, import, diff, promote, roll
//! back, and evaluate a stored artifact.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/examples")
        .join(name)
        .join("task.toml")
}

struct Cli {
    store: PathBuf,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_tuningfork"))
            .args(args)
            .env("TUNINGFORK_STORE", &self.store)
            .env("TUNINGFORK_MODELS", models_dir())
            .output()
            .unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!err.contains("panicked"), "{err}");
        err
    }
}

#[test]
fn artifacts_round_trip_promote_roll_back_and_evaluate() {
    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        store: dir.path().join("s.sqlite"),
    };
    let task = example("sentiment");
    let task = task.to_str().unwrap();

    let baseline = cli.ok(&["artifacts", "create", task]);
    assert_eq!(baseline.len(), 64);
    // Creating it again stores nothing new: same content, same hash.
    assert_eq!(cli.ok(&["artifacts", "create", task]), baseline);

    // Export, add a demonstration by hand, import: a new artifact.
    let exported = dir.path().join("baseline.json");
    cli.ok(&[
        "artifacts",
        "export",
        &baseline[..10],
        "--out",
        exported.to_str().unwrap(),
    ]);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&exported).unwrap()).unwrap();
    assert_eq!(json["format"], "tuningfork.program");
    json["program"]["steps"][0]["demos"] = serde_json::json!([
        { "inputs": { "review": "The lamp stopped working after a week." },
          "outputs": { "sentiment": "negative" } }
    ]);
    let edited = dir.path().join("edited.json");
    std::fs::write(&edited, json.to_string()).unwrap();
    let with_demo = cli.ok(&["artifacts", "import", edited.to_str().unwrap()]);
    assert_ne!(with_demo, baseline);

    let diff = cli.ok(&["artifacts", "diff", &baseline, &with_demo]);
    assert!(
        diff.contains("demo added") && diff.contains("stopped working"),
        "{diff}"
    );
    let list = cli.ok(&["artifacts", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");

    // Promote, promote again, roll back.
    assert!(cli
        .ok(&["artifacts", "promote", "prod", &baseline])
        .ends_with(&baseline));
    assert!(cli
        .ok(&["artifacts", "promote", "prod", &with_demo])
        .ends_with(&with_demo));
    assert!(cli
        .ok(&["artifacts", "rollback", "prod"])
        .ends_with(&baseline));
    assert!(cli
        .fails(&["artifacts", "rollback", "never-promoted"])
        .contains("never-promoted"));

    // Evaluate and run the stored artifacts.
    let out = cli.ok(&[
        "eval",
        task,
        "--split",
        "val",
        "--program",
        &with_demo,
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["failed"], 0);
    let prediction = cli.ok(&[
        "predict",
        task,
        "--program",
        "prod",
        "--input",
        r#"{"review": "Great kettle, works perfectly."}"#,
    ]);
    assert!(prediction.contains("sentiment"));
    let store = tuningfork::store::Store::open(&cli.store).unwrap();
    let runs = store.list_runs(10).unwrap();
    let eval_run = runs.iter().find(|r| r.run.kind == "eval").unwrap();
    assert_eq!(
        eval_run.run.config["details"]["artifact"],
        with_demo.as_str()
    );
    assert_eq!(
        eval_run.run.config["program"]["steps"][0]["demos"][0]["outputs"]["sentiment"],
        "negative"
    );

    // Refusals: another task's artifact, a foreign file, an unknown reference.
    let contacts = example("contacts");
    let err = cli.fails(&["eval", contacts.to_str().unwrap(), "--program", &baseline]);
    assert!(err.contains("made for task `sentiment`"), "{err}");
    let foreign = dir.path().join("foreign.json");
    std::fs::write(&foreign, r#"{"format": "dspy", "version": 1}"#).unwrap();
    let err = cli.fails(&["artifacts", "import", foreign.to_str().unwrap()]);
    assert!(
        err.contains("foreign.json") && err.contains("format"),
        "{err}"
    );
    let err = cli.fails(&["artifacts", "show", "zzz"]);
    assert!(err.contains("no artifact"), "{err}");
}

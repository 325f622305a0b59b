//! Continuous optimization through the binary, on the real model: jobs queued and run by a
//! worker, the promotion gate, re-runs when the data changes, a worker killed with SIGKILL and
//! restarted, a bad job that does not stop the worker, reports opened in a real browser, and
//! the regression check.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

/// Both outputs of a command that must have succeeded (progress goes to standard error).
fn ok(output: &std::process::Output) -> String {
    common::ok(output) + &stderr(output)
}

/// A job's cycles, oldest first.
fn cycles(sandbox: &Sandbox, job: i64) -> Vec<Value> {
    let shown = report(&sandbox.run(&["queue", "show", &job.to_string(), "--json"]));
    shown["cycles"].as_array().unwrap().clone()
}

fn promoted(sandbox: &Sandbox, name: &str) -> Option<String> {
    db(sandbox)
        .query_row(
            "SELECT hash FROM promotions WHERE name = ?1 ORDER BY id DESC LIMIT 1",
            [name],
            |r| r.get(0),
        )
        .ok()
}

#[test]
fn a_queued_job_is_run_by_a_worker_gated_on_test_re_run_on_change_and_reported() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let dir = sandbox.dir.path();
    let (task, _) = small_task(dir, 8, 10, 10);
    let task = task.to_str().unwrap();
    let notified = dir.join("notified.json");
    let notify = format!("tee {}", notified.display());

    // A job that promotes any improvement, told to a command, re-run when the data changes.
    let added = ok(&sandbox.run(&[
        "queue",
        "add",
        task,
        "--optimizer",
        "bootstrap",
        "--promote",
        "prod",
        "--margin",
        "0",
        "--on-change",
        "--notify",
        &notify,
    ]));
    assert!(added.contains("job 1 queued"), "{added}");
    let status = ok(&sandbox.run(&["status"]));
    assert!(
        status.contains("queued") && status.contains("on change"),
        "{status}"
    );

    let worked = ok(&sandbox.run(&["worker", "--drain"]));
    assert!(worked.contains("1 cycles (1 completed"), "{worked}");
    let first = &cycles(&sandbox, 1)[0];
    assert_eq!(first["status"], "completed", "{first}");
    assert_eq!(first["trigger"], "queued");
    let decision = &first["decision"];
    let (candidate, production) = (
        decision["candidate_test"].as_f64().unwrap(),
        decision["production_test"].as_f64().unwrap(),
    );
    // Both scores come from the same run; the gate followed them.
    assert_eq!(decision["promoted"], candidate > production, "{decision}");
    assert!(
        candidate > production,
        "the bootstrap improves this task: {decision}"
    );
    assert_eq!(
        promoted(&sandbox, "prod").unwrap(),
        first["artifact"].as_str().unwrap()
    );
    // The notification got the same summary the cycle recorded.
    let told: Value = serde_json::from_str(&std::fs::read_to_string(&notified).unwrap()).unwrap();
    assert_eq!(told["run"], first["run"]);
    assert_eq!(told["decision"], *decision);
    assert_eq!(first["summary"]["notify"]["exit"], 0);

    // Nothing changed: nothing is due.
    let idle = ok(&sandbox.run(&["worker", "--drain"]));
    assert!(idle.contains("0 cycles"), "{idle}");
    assert_eq!(cycles(&sandbox, 1).len(), 1);

    // Rows added to train change the data: the job runs again, from the promoted program.
    let data = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples/sentiment/data.jsonl"),
    )
    .unwrap();
    let extra: Vec<&str> = data.lines().skip(28).take(2).collect();
    let mut train = std::fs::read_to_string(dir.join("train.jsonl")).unwrap();
    train.push_str(&(extra.join("\n") + "\n"));
    std::fs::write(dir.join("train.jsonl"), train).unwrap();
    ok(&sandbox.run(&["worker", "--drain"]));
    let all = cycles(&sandbox, 1);
    assert_eq!(all.len(), 2, "{all:?}");
    let second = &all[1];
    assert_eq!(second["trigger"], "change");
    assert_eq!(second["status"], "completed", "{second}");
    assert_ne!(second["run"], first["run"]);
    // It started from production: its baseline is the promoted program's score.
    assert_eq!(
        second["decision"]["production"], first["artifact"],
        "{second}"
    );
    assert_eq!(
        second["decision"]["production_test"].as_f64().unwrap(),
        candidate
    );

    // A job whose results must beat production by more than any score can: never promoted,
    // and the decision says so with both scores.
    let before = promoted(&sandbox, "prod");
    ok(&sandbox.run(&[
        "queue",
        "add",
        task,
        "--optimizer",
        "random-search",
        "--candidates",
        "2",
        "--promote",
        "prod",
        "--margin",
        "1",
    ]));
    ok(&sandbox.run(&["worker", "--drain"]));
    let gated = &cycles(&sandbox, 2)[0];
    assert_eq!(gated["status"], "completed", "{gated}");
    assert_eq!(gated["decision"]["promoted"], false, "{gated}");
    assert!(gated["decision"]["candidate_test"].is_number());
    assert!(gated["decision"]["production_test"].is_number());
    assert!(!gated["decision"]["reason"].as_str().unwrap().is_empty());
    assert_eq!(promoted(&sandbox, "prod"), before);
    let listed = report(&sandbox.run(&["queue", "list", "--all", "--json"]));
    assert_eq!(listed["jobs"][1]["status"], "done", "{listed}");
    assert_eq!(listed["jobs"][0]["status"], "waiting", "{listed}");

    // Reports: one self-contained page per run, and the task's history, opened in Chromium.
    let run = second["run"].as_str().unwrap();
    let page = dir.join("report.html");
    ok(&sandbox.run(&["report", run, "--out", page.to_str().unwrap()]));
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        !html.contains("https://") && !html.contains("src=") && !html.contains("<link"),
        "the page fetches nothing"
    );
    let dom = render(&page);
    assert!(dom.contains("best validation score by calls"), "{dom}");
    assert!(dom.contains("<svg"), "the charts are inline SVG");
    assert!(dom.contains("Lowest-scoring test examples"));
    assert!(dom.contains("The chosen program against its parent"));
    let history = dir.join("history.html");
    ok(&sandbox.run(&[
        "report",
        "--task",
        "sentiment",
        "--out",
        history.to_str().unwrap(),
    ]));
    let dom = render(&history);
    assert!(dom.contains("Promotion gate decisions"), "{dom}");
    assert!(dom.contains("kept production") && dom.contains("promoted"));
}

/// The page's DOM as headless Chromium builds it.
fn render(page: &Path) -> String {
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--proxy-server=127.0.0.1:9",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("Chromium runs (.ci/run installs it: apt-get install chromium)");
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

#[test]
fn a_worker_killed_mid_job_is_taken_over_and_finishes_with_the_same_artifact() {
    let _serial = serial();
    let job = |sandbox: &Sandbox| {
        let (task, _) = small_task(sandbox.dir.path(), 12, 10, 10);
        ok(&sandbox.run(&[
            "queue",
            "add",
            task.to_str().unwrap(),
            "--optimizer",
            "random-search",
            "--candidates",
            "3",
        ]));
    };
    let reference = Sandbox::new();
    job(&reference);
    ok(&reference.run(&["worker", "--drain"]));
    let uninterrupted = &cycles(&reference, 1)[0];

    let sandbox = Sandbox::new();
    job(&sandbox);
    let child = sandbox
        .command_in(&models_dir(), &["worker", "--drain"])
        .spawn()
        .unwrap();
    kill_when(
        &sandbox,
        child,
        "SELECT COUNT(*) FROM candidate_results",
        25,
    );
    let left: String = db(&sandbox)
        .query_row("SELECT status FROM jobs WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, "running", "the killed worker still holds the job");
    let resumed = ok(&sandbox.run(&["worker", "--drain"]));
    assert!(resumed.contains("(resumed)"), "{resumed}");
    let all = cycles(&sandbox, 1);
    assert_eq!(all.len(), 1, "the same cycle, resumed: {all:?}");
    assert_eq!(all[0]["status"], "completed", "{all:?}");
    assert_eq!(all[0]["artifact"], uninterrupted["artifact"]);
    assert_eq!(
        all[0]["summary"]["loops"][0]["optimized"],
        uninterrupted["summary"]["loops"][0]["optimized"]
    );
    // One run, resumed, not a second one.
    assert_eq!(count(&db(&sandbox), "SELECT COUNT(*) FROM runs"), 1);
    let status: String = db(&sandbox)
        .query_row("SELECT status FROM jobs WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "done");
}

#[test]
fn bad_jobs_are_refused_when_added_and_one_that_fails_later_does_not_stop_the_worker() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let dir = sandbox.dir.path();
    let (task, _) = small_task(dir, 6, 6, 6);
    let task = task.to_str().unwrap();
    let refused = |args: &[&str], says: &str| {
        let output = sandbox.run(args);
        assert!(!output.status.success(), "{args:?} was accepted");
        let text = stderr(&output);
        assert!(text.contains(says), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{text}");
    };
    refused(&["queue", "add", "missing.toml"], "missing.toml");
    refused(
        &["queue", "add", task, "--notify", "no-such-program-anywhere"],
        "no-such-program-anywhere",
    );
    refused(&["queue", "add", task, "--every", "soon"], "--every");
    refused(
        &["queue", "add", task, "--promote", "abcdef12"],
        "looks like a hash",
    );
    refused(
        &["queue", "add", task, "--program", "nothing-by-this-name"],
        "nothing-by-this-name",
    );
    refused(
        &[
            "queue",
            "add",
            task,
            "--optimizer",
            "labeled",
            "--max-labeled",
            "0",
        ],
        "labeled",
    );
    assert_eq!(count(&db(&sandbox), "SELECT COUNT(*) FROM jobs"), 0);

    // A job whose task file is broken after it was added fails with the reason; the next job
    // still runs.
    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    let (good, _) = small_task(&other, 6, 6, 6);
    ok(&sandbox.run(&["queue", "add", task, "--optimizer", "labeled"]));
    ok(&sandbox.run(&[
        "queue",
        "add",
        good.to_str().unwrap(),
        "--optimizer",
        "labeled",
    ]));
    std::fs::write(task, "[task\nname = broken").unwrap();
    let worked = ok(&sandbox.run(&["worker", "--drain"]));
    assert!(worked.contains("1 completed, 1 failed"), "{worked}");
    let listed = report(&sandbox.run(&["queue", "list", "--all", "--json"]));
    assert_eq!(listed["jobs"][0]["status"], "failed", "{listed}");
    assert!(
        listed["jobs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("task.toml"),
        "{listed}"
    );
    assert_eq!(listed["jobs"][1]["status"], "done", "{listed}");
    // Cancelling: a finished job cannot be, a queued one can and never runs.
    refused(&["queue", "cancel", "2"], "already done");
    ok(&sandbox.run(&[
        "queue",
        "add",
        good.to_str().unwrap(),
        "--optimizer",
        "labeled",
    ]));
    ok(&sandbox.run(&["queue", "cancel", "3"]));
    let idle = ok(&sandbox.run(&["worker", "--drain"]));
    assert!(idle.contains("0 cycles"), "{idle}");
}

#[test]
fn a_scheduled_job_runs_again_when_it_is_due() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let (task, _) = small_task(sandbox.dir.path(), 6, 6, 6);
    let task = task.to_str().unwrap();
    ok(&sandbox.run(&[
        "queue",
        "add",
        task,
        "--optimizer",
        "labeled",
        "--every",
        "2s",
    ]));
    // Draining runs a due job once, even when its schedule is shorter than a cycle.
    let first = ok(&sandbox.run(&["worker", "--drain"]));
    assert!(first.contains("1 cycles (1 completed"), "{first}");
    let listed = report(&sandbox.run(&["queue", "list", "--json"]));
    assert_eq!(listed["jobs"][0]["status"], "waiting", "{listed}");
    assert!(listed["jobs"][0]["next_at"].is_string(), "{listed}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    ok(&sandbox.run(&["worker", "--drain"]));
    let all = cycles(&sandbox, 1);
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1]["trigger"], "schedule");
    // The same inputs and seed make the same artifact.
    assert_eq!(all[0]["artifact"], all[1]["artifact"]);
}

#[test]
fn check_fails_when_the_promoted_program_gets_worse() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let (task, _) = small_task(sandbox.dir.path(), 8, 10, 10);
    let task = task.to_str().unwrap();
    let optimized = report(&sandbox.run(&[
        "optimize",
        task,
        "--optimizer",
        "bootstrap",
        "--promote",
        "prod",
        "--json",
    ]));
    let outcome = &optimized["loops"][0];
    let (better, worse) = (
        outcome["optimized"]["test"].as_f64().unwrap(),
        outcome["baseline"]["test"].as_f64().unwrap(),
    );
    assert!(better > worse, "{outcome}");
    let check = |min: &str| {
        sandbox.run(&[
            "check",
            task,
            "--program",
            "prod",
            "--min-score",
            min,
            "--json",
        ])
    };
    let passed = report(&check("0.3"));
    assert_eq!(passed["passed"], true, "{passed}");
    assert_eq!(passed["score"].as_f64().unwrap(), better);
    // Below the bar.
    let low = check("0.95");
    assert_eq!(low.status.code(), Some(1), "{}", stdout(&low));
    // The promoted name now points at the worse program: below the last check's score.
    ok(&sandbox.run(&[
        "artifacts",
        "promote",
        "prod",
        outcome["baseline_hash"].as_str().unwrap(),
    ]));
    let regressed = check("0.3");
    assert_eq!(regressed.status.code(), Some(1), "{}", stdout(&regressed));
    let value: Value = serde_json::from_str(&stdout(&regressed)).unwrap();
    assert_eq!(value["passed"], false);
    assert_eq!(value["score"].as_f64().unwrap(), worse);
    assert!(
        value["failures"][0]
            .as_str()
            .unwrap()
            .contains("below the last passed check"),
        "{value}"
    );
    assert!(
        !value["regressions"].as_array().unwrap().is_empty(),
        "{value}"
    );
    let text = stdout(&sandbox.run(&["check", task, "--program", "prod", "--min-score", "0.3"]));
    assert!(
        text.contains("scored lower than at the last passed check"),
        "{text}"
    );
    assert!(text.contains("check FAILED"), "{text}");
}

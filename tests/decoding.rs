//! Grammar-aware decoding through the binary, on the real model: replies that always finish
//! within `max_tokens` (the cut values marked), a budget too small for any reply refused
//! before a run begins, `max_chars` on text fields, and the evaluation benchmark's
//! jump-forward spans that leave every output unchanged.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn contacts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples/contacts")
}

/// The bundled contacts task with its `[generation]` section replaced by `generation`.
fn contacts_with(dir: &Path, generation: &str) -> PathBuf {
    let task = std::fs::read_to_string(contacts_dir().join("task.toml")).unwrap();
    let cut = task.find("[generation]").unwrap();
    let task = format!("{}[generation]\n{generation}\n", &task[..cut]).replace(
        "path = \"data.jsonl\"",
        &format!(
            "path = {:?}",
            contacts_dir().join("data.jsonl").display().to_string()
        ),
    );
    let path = dir.join("contacts.toml");
    std::fs::write(&path, task).unwrap();
    path
}

fn eval(sandbox: &Sandbox, task: &Path) -> Value {
    report(&sandbox.run(&[
        "eval",
        &task.display().to_string(),
        "--split",
        "val",
        "--json",
    ]))
}

/// Every reply of the contacts task parses with 14 tokens, where the model's own replies need
/// far more: values are cut short to finish the reply, and marked where they were.
#[test]
fn a_tight_budget_never_leaves_a_reply_unparsable() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let task = contacts_with(sandbox.dir.path(), "max_tokens = 14");
    let report = eval(&sandbox, &task);
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), 30);
    assert_eq!(report["failed"], 0, "{report}");
    for r in results {
        assert!(r["error"].is_null(), "{r}");
        let outputs = &r["outputs"];
        for field in ["name", "city", "quantity"] {
            assert!(!outputs[field].is_null(), "{field} missing in {r}");
        }
    }
    let cut: Vec<&Value> = results
        .iter()
        .filter(|r| r["cut_short"].as_array().is_some_and(|c| !c.is_empty()))
        .collect();
    assert_eq!(report["cut"].as_u64(), Some(cut.len() as u64));
    assert!(cut.len() >= 10, "few replies were cut: {report}");
    // A value in the middle of the reply was closed early by the budget.
    assert!(
        cut.iter().any(|r| r["cut_short"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "extract.name" || f == "extract.city")),
        "{report}"
    );
    // The stored calls say where the budget took over, and stay within it.
    let conn = db(&sandbox);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM calls WHERE completion_tokens > 14"
        ),
        0
    );
    assert!(count(&conn, "SELECT COUNT(*) FROM calls WHERE cut_at IS NOT NULL") >= 10);
    // The trace shows it too.
    let traces: Vec<String> = conn
        .prepare("SELECT trace_json FROM eval_results")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(traces.iter().any(|t| t.contains("\"cut_short\":[")));

    // With the task's own budget nothing is cut.
    let roomy = contacts_with(sandbox.dir.path(), "max_tokens = 48");
    let report = eval(&sandbox, &roomy);
    assert_eq!(
        (report["failed"].as_u64(), report["cut"].as_u64()),
        (Some(0), Some(0))
    );
}

/// A budget below the shortest reply the fields allow is refused before any run begins, with
/// the minimum it needs.
#[test]
fn a_budget_too_small_for_any_reply_is_refused_up_front() {
    let sandbox = Sandbox::new();
    let task = contacts_with(sandbox.dir.path(), "max_tokens = 5");
    let out = sandbox.run(&["eval", &task.display().to_string()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("max_tokens = 5"), "{err}");
    assert!(err.contains("at least 12"), "{err}");
    assert!(err.contains("step `extract`"), "{err}");
    let conn = db(&sandbox);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM runs"), 0);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM calls"), 0);
}

/// A long-output task: five text fields read from long tickets, with a budget that the model,
/// which tends to copy the ticket into the first field, cannot fill on its own. Every reply
/// parses; `max_chars` bounds a field.
#[test]
fn a_long_output_task_parses_every_reply() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let dir = sandbox.dir.path();
    let tickets = [
        (
            "Marta Silva",
            "kettle K200",
            "it stops heating after two minutes",
            "descaled it twice",
            "a replacement",
        ),
        (
            "Jonas Berg",
            "router R5",
            "the wifi drops every evening",
            "restarted it and moved it",
            "a technician visit",
        ),
        (
            "Olga Novak",
            "blender B9",
            "the lid cracked on the first day",
            "nothing yet",
            "a new lid",
        ),
        (
            "Ben Okafor",
            "lamp L3",
            "it flickers when dimmed",
            "changed the bulb",
            "a refund",
        ),
        (
            "Kira Sato",
            "heater H1",
            "it smells of burning plastic",
            "unplugged it at once",
            "a safety check",
        ),
        (
            "Pedro Lima",
            "scale S2",
            "it shows the wrong weight",
            "replaced the batteries",
            "calibration help",
        ),
        (
            "Anna Weber",
            "fan F7",
            "one blade is loose",
            "tightened the screw",
            "a spare blade",
        ),
        (
            "Liam Walsh",
            "toaster T4",
            "only one side toasts",
            "cleaned the crumbs out",
            "a repair",
        ),
    ];
    let rows: Vec<String> = tickets
        .iter()
        .map(|(customer, product, problem, tried, request)| {
            serde_json::json!({
                "ticket": format!(
                    "Hello support team, my name is {customer} and I bought the {product} from \
                     your shop last month. Since last week {problem}. I have already {tried}, \
                     as your manual suggests, but it did not help at all. Could you please \
                     arrange {request}? Thank you very much, {customer}."
                ),
                "customer": customer, "product": product, "problem": problem,
                "tried": tried, "request": request,
            })
            .to_string()
        })
        .collect();
    std::fs::write(dir.join("tickets.jsonl"), rows.join("\n") + "\n").unwrap();
    let task = dir.join("tickets.toml");
    std::fs::write(
        &task,
        r#"[task]
name = "tickets"
model = "smollm2-135m"
seed = 3

[[steps]]
name = "triage"
kind = "predict"
instructions = "Read the support ticket and fill in each field."
inputs = [{ name = "ticket" }]
outputs = [
  { name = "customer", type = "text", description = "the customer's full name" },
  { name = "product", type = "text" },
  { name = "problem", type = "text", max_chars = 30 },
  { name = "tried", type = "text", description = "what the customer already tried" },
  { name = "request", type = "text", description = "what the customer asks for" },
]

[dataset]
path = "tickets.jsonl"
split = { train = 0.25, val = 0.5, test = 0.25, seed = 1 }

[metric]
kind = "per_field"
fields = ["customer", "product", "problem", "tried", "request"]

[generation]
max_tokens = 40
"#,
    )
    .unwrap();
    let report = eval(&sandbox, &task);
    let results = report["results"].as_array().unwrap();
    assert!(!results.is_empty());
    assert_eq!(report["failed"], 0, "{report}");
    for r in results {
        let problem = r["outputs"]["problem"].as_str().unwrap();
        assert!(problem.chars().count() <= 30, "{problem:?}");
        assert!(!r["outputs"]["request"].is_null(), "{r}");
    }
    assert!(report["cut"].as_u64().unwrap() > 0, "{report}");
}

/// `bench --eval` decodes the split stepwise and with jump-forward spans; with one slot every
/// forced span goes ahead, and the outputs are the same.
#[test]
fn jump_forward_spans_change_no_output() {
    let _serial = serial();
    let sandbox = Sandbox::new();
    let task = contacts_dir().join("task.toml");
    let report = report(&sandbox.run(&[
        "bench",
        "--eval",
        &task.display().to_string(),
        "--slots",
        "1",
        "--json",
    ]));
    assert_eq!(report["identical_outputs"], true, "{report}");
    let modes = report["modes"].as_array().unwrap();
    assert_eq!(modes.len(), 2);
    let (stepwise, jumping) = (&modes[0]["stats"], &modes[1]["stats"]);
    assert_eq!(stepwise["forced_tokens"], 0);
    assert_eq!(stepwise["generated_tokens"], jumping["generated_tokens"]);
    let forced = jumping["forced_tokens"].as_u64().unwrap();
    let generated = jumping["generated_tokens"].as_u64().unwrap();
    assert!(
        forced * 5 >= generated,
        "{forced} of {generated} jump-forwarded"
    );
    assert!(
        jumping["passes"].as_u64() < stepwise["passes"].as_u64(),
        "{report}"
    );
    assert_eq!(modes[0]["mean_score"], modes[1]["mean_score"]);
}

//! `tuningfork serve` as applications meet it: the real binary on 127.0.0.1 with the real
//! model, driven by the official `openai` Python package and by plain HTTP; traces in the store;
//! promotions followed without a restart; traces turned into dataset rows.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{count, db, serial, small_task, stderr, stdout, Sandbox};
use serde_json::{json, Value};

/// A running server; killed when dropped.
struct Served {
    child: Child,
    addr: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `serve` with `args` and waits for its "listening on" line.
fn serve(sandbox: &Sandbox, args: &[&str]) -> Served {
    let mut command = sandbox.command_in(&common::models_dir(), &["serve"]);
    command
        .args(args)
        .env_remove(tuningfork::serve::API_KEY_ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    let Some(rest) = line.strip_prefix("listening on http://") else {
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        panic!("serve did not start: {line}\n{err}");
    };
    let addr = rest.split_whitespace().next().unwrap().to_string();
    Served { child, addr }
}

/// Asks a server to stop the way a service manager does: SIGTERM.
fn terminate(server: &Served) {
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

/// Waits for a server to exit and checks that it exited cleanly.
fn exited_cleanly(mut server: Served) {
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "serve exited with {exit}");
}

/// Stops a server with SIGTERM and checks that it exits cleanly.
fn stop(server: Served) {
    terminate(&server);
    exited_cleanly(server);
}

/// One HTTP/1.1 request; returns the status, the headers (lowercase names) and the body.
fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_string())
}

fn json_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn python_client(addr: &str, key: &str, mode: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/openai_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args([&format!("http://{addr}"), key, mode])
        .output()
        .expect("python3 runs (CI installs it with the `openai` package)");
    assert!(
        out.status.success(),
        "the openai client failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    json_body(stdout(&out).trim())
}

fn sentiment_task() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/examples/sentiment/task.toml")
        .display()
        .to_string()
}

#[test]
fn the_openai_client_chats_streams_follows_schemas_and_calls_programs() {
    let _one_engine = serial();
    let sandbox = Sandbox::new();
    let task = sentiment_task();
    let server = serve(
        &sandbox,
        &[
            "--addr",
            "127.0.0.1:0",
            "--model",
            "smollm2-135m",
            "--program",
            &task,
        ],
    );
    let summary = python_client(&server.addr, "unused", "all");
    assert!(summary["program"]["sentiment"].is_string(), "{summary}");

    // Every request is a trace under the server's run, refused ones included.
    let conn = db(&sandbox);
    let serve_run: i64 = conn
        .query_row("SELECT id FROM runs WHERE kind = 'serve'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM traces"), 11);
    assert_eq!(
        count(
            &conn,
            "SELECT COUNT(*) FROM traces WHERE status = 404 AND model = 'no-such-model'"
        ),
        1
    );
    // The program's trace names its artifact and the calls it made, recorded under the run.
    let (artifact, calls): (String, String) = conn
        .query_row(
            "SELECT artifact_hash, call_ids_json FROM traces WHERE model = 'program:sentiment'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(artifact.len(), 64);
    let call: i64 = serde_json::from_str::<Vec<i64>>(&calls).unwrap()[0];
    let run_of_call: i64 = conn
        .query_row("SELECT run_id FROM calls WHERE id = ?1", [call], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(run_of_call, serve_run);
    // The streamed text is what the store holds for its call.
    let streamed = summary["streamed"].as_str().unwrap();
    assert!(
        count(
            &conn,
            &format!(
                "SELECT COUNT(*) FROM calls WHERE cached = 0 AND output = '{}'",
                streamed.replace('\'', "''")
            )
        ) == 1,
        "{streamed}"
    );

    // Plain HTTP: a malformed body, an unknown route, the native endpoint, metrics.
    let (status, _, body) = http(
        &server.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        "{\"model\": ",
    );
    assert_eq!(status, 400);
    assert!(json_body(&body)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let (status, _, _) = http(&server.addr, "GET", "/v2/nothing", &[], "");
    assert_eq!(status, 404);
    let (status, headers, body) = http(
        &server.addr,
        "POST",
        "/v1/programs/sentiment/predict",
        &[],
        &json!({"inputs": {"review": "Works as described."}, "user": "tester"}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let answer = json_body(&body);
    assert_eq!(answer["artifact"].as_str(), Some(artifact.as_str()));
    assert!(headers.contains(&format!(
        "x-tuningfork-trace: {}",
        answer["trace_id"].as_str().unwrap()
    )));
    let (status, _, body) = http(
        &server.addr,
        "POST",
        "/v1/programs/sentiment/predict",
        &[],
        &json!({"inputs": {"text": "no review field"}}).to_string(),
    );
    assert_eq!(status, 400);
    assert!(body.contains("`review`"), "{body}");
    let (_, _, metrics) = http(&server.addr, "GET", "/metrics", &[], "");
    assert!(
        metrics.contains("tuningfork_requests_total{endpoint=\"chat.completions\",status=\"200\"}")
    );
    assert!(
        metrics.contains("tuningfork_requests_in_flight 0"),
        "{metrics}"
    );

    // SIGTERM while a request is in flight: it is answered and recorded, then the run ends.
    let addr = server.addr.clone();
    let in_flight = std::thread::spawn(move || {
        http(
            &addr,
            "POST",
            "/v1/completions",
            &[],
            &json!({"model": "smollm2-135m", "prompt": "Once upon a time", "max_tokens": 120,
                    "temperature": 0.7, "seed": 11})
            .to_string(),
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(400));
    terminate(&server);
    let (status, _, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "{body}");
    exited_cleanly(server);
    let conn = db(&sandbox);
    let status: String = conn
        .query_row("SELECT status FROM runs WHERE id = ?1", [serve_run], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(status, "completed");
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM traces WHERE endpoint = 'completions' AND request_json LIKE '%Once upon a time%' AND status = 200"),
        1
    );
}

#[test]
fn a_non_loopback_address_needs_an_api_key_and_checks_it() {
    let _one_engine = serial();
    let sandbox = Sandbox::new();
    let out = sandbox.run(&["serve", "--addr", "0.0.0.0:0"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs an API key"),
        "{}",
        stderr(&out)
    );
    assert_eq!(count(&db(&sandbox), "SELECT COUNT(*) FROM runs"), 0);

    let server = serve(&sandbox, &["--addr", "0.0.0.0:0", "--api-key", "s3cret"]);
    let port = server.addr.rsplit(':').next().unwrap();
    let local = format!("127.0.0.1:{port}");
    python_client(&local, "s3cret", "auth");
    // /health answers without the key, for load balancers; nothing else does.
    assert_eq!(http(&local, "GET", "/health", &[], "").0, 200);
    assert_eq!(http(&local, "GET", "/metrics", &[], "").0, 401);
    let bearer = [("Authorization", "Bearer s3cret")];
    assert_eq!(http(&local, "GET", "/metrics", &bearer, "").0, 200);
    // A body over the limit is refused before it is read whole.
    let huge = format!(
        "{{\"model\": \"smollm2-135m\", \"prompt\": \"{}\"}}",
        "a".repeat(2 << 20)
    );
    let (status, _, body) = http(&local, "POST", "/v1/completions", &bearer, &huge);
    assert_eq!(status, 413, "{body}");
}

#[test]
fn a_promotion_is_followed_without_a_restart_and_traces_become_a_dataset() {
    let _one_engine = serial();
    let sandbox = Sandbox::new();
    let (task, _) = small_task(sandbox.dir.path(), 6, 4, 4);
    let task = task.display().to_string();
    // Two artifacts of the task: as written, and with other instructions.
    let created = sandbox.run(&["artifacts", "create", &task]);
    assert!(created.status.success(), "{}", stderr(&created));
    let first = stdout(&created)
        .split_whitespace()
        .find(|w| w.len() >= 12)
        .unwrap()
        .to_string();
    let export = sandbox.dir.path().join("a.json");
    assert!(sandbox
        .run(&[
            "artifacts",
            "export",
            &first,
            "--out",
            export.to_str().unwrap()
        ])
        .status
        .success());
    let text = std::fs::read_to_string(&export).unwrap().replace(
        "Classify the sentiment of the product review.",
        "Decide whether the review is positive, negative or neutral.",
    );
    std::fs::write(&export, text).unwrap();
    let imported = sandbox.run(&["artifacts", "import", export.to_str().unwrap()]);
    assert!(imported.status.success(), "{}", stderr(&imported));
    let second = stdout(&imported)
        .split_whitespace()
        .find(|w| w.len() >= 12)
        .unwrap()
        .to_string();
    assert!(sandbox
        .run(&["artifacts", "promote", "prod", &first])
        .status
        .success());

    let server = serve(
        &sandbox,
        &[
            "--addr",
            "127.0.0.1:0",
            "--program",
            &format!("{task}=prod"),
        ],
    );
    let predict = |review: &str| {
        let (status, headers, body) = http(
            &server.addr,
            "POST",
            "/v1/programs/prod/predict",
            &[],
            &json!({"review": review}).to_string(),
        );
        assert_eq!(status, 200, "{body}");
        let answer = json_body(&body);
        let artifact = answer["artifact"].as_str().unwrap().to_string();
        assert!(
            headers.contains(&format!("x-tuningfork-artifact: {artifact}")),
            "{headers}"
        );
        artifact
    };
    assert!(predict("Lovely colour, fast delivery.").starts_with(&first));
    assert!(sandbox
        .run(&["artifacts", "promote", "prod", &second])
        .status
        .success());
    assert!(predict("The lid does not close.").starts_with(&second));
    assert!(sandbox
        .run(&["artifacts", "rollback", "prod"])
        .status
        .success());
    assert!(predict("Arrived in a box.").starts_with(&first));
    stop(server);

    // Traces become unreviewed rows; only reviewed ones are added, never a held-out example.
    let rows = sandbox.dir.path().join("rows.jsonl");
    let out = sandbox.run(&[
        "dataset",
        "from-traces",
        "--program",
        "sentiment",
        "--out",
        rows.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<Value> = std::fs::read_to_string(&rows)
        .unwrap()
        .lines()
        .map(json_body)
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["review"], "Lovely colour, fast delivery.");
    assert_eq!(lines[0]["_review"], "unreviewed");
    assert!(lines[0]["sentiment"].is_string());

    let out = sandbox.run(&["dataset", "add", &task, rows.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("added = \\\"added.jsonl\\\"") || stderr(&out).contains("`added`"),
        "{}",
        stderr(&out)
    );
    let toml = std::fs::read_to_string(&task).unwrap().replace(
        "test = \"test.jsonl\"",
        "test = \"test.jsonl\"\nadded = \"added.jsonl\"",
    );
    std::fs::write(&task, toml).unwrap();
    let out = sandbox.run(&["dataset", "add", &task, rows.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("added 0 rows") && stdout(&out).contains("3 unreviewed"),
        "{}",
        stdout(&out)
    );

    // The reviewer fixes one label and approves; a test example sneaks in and is refused.
    let test_row: Value = json_body(
        std::fs::read_to_string(sandbox.dir.path().join("test.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    );
    let mut reviewed: Vec<String> = lines
        .iter()
        .map(|row| {
            let mut row = row.clone();
            row["_review"] = json!("reviewed");
            row["sentiment"] = json!("neutral");
            row.to_string()
        })
        .collect();
    reviewed.push(test_row.to_string());
    reviewed.push(reviewed[0].clone());
    std::fs::write(&rows, reviewed.join("\n")).unwrap();
    let out = sandbox.run(&["dataset", "add", &task, rows.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report = stdout(&out);
    assert!(
        report.contains("added 3 rows")
            && report.contains("1 duplicates")
            && report.contains("1 rows whose inputs are validation or test"),
        "{report}"
    );
    let added = std::fs::read_to_string(sandbox.dir.path().join("added.jsonl")).unwrap();
    assert_eq!(added.lines().count(), 3);
    assert!(
        !added.contains("_review") && !added.contains("_trace"),
        "{added}"
    );
    // Added rows join the train split; validation and test are unchanged.
    let again = sandbox.run(&["dataset", "add", &task, rows.to_str().unwrap()]);
    assert!(
        stdout(&again).contains("added 0 rows") && stdout(&again).contains("4 duplicates"),
        "{}",
        stdout(&again)
    );

    // Retention: the stopped server's traces go with their calls and the empty run.
    let gc = sandbox.run(&["runs", "gc", "--keep-max", "0"]);
    assert!(gc.status.success(), "{}", stderr(&gc));
    assert!(
        stdout(&gc).contains("deleted 3 traces, 3 calls and 1 empty server runs"),
        "{}",
        stdout(&gc)
    );
    let conn = db(&sandbox);
    assert_eq!(count(&conn, "SELECT COUNT(*) FROM traces"), 0);
    assert_eq!(
        count(&conn, "SELECT COUNT(*) FROM runs WHERE kind = 'serve'"),
        0
    );
    assert!(count(&conn, "SELECT COUNT(*) FROM artifacts") >= 2);
}

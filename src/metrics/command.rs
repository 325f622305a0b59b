//! The command metric: a user program (run without a shell) reads
//! `{"gold": <the example's values>, "prediction": <the program's outputs>}` as JSON on stdin and
//! prints `{"score": <0..1>, "feedback": <text>}`; it is stopped at its timeout.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{MetricError, Score};
use crate::program::Values;

/// Runs a command metric: JSON on stdin, `{score, feedback}` on stdout, killed at the timeout.
pub(super) async fn run_command(
    program: &[String],
    timeout_s: f64,
    gold: &Values,
    prediction: &Values,
) -> Result<Score, MetricError> {
    let fail = |message: String| MetricError::Command {
        program: program.to_vec(),
        message,
    };
    let input = serde_json::json!({ "gold": gold, "prediction": prediction }).to_string();
    let mut child = tokio::process::Command::new(PathBuf::from(&program[0]))
        .args(&program[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| fail(format!("cannot start it: {e}")))?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let work = async {
        // A program that exits without reading its input is not an error of ours.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
        let mut out = String::new();
        stdout
            .read_to_string(&mut out)
            .await
            .map_err(|e| fail(format!("cannot read its output: {e}")))?;
        let status = child.wait().await.map_err(|e| fail(e.to_string()))?;
        Ok::<_, MetricError>((status, out))
    };
    let (status, out) = tokio::time::timeout(Duration::from_secs_f64(timeout_s), work)
        .await
        .map_err(|_| fail(format!("it ran longer than {timeout_s} s and was stopped")))??;
    if !status.success() {
        return Err(fail(format!("it exited with {status}")));
    }
    let parsed: Score = serde_json::from_str(out.trim()).map_err(|e| {
        fail(format!(
            "its output {:?} is not {{\"score\": <0..1>, \"feedback\": <text>}}: {e}",
            out.trim()
        ))
    })?;
    if !(0.0..=1.0).contains(&parsed.score) {
        return Err(fail(format!(
            "it returned score {}, outside [0, 1]",
            parsed.score
        )));
    }
    Ok(parsed)
}

//! Reports as single self-contained HTML files (inline CSS and SVG; nothing fetched): one
//! optimization run — each loop's best validation score against calls and time, every
//! candidate's score, baseline against result, the chosen program as a diff against its
//! parent, the lowest-scoring test examples, budget use — or a task's promotion history.
//!
//! Everything comes from the store, so a report can be written for any past run.

mod charts;

use std::fmt::Write as _;

use charts::{Axis, Series, Style, BLUE, GREEN, GREY, RED};

use crate::artifact::short;
use crate::optimize::{Budget, LoopOutcome, LoopSpec};
use crate::store::{OptimizationRow, Store, StoreError};

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f8fafc;color:#0f172a}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.meta{color:#475569;font-size:13px}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px 14px;min-width:120px}
.card b{display:block;font-size:20px}
.card span{color:#64748b;font-size:12px}
.charts{display:flex;gap:12px;flex-wrap:wrap}
.charts>div{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:6px}
table{border-collapse:collapse;background:#fff;font-size:13px;margin:6px 0}
th,td{border:1px solid #e2e8f0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f5f9}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.up{color:#16a34a;font-weight:600}.down{color:#dc2626;font-weight:600}
pre{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:10px;white-space:pre-wrap;font-size:12px}
.add{background:#dcfce7;display:block}.del{background:#fee2e2;display:block}
.tag{display:inline-block;border-radius:4px;padding:0 6px;font-size:12px;background:#e2e8f0}
.tag.ok{background:#dcfce7}.tag.bad{background:#fee2e2}
";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body><main>{body}</main></body></html>\n",
        escape(title)
    )
}

fn score(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{v:.3}"))
}

fn delta(before: Option<f64>, after: Option<f64>) -> String {
    match (before, after) {
        (Some(b), Some(a)) if a > b => format!("<span class=\"up\">+{:.3}</span>", a - b),
        (Some(b), Some(a)) if a < b => format!("<span class=\"down\">{:.3}</span>", a - b),
        (Some(_), Some(_)) => "±0".into(),
        _ => "-".into(),
    }
}

/// `3h05m`-style time for chart ticks.
fn clock(seconds: f64) -> String {
    crate::optimize::budget::format_duration(seconds.max(0.0).round() as u64)
}

/// The HTML report of an optimization run.
pub fn run_report(store: &Store, run_ref: &str) -> Result<String, ReportError> {
    let run = store.run(run_ref)?;
    if run.kind != "optimize" {
        return Err(ReportError::Invalid(format!(
            "run {} is a `{}` run; reports are written for optimization runs (`tuningfork runs show {}` shows any run)",
            run.uid, run.kind, run.uid
        )));
    }
    let summary = store.summarize(run.clone())?;
    let seconds = store.run_seconds(run.id)?;
    let loops = store.optimizations(run.id)?;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Optimization run {}</h1><div class=\"meta\">run {} · {} · started {} · ended {} · host {}</div>",
        escape(&run.uid),
        run.id,
        escape(run.status.as_str()),
        escape(&run.started_at),
        escape(run.ended_at.as_deref().unwrap_or("-")),
        escape(&run.host),
    );
    if let Some(job) = run.config.get("job").filter(|j| j.is_object()) {
        let _ = write!(
            body,
            "<div class=\"meta\">queued job {} · cycle {} · trigger {}</div>",
            job["id"],
            job["cycle"],
            escape(job["trigger"].as_str().unwrap_or("-"))
        );
    }
    let _ = write!(
        body,
        "<div class=\"cards\">\
         <div class=\"card\"><b>{}</b><span>loops</span></div>\
         <div class=\"card\"><b>{}</b><span>model calls ({} from the cache)</span></div>\
         <div class=\"card\"><b>{}</b><span>tokens</span></div>\
         <div class=\"card\"><b>{}</b><span>wall time</span></div></div>",
        loops.len(),
        summary.calls,
        summary.cache_hits,
        summary.prompt_tokens + summary.completion_tokens,
        clock(seconds)
    );
    if summary.by_model.len() > 1 {
        body.push_str("<table><tr><th>model</th><th>calls</th><th>tokens</th></tr>");
        for m in &summary.by_model {
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(&m.model),
                m.calls,
                m.tokens
            );
        }
        body.push_str("</table>");
    }
    body.push_str(&budget_section(&run.config, &summary, seconds));
    for row in &loops {
        body.push_str(&loop_section(store, row)?);
    }
    Ok(page(&format!("tuningfork run {}", run.uid), &body))
}

fn budget_section(
    config: &serde_json::Value,
    summary: &crate::store::RunSummary,
    seconds: f64,
) -> String {
    let budget: Budget = serde_json::from_value(config["budget"].clone()).unwrap_or_default();
    let tokens = (summary.prompt_tokens + summary.completion_tokens) as f64;
    let mut rows = Vec::new();
    if let Some(calls) = budget.calls {
        rows.push((
            format!("calls {} of {calls}", summary.calls),
            summary.calls as f64 / calls.max(1) as f64,
        ));
    }
    if let Some(limit) = budget.tokens {
        rows.push((
            format!("tokens {tokens} of {limit}"),
            tokens / limit.max(1) as f64,
        ));
    }
    if let Some(time) = budget.time_secs {
        rows.push((
            format!("time {} of {}", clock(seconds), clock(time as f64)),
            seconds / time.max(1) as f64,
        ));
    }
    let mut html = String::from("<h2>Budget</h2>");
    if rows.is_empty() {
        html.push_str(
            "<p class=\"meta\">no budget was set: the run went until its optimizers finished.</p>",
        );
    } else {
        html.push_str(&charts::budget_bars(&rows));
    }
    html
}

fn loop_section(store: &Store, row: &OptimizationRow) -> Result<String, ReportError> {
    let mut html = format!(
        "<h2>{} · {} <span class=\"tag\">{}</span></h2>",
        escape(&row.task),
        escape(&row.optimizer),
        escape(row.status.as_str())
    );
    if let Some(reason) = &row.stop_reason {
        let _ = write!(
            html,
            "<p class=\"meta\">stopped early: {}</p>",
            escape(reason)
        );
    }
    let outcome: Option<LoopOutcome> = row
        .summary
        .clone()
        .and_then(|s| serde_json::from_value(s).ok());
    let spec: Option<LoopSpec> = serde_json::from_value(row.config.clone()).ok();
    let candidates = store.candidates(row.id)?;
    let timeline = store.scored_at(row.id)?;
    // Charts: the best validation score against calls and against time, every candidate.
    let by_ordinal = |ordinal: i64| candidates.iter().find(|c| c.ordinal == ordinal);
    let points = |x: &dyn Fn(&crate::store::ScoredAt) -> f64| -> Vec<(f64, f64)> {
        timeline
            .iter()
            .filter_map(|t| Some((x(t), by_ordinal(t.ordinal)?.val_score?)))
            .collect()
    };
    let by_calls = points(&|t| t.calls as f64);
    let by_time = points(&|t| t.seconds);
    let every: Vec<(f64, f64)> = candidates
        .iter()
        .filter_map(|c| Some((c.ordinal as f64, c.val_score?)))
        .collect();
    let chart = |title: &str, x: &str, pts: &[(f64, f64)], axis: Axis<'_>| {
        charts::score_chart(
            title,
            x,
            &[
                Series {
                    label: "candidate",
                    points: pts.to_vec(),
                    color: GREY,
                    style: Style::Dots,
                },
                Series {
                    label: "best so far",
                    points: pts.to_vec(),
                    color: BLUE,
                    style: Style::BestSoFar,
                },
            ],
            axis,
        )
        .map_err(ReportError::Invalid)
    };
    html.push_str("<div class=\"charts\">");
    let _ = write!(
        html,
        "<div>{}</div><div>{}</div>",
        chart(
            "best validation score by calls",
            "model calls",
            &by_calls,
            Axis::From0(None)
        )?,
        chart(
            "best validation score by time",
            "time since the run began",
            &by_time,
            Axis::From0(Some(&clock))
        )?,
    );
    let _ = write!(
        html,
        "<div>{}</div>",
        charts::score_chart(
            "every candidate's validation score",
            "candidate (in proposal order)",
            &[Series {
                label: "validation score",
                points: every,
                color: GREEN,
                style: Style::Dots,
            }],
            Axis::Ordinal(&|i| i.to_string()),
        )
        .map_err(ReportError::Invalid)?
    );
    html.push_str("</div>");
    // Baseline against result.
    if let Some(o) = &outcome {
        let _ = write!(
            html,
            "<h3>Baseline and result</h3><table><tr><th></th><th>validation</th><th>test</th></tr>\
             <tr><td>baseline {}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\
             <tr><td>result {}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\
             <tr><td>change</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr></table>\
             <p class=\"meta\">chose <b>{}</b> of {} candidates, {}</p>",
            escape(short(&o.baseline_hash)),
            score(o.baseline.val),
            score(Some(o.baseline.test)),
            escape(short(&o.artifact_hash)),
            score(o.optimized.val),
            score(Some(o.optimized.test)),
            delta(o.baseline.val, o.optimized.val),
            delta(Some(o.baseline.test), Some(o.optimized.test)),
            escape(&o.chosen),
            o.candidates,
            o.demonstrations()
        );
        for note in &o.notes {
            let _ = write!(html, "<p class=\"meta\">{}</p>", escape(note));
        }
        html.push_str(&program_diff(store, &o.artifact_hash)?);
    }
    // Candidates.
    html.push_str("<h3>Candidates</h3><table><tr><th>#</th><th>label</th><th>parent</th><th>validation</th><th>scored after</th></tr>");
    for c in &candidates {
        let at = timeline.iter().find(|t| t.ordinal == c.ordinal);
        let chosen = outcome.as_ref().is_some_and(|o| o.chosen == c.label);
        let _ = write!(
            html,
            "<tr><td class=\"num\">{}</td><td>{}{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            c.ordinal,
            escape(&c.label),
            if chosen { " <span class=\"tag ok\">chosen</span>" } else { "" },
            c.parent_ordinal.map_or("-".into(), |p| p.to_string()),
            score(c.val_score),
            at.map_or("-".into(), |t| format!("{} calls, {}", t.calls, clock(t.seconds)))
        );
    }
    html.push_str("</table>");
    // The lowest-scoring test examples of the chosen program.
    if let Some(o) = &outcome {
        if let Some(chosen) = candidates.iter().find(|c| c.label == o.chosen) {
            let mut results = store.results(row.id, &chosen.program_hash, "test")?;
            results.sort_by(|a, b| {
                a.score
                    .total_cmp(&b.score)
                    .then(a.example_index.cmp(&b.example_index))
            });
            let misses: Vec<_> = results.iter().filter(|r| r.score < 1.0).take(10).collect();
            let _ = write!(
                html,
                "<h3>Lowest-scoring test examples ({} of {} below 1.0)</h3>",
                misses.len(),
                results.iter().filter(|r| r.score < 1.0).count()
            );
            if !misses.is_empty() {
                html.push_str("<table><tr><th>example</th><th>values</th><th>outputs</th><th>score</th><th>feedback</th></tr>");
                for r in misses {
                    let inputs = spec
                        .as_ref()
                        .and_then(|s| s.test.get(r.example_index as usize))
                        .map_or(String::new(), |e| {
                            serde_json::to_string(&e.values).unwrap_or_default()
                        });
                    let outputs = r
                        .outputs
                        .as_ref()
                        .map_or("(no usable reply)".into(), |o| o.to_string());
                    let feedback = r.feedback.as_deref().or(r.error.as_deref()).unwrap_or("");
                    let _ = write!(
                        html,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.2}</td><td>{}</td></tr>",
                        escape(&r.source),
                        escape(&truncate(&inputs, 400)),
                        escape(&truncate(&outputs, 300)),
                        r.score,
                        escape(&truncate(feedback, 300))
                    );
                }
                html.push_str("</table>");
            }
        }
    }
    Ok(html)
}

/// The chosen artifact's instructions and demonstrations as a diff against its parent.
fn program_diff(store: &Store, hash: &str) -> Result<String, ReportError> {
    let chosen = store.artifact(hash)?;
    let mut html = String::from("<h3>The chosen program against its parent</h3>");
    let Some(parent) = chosen.artifact.parent.as_deref() else {
        html.push_str("<p class=\"meta\">no parent: this is the starting program.</p>");
        return Ok(html);
    };
    let parent = store.artifact(parent)?;
    let lines = parent.artifact.diff(&chosen.artifact);
    if lines.is_empty() {
        let _ = write!(
            html,
            "<p class=\"meta\">the same program as its parent {}.</p>",
            escape(short(&parent.hash))
        );
        return Ok(html);
    }
    let _ = write!(
        html,
        "<p class=\"meta\">parent {} → {}</p><pre>",
        escape(short(&parent.hash)),
        escape(short(&chosen.hash))
    );
    for line in lines {
        for (i, part) in line.lines().enumerate() {
            let trimmed = part.trim_start();
            let class = if trimmed.starts_with("+ ") || (i == 0 && part.contains("demo added")) {
                "add"
            } else if trimmed.starts_with("- ") || (i == 0 && part.contains("demo removed")) {
                "del"
            } else {
                ""
            };
            if class.is_empty() {
                let _ = writeln!(html, "{}", escape(part));
            } else {
                let _ = write!(html, "<span class=\"{class}\">{}</span>", escape(part));
            }
        }
    }
    html.push_str("</pre>");
    Ok(html)
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

/// The HTML history of a task: every promotion of one of its artifacts over time with its
/// scores, and every decision the queue's promotion gate took on it.
pub fn task_history(store: &Store, task: &str) -> Result<String, ReportError> {
    let mut rows = Vec::new();
    for (name, hash, at) in store.promotion_history(None)? {
        let stored = store.artifact(&hash)?;
        if stored.artifact.task == task {
            rows.push((name, hash, at, stored.artifact));
        }
    }
    let decisions: Vec<_> = store
        .recent_cycles(10_000)?
        .into_iter()
        .rev()
        .filter(|c| {
            c.decision
                .as_ref()
                .is_some_and(|d| d["task"].as_str() == Some(task))
        })
        .collect();
    if rows.is_empty() && decisions.is_empty() {
        return Err(ReportError::Invalid(format!(
            "no artifact of task `{task}` was ever promoted and no queued job decided on one; `tuningfork artifacts list` shows the stored artifacts"
        )));
    }
    let mut body = format!(
        "<h1>Task {} — promoted programs</h1><div class=\"meta\">{} promotions, {} gate decisions</div>",
        escape(task),
        rows.len(),
        decisions.len()
    );
    let names: std::collections::BTreeSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    let colors = [BLUE, GREEN, RED, GREY];
    let labels: Vec<String> = names.iter().map(|n| format!("`{n}` test score")).collect();
    let series: Vec<Series<'_>> = names
        .iter()
        .zip(&labels)
        .enumerate()
        .map(|(i, (name, label))| Series {
            label,
            points: rows
                .iter()
                .enumerate()
                .filter(|(_, r)| r.0 == *name)
                .filter_map(|(j, r)| Some(((j + 1) as f64, *r.3.scores.get("test")?)))
                .collect(),
            color: colors[i % colors.len()],
            style: Style::Line,
        })
        .collect();
    if !rows.is_empty() {
        let ticks = |i: usize| {
            if (1..=rows.len()).contains(&i) {
                format!("#{i} {}", rows[i - 1].2.get(5..10).unwrap_or(""))
            } else {
                String::new()
            }
        };
        let chart = charts::score_chart(
            "test score of each promotion, in order",
            "promotion (number, month-day)",
            &series,
            Axis::Ordinal(&ticks),
        )
        .map_err(ReportError::Invalid)?;
        let _ = write!(body, "<div class=\"charts\"><div>{chart}</div></div>");
        body.push_str("<h2>Promotions</h2><table><tr><th>#</th><th>when</th><th>name</th><th>artifact</th><th>validation</th><th>test</th><th>change in test</th><th>run</th></tr>");
        let mut last: std::collections::BTreeMap<&str, f64> = Default::default();
        for (i, (name, hash, at, artifact)) in rows.iter().enumerate() {
            let test = artifact.scores.get("test").copied();
            let change = delta(last.get(name.as_str()).copied(), test);
            if let Some(t) = test {
                last.insert(name, t);
            }
            let _ = write!(
                body,
                "<tr><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                i + 1,
                escape(at),
                escape(name),
                escape(short(hash)),
                score(artifact.scores.get("val").copied()),
                score(test),
                change,
                escape(artifact.run.as_deref().unwrap_or("-"))
            );
        }
        body.push_str("</table>");
    }
    if !decisions.is_empty() {
        body.push_str("<h2>Promotion gate decisions</h2><table><tr><th>when</th><th>job</th><th>trigger</th><th>run</th><th>candidate test</th><th>production test</th><th>margin</th><th>decision</th></tr>");
        for c in &decisions {
            let d = c.decision.as_ref().expect("filtered on decisions");
            let promoted = d["promoted"].as_bool() == Some(true);
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><span class=\"tag {}\">{}</span> {}</td></tr>",
                escape(c.ended_at.as_deref().unwrap_or(&c.started_at)),
                c.job_id,
                escape(&c.trigger),
                escape(c.run_uid.as_deref().unwrap_or("-")),
                score(d["candidate_test"].as_f64()),
                score(d["production_test"].as_f64()),
                score(d["margin"].as_f64()),
                if promoted { "ok" } else { "bad" },
                if promoted { "promoted" } else { "kept production" },
                escape(d["reason"].as_str().unwrap_or(""))
            );
        }
        body.push_str("</table>");
    }
    Ok(page(&format!("tuningfork task {task}"), &body))
}

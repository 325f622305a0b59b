//! The server's counters, written as Prometheus text (`GET /metrics`): requests by endpoint
//! and status, a latency histogram, tokens, the engine's share of the time, and how many
//! requests are in flight.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default)]
struct Counts {
    /// (endpoint, status) → requests.
    requests: BTreeMap<(String, u16), u64>,
    /// endpoint → (bucket counts, sum of seconds, count).
    latency: BTreeMap<String, ([u64; BUCKETS.len()], f64, u64)>,
    prompt_tokens: u64,
    completion_tokens: u64,
    engine_seconds: f64,
    rejected: u64,
}

/// Shared by every request handler.
#[derive(Default)]
pub struct Metrics {
    counts: Mutex<Counts>,
    in_flight: AtomicI64,
}

/// Holds one in-flight request; the gauge goes down when it is dropped.
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a finished request.
    pub fn observe(
        &self,
        endpoint: &str,
        status: u16,
        seconds: f64,
        tokens: (u32, u32),
        engine_seconds: f64,
    ) {
        let mut counts = self.counts();
        *counts
            .requests
            .entry((endpoint.to_string(), status))
            .or_default() += 1;
        let entry =
            counts
                .latency
                .entry(endpoint.to_string())
                .or_insert(([0; BUCKETS.len()], 0.0, 0));
        for (bucket, bound) in entry.0.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        entry.1 += seconds;
        entry.2 += 1;
        counts.prompt_tokens += u64::from(tokens.0);
        counts.completion_tokens += u64::from(tokens.1);
        counts.engine_seconds += engine_seconds;
    }

    /// A request turned away because the server was full.
    pub fn reject(&self) {
        self.counts().rejected += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let counts = self.counts();
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<String>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for sample in samples {
                let _ = writeln!(out, "{sample}");
            }
        };
        family(
            "tuningfork_requests_total",
            "counter",
            "Requests answered, by endpoint and HTTP status.",
            counts
                .requests
                .iter()
                .map(|((endpoint, status), n)| {
                    format!(
                        "tuningfork_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
                    )
                })
                .collect(),
        );
        let mut latency = Vec::new();
        for (endpoint, (buckets, sum, count)) in &counts.latency {
            let series = format!("tuningfork_request_seconds_bucket{{endpoint=\"{endpoint}\"");
            for (n, bound) in buckets.iter().zip(BUCKETS) {
                latency.push(format!("{series},le=\"{bound}\"}} {n}"));
            }
            latency.push(format!("{series},le=\"+Inf\"}} {count}"));
            latency.push(format!(
                "tuningfork_request_seconds_sum{{endpoint=\"{endpoint}\"}} {sum}"
            ));
            latency.push(format!(
                "tuningfork_request_seconds_count{{endpoint=\"{endpoint}\"}} {count}"
            ));
        }
        family(
            "tuningfork_request_seconds",
            "histogram",
            "Time from request to the last byte of the answer.",
            latency,
        );
        family(
            "tuningfork_tokens_total",
            "counter",
            "Tokens of answered requests.",
            vec![
                format!(
                    "tuningfork_tokens_total{{kind=\"prompt\"}} {}",
                    counts.prompt_tokens
                ),
                format!(
                    "tuningfork_tokens_total{{kind=\"completion\"}} {}",
                    counts.completion_tokens
                ),
            ],
        );
        family(
            "tuningfork_engine_seconds_total",
            "counter",
            "Engine time (prefill and decode) of answered requests.",
            vec![format!(
                "tuningfork_engine_seconds_total {}",
                counts.engine_seconds
            )],
        );
        family(
            "tuningfork_rejected_total",
            "counter",
            "Requests turned away because the server was full.",
            vec![format!("tuningfork_rejected_total {}", counts.rejected)],
        );
        family(
            "tuningfork_requests_in_flight",
            "gauge",
            "Requests accepted and not yet answered (the queue depth).",
            vec![format!(
                "tuningfork_requests_in_flight {}",
                self.in_flight.load(Ordering::Relaxed)
            )],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_the_in_flight_gauge() {
        let metrics = Arc::new(Metrics::default());
        let held = metrics.start();
        metrics.observe("chat.completions", 200, 0.3, (10, 5), 0.25);
        metrics.observe("chat.completions", 404, 0.001, (0, 0), 0.0);
        metrics.reject();
        let text = metrics.render();
        for line in [
            "tuningfork_requests_total{endpoint=\"chat.completions\",status=\"200\"} 1",
            "tuningfork_requests_total{endpoint=\"chat.completions\",status=\"404\"} 1",
            "tuningfork_request_seconds_bucket{endpoint=\"chat.completions\",le=\"0.25\"} 1",
            "tuningfork_request_seconds_bucket{endpoint=\"chat.completions\",le=\"0.5\"} 2",
            "tuningfork_request_seconds_count{endpoint=\"chat.completions\"} 2",
            "tuningfork_tokens_total{kind=\"prompt\"} 10",
            "tuningfork_rejected_total 1",
            "tuningfork_requests_in_flight 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        drop(held);
        assert!(metrics.render().contains("tuningfork_requests_in_flight 0"));
    }
}

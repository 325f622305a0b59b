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
        let _ = writeln!(
            out,
            "# HELP tuningfork_requests_total Requests answered, by endpoint and HTTP status."
        );
        let _ = writeln!(out, "# TYPE tuningfork_requests_total counter");
        for ((endpoint, status), n) in &counts.requests {
            let _ = writeln!(
                out,
                "tuningfork_requests_total{{endpoint=\"{endpoint}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tuningfork_request_seconds Time from request to the last byte of the answer."
        );
        let _ = writeln!(out, "# TYPE tuningfork_request_seconds histogram");
        for (endpoint, (buckets, sum, count)) in &counts.latency {
            for (n, bound) in buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "tuningfork_request_seconds_bucket{{endpoint=\"{endpoint}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "tuningfork_request_seconds_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "tuningfork_request_seconds_sum{{endpoint=\"{endpoint}\"}} {sum}"
            );
            let _ = writeln!(
                out,
                "tuningfork_request_seconds_count{{endpoint=\"{endpoint}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP tuningfork_tokens_total Tokens of answered requests."
        );
        let _ = writeln!(out, "# TYPE tuningfork_tokens_total counter");
        let _ = writeln!(
            out,
            "tuningfork_tokens_total{{kind=\"prompt\"}} {}",
            counts.prompt_tokens
        );
        let _ = writeln!(
            out,
            "tuningfork_tokens_total{{kind=\"completion\"}} {}",
            counts.completion_tokens
        );
        let _ = writeln!(out, "# HELP tuningfork_engine_seconds_total Engine time (prefill and decode) of answered requests.");
        let _ = writeln!(out, "# TYPE tuningfork_engine_seconds_total counter");
        let _ = writeln!(
            out,
            "tuningfork_engine_seconds_total {}",
            counts.engine_seconds
        );
        let _ = writeln!(
            out,
            "# HELP tuningfork_rejected_total Requests turned away because the server was full."
        );
        let _ = writeln!(out, "# TYPE tuningfork_rejected_total counter");
        let _ = writeln!(out, "tuningfork_rejected_total {}", counts.rejected);
        let _ = writeln!(out, "# HELP tuningfork_requests_in_flight Requests accepted and not yet answered (the queue depth).");
        let _ = writeln!(out, "# TYPE tuningfork_requests_in_flight gauge");
        let _ = writeln!(
            out,
            "tuningfork_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
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

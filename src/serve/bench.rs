//! `tuningfork bench --serve`: what the HTTP layer costs. The same workload — `clients`
//! concurrent clients sending chat requests with distinct prompts, cache off — runs once
//! straight through a `Generator` and once through a loopback server; the difference in mean
//! latency is the server's overhead. A soak then sends `soak` requests (answered from the
//! store after the first few, so the HTTP and trace path dominates) and reads the process's
//! resident memory along the way. Bounded in requests; loopback only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{ServeConfig, Server};
use crate::engine::{GenerationRequest, Message};
use crate::generator::Generator;
use crate::workspace::{RunKind, Workspace, WorkspaceError};

/// The workload.
#[derive(Debug, Clone)]
pub struct ServeBenchOptions {
    pub model: String,
    pub clients: usize,
    /// Requests of the overhead comparison (each way).
    pub requests: usize,
    pub gen_tokens: u32,
    /// Requests of the memory soak.
    pub soak: usize,
}

/// Latency figures of one way of sending the workload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    pub requests: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ServeBenchReport {
    pub clients: usize,
    pub gen_tokens: u32,
    pub direct: Latency,
    pub http: Latency,
    /// (http mean − direct mean) / direct mean, in percent.
    pub overhead_percent: f64,
    pub soak: Latency,
    /// Resident memory (KiB) after the first tenth of the soak and at its end.
    pub rss_kib: (u64, u64),
}

impl std::fmt::Display for ServeBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} clients, {} requests each way, {} tokens each, cache off",
            self.clients, self.direct.requests, self.gen_tokens
        )?;
        writeln!(
            f,
            "{:<10} {:>8} {:>8} {:>9} {:>9} {:>9}",
            "", "req/s", "seconds", "mean ms", "p50 ms", "p99 ms"
        )?;
        for (name, l) in [
            ("engine", &self.direct),
            ("http", &self.http),
            ("soak", &self.soak),
        ] {
            writeln!(
                f,
                "{name:<10} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>9.1}",
                l.per_second, l.seconds, l.mean_ms, l.p50_ms, l.p99_ms
            )?;
        }
        writeln!(
            f,
            "server overhead: {:+.1}% of the engine's mean latency",
            self.overhead_percent
        )?;
        writeln!(
            f,
            "resident memory over the soak of {} requests: {} MiB after the first tenth, {} MiB \
             at the end",
            self.soak.requests,
            self.rss_kib.0 / 1024,
            self.rss_kib.1 / 1024
        )
    }
}

fn latency(mut ms: Vec<f64>, seconds: f64) -> Latency {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    Latency {
        requests: ms.len(),
        seconds,
        per_second: ms.len() as f64 / seconds,
        mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

/// The resident set size of this process, in KiB (Linux; 0 elsewhere).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn prompt(i: usize) -> String {
    format!("Request {i}: name one colour and one animal.")
}

/// Runs `requests` jobs over `clients` workers; each job's latency in ms.
async fn drive<F, Fut>(clients: usize, requests: usize, job: F) -> Result<(Vec<f64>, f64), String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients.max(1) {
        let (job, next) = (Arc::clone(&job), Arc::clone(&next));
        workers.spawn(async move {
            let mut times = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    return Ok::<_, String>(times);
                }
                let t = Instant::now();
                job(i).await?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
        });
    }
    let mut all = Vec::new();
    while let Some(done) = workers.join_next().await {
        all.extend(done.map_err(|e| e.to_string())??);
    }
    Ok((all, started.elapsed().as_secs_f64()))
}

/// One chat request over a fresh loopback connection; fails unless the answer is 200.
async fn post_chat(addr: SocketAddr, body: String) -> Result<(), String> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    if response.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&response[..response.len().min(300)]).into_owned())
    }
}

fn chat_body(model: &str, i: usize, gen_tokens: u32) -> String {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt(i)}],
        "max_tokens": gen_tokens,
        "temperature": 0,
    })
    .to_string()
}

/// A loopback server for the benchmark's model, running until the returned token fires.
async fn start_server(
    ws: &Workspace,
    options: &ServeBenchOptions,
    use_cache: bool,
    cancel: &CancellationToken,
) -> Result<
    (
        SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<Result<super::ServeReport, WorkspaceError>>,
    ),
    WorkspaceError,
> {
    let mut config = ServeConfig::new(([127, 0, 0, 1], 0).into());
    config.models = vec![options.model.clone()];
    config.use_cache = use_cache;
    config.max_concurrent = options.clients.max(1) * 2;
    let stop = cancel.child_token();
    let server = Server::start(ws, config, stop.clone()).await?;
    Ok((server.local_addr(), stop, tokio::spawn(server.run())))
}

/// Runs the comparison and the soak.
pub async fn bench(
    ws: &Workspace,
    options: &ServeBenchOptions,
    cancel: CancellationToken,
) -> Result<ServeBenchReport, WorkspaceError> {
    let failed = |e: String| WorkspaceError::Invalid(format!("the serve benchmark failed: {e}"));
    let engine = ws.engine(&options.model)?;

    // Straight through a generator, cache off.
    let run = ws.begin_run(
        RunKind::Bench,
        serde_json::json!({"serve_bench": {"clients": options.clients, "requests": options.requests,
                                           "gen_tokens": options.gen_tokens}}),
        None,
        &engine,
        cancel.clone(),
    )?;
    let generator: Generator = run.generator(Arc::clone(&engine), run.group(0), false);
    let gen_tokens = options.gen_tokens;
    let direct = drive(options.clients, options.requests, move |i| {
        let generator = generator.clone();
        async move {
            let request = GenerationRequest::chat(vec![Message::user(prompt(i))], gen_tokens);
            generator
                .generate(request)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
    .await;
    run.finish(&Ok(()))?;
    let (direct, direct_s) = direct.map_err(failed)?;

    // The same through the server, cache off.
    let (addr, stop, serving) = start_server(ws, options, false, &cancel).await?;
    let model = options.model.clone();
    let http = drive(options.clients, options.requests, move |i| {
        post_chat(addr, chat_body(&model, i, gen_tokens))
    })
    .await;
    stop.cancel();
    serving.await.map_err(|e| failed(e.to_string()))??;
    let (http, http_s) = http.map_err(failed)?;

    // The soak: a few distinct requests over and over, answered from the store.
    let (addr, stop, serving) = start_server(ws, options, true, &cancel).await?;
    let model = options.model.clone();
    let warm = (options.soak / 10).max(1);
    let first = drive(options.clients, warm, {
        let model = model.clone();
        move |i| post_chat(addr, chat_body(&model, i % 8, 1))
    })
    .await;
    let rss_warm = rss_kib();
    let rest = drive(
        options.clients,
        options.soak.saturating_sub(warm),
        move |i| post_chat(addr, chat_body(&model, i % 8, 1)),
    )
    .await;
    let rss_end = rss_kib();
    stop.cancel();
    serving.await.map_err(|e| failed(e.to_string()))??;
    let (mut soak, soak_s) = first.map_err(failed)?;
    let (rest, rest_s) = rest.map_err(failed)?;
    soak.extend(rest);

    let direct = latency(direct, direct_s);
    let http = latency(http, http_s);
    Ok(ServeBenchReport {
        clients: options.clients,
        gen_tokens: options.gen_tokens,
        overhead_percent: (http.mean_ms - direct.mean_ms) / direct.mean_ms * 100.0,
        direct,
        http,
        soak: latency(soak, soak_s + rest_s),
        rss_kib: (rss_warm, rss_end),
    })
}

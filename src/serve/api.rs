//! The HTTP routes: OpenAI's chat and text completions (plain or streamed as server-sent
//! events), the model list, a native endpoint per program, trace feedback, health and
//! Prometheus metrics. Every route but `/health` checks the API key when one is set.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State as Extract};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::openai::{self, ApiError, Checked, Usage};
use super::programs::ServedProgram;
use super::{generate_error, program_error, Exchange, Outcome, ServedModel, State, Target};
use crate::engine::{Completion, Prompt, Role};

pub(super) fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(list_models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/programs/{name}/predict", post(predict))
        .route("/v1/traces/{id}/feedback", post(feedback))
        .fallback(unknown_route)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            authorize,
        ))
        .with_state(state)
}

fn error_response(error: &ApiError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(error.body())).into_response();
    if error.status == 429 || error.status == 503 {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Compares in time that does not depend on where the strings differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn authorize(Extract(state): Extract<Arc<State>>, request: Request, next: Next) -> Response {
    let Some(key) = state.config.api_key.as_deref().filter(|k| !k.is_empty()) else {
        return next.run(request).await;
    };
    if request.uri().path() == "/health" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| {
            request
                .headers()
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
        });
    match given {
        Some(given) if same_secret(given.trim().as_bytes(), key.as_bytes()) => {
            next.run(request).await
        }
        _ => {
            let error = ApiError::invalid(
                "missing or wrong API key: send `Authorization: Bearer KEY` with the key the \
                 server was started with",
            )
            .status(401, "authentication_error")
            .code("invalid_api_key");
            state.metrics.observe("auth", 401, 0.0, (0, 0), 0.0);
            error_response(&error)
        }
    }
}

async fn unknown_route(request: Request) -> Response {
    error_response(
        &ApiError::invalid(format!(
            "no route {} {}; tuningfork serves /v1/models, /v1/chat/completions, \
             /v1/completions, /v1/programs/NAME/predict, /health and /metrics",
            request.method(),
            request.uri().path()
        ))
        .status(404, "not_found_error"),
    )
}

async fn health(Extract(state): Extract<Arc<State>>) -> Response {
    axum::Json(json!({
        "status": "ok",
        "run": state.run.uid,
        "models": state.served_names(),
    }))
    .into_response()
}

async fn metrics(Extract(state): Extract<Arc<State>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn list_models(Extract(state): Extract<Arc<State>>) -> Response {
    let mut data: Vec<Value> = state
        .models
        .iter()
        .map(|m| {
            json!({"id": m.name, "object": "model", "created": state.started_unix,
                   "owned_by": "tuningfork", "sha256": m.sha256})
        })
        .collect();
    for program in &state.programs {
        let artifact = program.current(&state.store).ok().map(|(hash, _)| hash);
        for id in std::iter::once(&program.id).chain(program.alias.as_ref()) {
            data.push(
                json!({"id": id, "object": "model", "created": state.started_unix,
                             "owned_by": "tuningfork", "task": program.task.task.name,
                             "artifact": artifact}),
            );
        }
    }
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// Reads a body up to the configured size.
async fn read_body(state: &State, body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, state.config.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::invalid(format!(
                "the request body is larger than {} bytes, the server's limit",
                state.config.max_body_bytes
            ))
            .status(413, "invalid_request_error")
        })
}

/// The body as a JSON value for the trace (text when it is not JSON, cut at 64 KiB).
fn body_value(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|_| {
        let cut = &bytes[..bytes.len().min(64 << 10)];
        Value::String(String::from_utf8_lossy(cut).into_owned())
    })
}

/// A slot for one more request, or 429 when the server is full.
fn admit(state: &Arc<State>) -> Result<OwnedSemaphorePermit, ApiError> {
    Arc::clone(&state.slots).try_acquire_owned().map_err(|_| {
        state.metrics.reject();
        ApiError::invalid(format!(
            "the server is handling {} requests, its limit; retry after a second",
            state.config.max_concurrent
        ))
        .status(429, "rate_limit_error")
        .code("server_busy")
    })
}

/// Which OpenAI endpoint a completion request came through.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

impl Kind {
    fn endpoint(self) -> &'static str {
        match self {
            Kind::Chat => "chat.completions",
            Kind::Text => "completions",
        }
    }
    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }
    fn id(self, uid: &str) -> String {
        match self {
            Kind::Chat => format!("chatcmpl-{uid}"),
            Kind::Text => format!("cmpl-{uid}"),
        }
    }
    /// One choice holding `text`, whole or as a stream delta.
    fn choice(self, index: u32, text: &str, finish: Option<&str>, chunk: bool) -> Value {
        match (self, chunk) {
            (Kind::Chat, false) => {
                json!({"index": index, "finish_reason": finish, "logprobs": null,
                                          "message": {"role": "assistant", "content": text}})
            }
            (Kind::Chat, true) if finish.is_some() => {
                json!({"index": index, "delta": {}, "finish_reason": finish, "logprobs": null})
            }
            (Kind::Chat, true) => json!({"index": index, "delta": {"content": text},
                                         "finish_reason": null, "logprobs": null}),
            (Kind::Text, _) => {
                json!({"index": index, "text": text, "finish_reason": finish, "logprobs": null})
            }
        }
    }
}

/// A completion request reduced to what both endpoints share.
struct Incoming {
    model: String,
    prompt: Prompt,
    /// The text a program reads: the last user message, or the prompt.
    program_text: Option<String>,
    sampling: openai::Sampling,
}

async fn chat(Extract(state): Extract<Arc<State>>, body: Body) -> Response {
    complete(state, Kind::Chat, body).await
}

async fn completions(Extract(state): Extract<Arc<State>>, body: Body) -> Response {
    complete(state, Kind::Text, body).await
}

fn incoming(kind: Kind, bytes: &[u8]) -> Result<Incoming, ApiError> {
    match kind {
        Kind::Chat => {
            let request: openai::ChatRequest = openai::parse_body(bytes)?;
            let messages = openai::messages(&request.messages)?;
            let program_text = messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(|m| m.content.clone());
            Ok(Incoming {
                model: request.model,
                prompt: Prompt::Chat(messages),
                program_text,
                sampling: request.sampling,
            })
        }
        Kind::Text => {
            let request: openai::CompletionRequest = openai::parse_body(bytes)?;
            let prompt = match request.prompt {
                openai::Stop::One(p) => p,
                openai::Stop::Many(mut list) if list.len() == 1 => list.remove(0),
                openai::Stop::Many(_) => {
                    return Err(ApiError::invalid(
                        "send one prompt per request (a list of prompts is not supported)",
                    )
                    .param("prompt"))
                }
            };
            Ok(Incoming {
                model: request.model,
                program_text: Some(prompt.clone()),
                prompt: Prompt::Raw(prompt),
                sampling: request.sampling,
            })
        }
    }
}

async fn complete(state: Arc<State>, kind: Kind, body: Body) -> Response {
    let exchange = Exchange::new(&state, kind.endpoint());
    let bytes = match read_body(&state, body).await {
        Ok(b) => b,
        Err(e) => return refuse(&exchange, "", &Value::Null, &e),
    };
    let request_value = body_value(&bytes);
    let incoming = match incoming(kind, &bytes) {
        Ok(i) => i,
        Err(e) => return refuse(&exchange, "", &request_value, &e),
    };
    let model = incoming.model.clone();
    let user = incoming.sampling.user.clone();
    let refuse_here =
        |e: &ApiError| refuse_as(&exchange, &model, &request_value, user.as_deref(), e);
    let target = match state.target(&model) {
        Ok(t) => t,
        Err(e) => return refuse_here(&e),
    };
    let permit = match admit(&state) {
        Ok(p) => p,
        Err(e) => return refuse_here(&e),
    };
    match target {
        Target::Program(program) => {
            let text = incoming.program_text.clone().unwrap_or_default();
            let inputs = match program.inputs_from_message(&text) {
                Ok(i) => i,
                Err(e) => return refuse_here(&e),
            };
            let (outcome, result) = run_program(&state, program, &inputs).await;
            let content = match result {
                Ok(outputs) => outputs.to_string(),
                Err(e) => {
                    let response = error_response(&e);
                    exchange.record(&model, &request_value, user.as_deref(), outcome);
                    return response;
                }
            };
            let stream = incoming.sampling.stream;
            let response = whole_or_streamed(
                &exchange,
                kind,
                &model,
                &state.fingerprint_id,
                (&[content.as_str()], &["stop"]),
                outcome.usage,
                stream,
                json!({"trace": exchange.uid, "artifact": outcome.artifact}),
            );
            exchange.record(&model, &request_value, user.as_deref(), outcome);
            drop(permit);
            response
        }
        Target::Model(served) => {
            let checked =
                match openai::check(&incoming.sampling, incoming.prompt, state.config.max_tokens) {
                    Ok(c) => c,
                    Err(e) => return refuse_here(&e),
                };
            if checked.stream {
                if checked.n > 1 {
                    return refuse_here(
                        &ApiError::invalid("`stream` works with `n` = 1 only").param("n"),
                    );
                }
                return stream_model(
                    exchange,
                    kind,
                    model,
                    request_value,
                    served,
                    checked,
                    permit,
                );
            }
            let (outcome, result) = run_model(served, &checked).await;
            let response = match result {
                Ok(completions) => {
                    let texts: Vec<&str> = completions.iter().map(|c| c.text.as_str()).collect();
                    let finishes: Vec<&str> = completions
                        .iter()
                        .map(|c| openai::finish_reason(c.stop_reason))
                        .collect();
                    whole_or_streamed(
                        &exchange,
                        kind,
                        &model,
                        &state.fingerprint_id,
                        (&texts, &finishes),
                        outcome.usage,
                        false,
                        json!({"trace": exchange.uid}),
                    )
                }
                Err(e) => error_response(&e),
            };
            exchange.record(&model, &request_value, user.as_deref(), outcome);
            drop(permit);
            response
        }
    }
}

fn refuse(exchange: &Exchange, model: &str, request: &Value, error: &ApiError) -> Response {
    refuse_as(exchange, model, request, None, error)
}

fn refuse_as(
    exchange: &Exchange,
    model: &str,
    request: &Value,
    user: Option<&str>,
    error: &ApiError,
) -> Response {
    exchange.record(model, request, user, Outcome::failed(error));
    let mut response = error_response(error);
    add_trace_header(&mut response, &exchange.uid);
    response
}

fn add_trace_header(response: &mut Response, uid: &str) {
    if let Ok(value) = HeaderValue::from_str(uid) {
        response.headers_mut().insert("x-tuningfork-trace", value);
    }
}

/// Runs every choice of a model request (seeds `seed`, `seed + 1`, …), in choice order.
async fn run_model(
    served: &ServedModel,
    checked: &Checked,
) -> (Outcome, Result<Vec<Completion>, ApiError>) {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..checked.n {
        let mut request = checked.request.clone();
        request.sampling.seed = request.sampling.seed.wrapping_add(u64::from(i));
        let generator = served.generator.clone();
        set.spawn(async move { (i, generator.generate(request).await) });
    }
    let mut results = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => results.push(r),
            Err(e) => return (Outcome::default(), Err(ApiError::server(e.to_string()))),
        }
    }
    results.sort_by_key(|(i, _)| *i);
    let mut outcome = Outcome::default();
    let mut completions = Vec::new();
    for (_, result) in results {
        match result {
            Ok(generated) => {
                outcome.call_ids.push(generated.call_id);
                outcome.engine_seconds += (generated.completion.timings.prefill_ms
                    + generated.completion.timings.decode_ms)
                    / 1e3;
                completions.push(generated.completion);
            }
            Err(e) => {
                let error = generate_error(&e);
                let mut failed = Outcome::failed(&error);
                failed.call_ids = outcome.call_ids;
                return (failed, Err(error));
            }
        }
    }
    outcome.status = 200;
    outcome.usage = Usage::of(&completions.iter().collect::<Vec<_>>());
    (outcome, Ok(completions))
}

/// Runs a program on `inputs` through the artifact its name points at now.
async fn run_program(
    state: &State,
    program: &ServedProgram,
    inputs: &crate::program::Values,
) -> (Outcome, Result<Value, ApiError>) {
    let (hash, current) = match program.current(&state.store) {
        Ok(c) => c,
        Err(e) => return (Outcome::failed(&e), Err(e)),
    };
    let mut outcome = Outcome {
        program: Some(program.task.task.name.clone()),
        artifact: Some(hash),
        ..Outcome::default()
    };
    let (result, trace) = match program.predict(&current, inputs).await {
        Ok(prediction) => (
            Ok(serde_json::to_value(&prediction.outputs).unwrap_or_default()),
            Some(prediction.trace),
        ),
        Err(e) => {
            let trace = match &e {
                crate::program::ProgramError::Unparsable { trace, .. } => Some(trace.clone()),
                _ => None,
            };
            (Err(program_error(&e)), trace)
        }
    };
    if let Some(trace) = &trace {
        outcome.call_ids = trace.steps.iter().map(|s| s.call_id).collect();
        outcome.steps = Some(json!({"inputs": inputs, "steps": trace.steps}));
        if let Ok((prompt, completion)) = state.store.call_tokens(&outcome.call_ids) {
            outcome.usage = Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt + completion,
            };
        }
    }
    match &result {
        Ok(outputs) => {
            outcome.status = 200;
            outcome.response = Some(outputs.clone());
        }
        Err(e) => {
            outcome.status = e.status;
            outcome.response = Some(e.body());
            outcome.error = Some(e.message.clone());
        }
    }
    (outcome, result)
}

/// A finished answer, as one JSON body or as a stream of chunks that carries it.
#[allow(clippy::too_many_arguments)]
fn whole_or_streamed(
    exchange: &Exchange,
    kind: Kind,
    model: &str,
    fingerprint: &str,
    (texts, finishes): (&[&str], &[&str]),
    usage: Usage,
    stream: bool,
    extra: Value,
) -> Response {
    let id = kind.id(&exchange.uid);
    let created = openai::now_unix();
    let mut response = if stream {
        let head = |choices: Vec<Value>| {
            json!({"id": id, "object": kind.object(true), "created": created, "model": model,
                   "system_fingerprint": fingerprint, "choices": choices})
        };
        let mut events = Vec::new();
        if kind == Kind::Chat {
            events.push(head(vec![
                json!({"index": 0, "delta": {"role": "assistant", "content": ""},
                                          "finish_reason": null}),
            ]));
        }
        events.push(head(vec![kind.choice(0, texts[0], None, true)]));
        events.push(head(vec![kind.choice(0, "", Some(finishes[0]), true)]));
        let mut last = head(vec![]);
        last["usage"] = json!(usage);
        events.push(last);
        let stream = tokio_stream::iter(
            events
                .into_iter()
                .map(|e| Ok::<_, Infallible>(Event::default().data(e.to_string())))
                .chain(std::iter::once(Ok(Event::default().data("[DONE]")))),
        );
        Sse::new(stream).into_response()
    } else {
        let choices: Vec<Value> = texts
            .iter()
            .zip(finishes)
            .enumerate()
            .map(|(i, (text, finish))| kind.choice(i as u32, text, Some(finish), false))
            .collect();
        axum::Json(json!({
            "id": id, "object": kind.object(false), "created": created, "model": model,
            "system_fingerprint": fingerprint, "choices": choices, "usage": usage,
            "tuningfork": extra,
        }))
        .into_response()
    };
    add_trace_header(&mut response, &exchange.uid);
    add_artifact_header(&mut response, extra.get("artifact").and_then(Value::as_str));
    response
}

/// Streams a model's reply as it is generated. The work runs in its own task: when the client
/// goes away the generation is dropped (which cancels it in the engine) and the trace says so.
fn stream_model(
    exchange: Exchange,
    kind: Kind,
    model: String,
    request_value: Value,
    served: &ServedModel,
    checked: Checked,
    permit: OwnedSemaphorePermit,
) -> Response {
    let (events, receiver) = mpsc::channel::<Value>(64);
    let generator = served.generator.clone();
    let fingerprint = exchange.state.fingerprint_id.clone();
    let id = kind.id(&exchange.uid);
    let uid = exchange.uid.clone();
    let created = openai::now_unix();
    let traced_model = model.clone();
    let head = move |choices: Vec<Value>| {
        json!({"id": id, "object": kind.object(true), "created": created, "model": model,
               "system_fingerprint": fingerprint, "choices": choices})
    };
    tokio::spawn(async move {
        let _permit = permit;
        let (deltas, mut pieces) = mpsc::unbounded_channel::<String>();
        let generation = generator.generate_streaming(checked.request.clone(), Some(deltas));
        tokio::pin!(generation);
        let model = traced_model;
        let user = checked.user.clone();
        if kind == Kind::Chat {
            let first = head(vec![
                json!({"index": 0, "delta": {"role": "assistant", "content": ""},
                                          "finish_reason": null}),
            ]);
            if events.send(first).await.is_err() {
                return;
            }
        }
        let mut sent = String::new();
        let result = loop {
            tokio::select! {
                Some(piece) = pieces.recv() => {
                    sent.push_str(&piece);
                    if events.send(head(vec![kind.choice(0, &piece, None, true)])).await.is_err() {
                        let mut outcome = Outcome::failed(&ApiError::invalid("the client closed the connection during the stream").status(499, "invalid_request_error"));
                        outcome.response = Some(json!({"partial": sent}));
                        exchange.record(&model, &request_value, user.as_deref(), outcome);
                        return;
                    }
                }
                result = &mut generation => break result,
            }
        };
        let outcome = match result {
            Ok(generated) => {
                let completion = &generated.completion;
                // What the engine generated after the last piece it sent (or all of a cache hit).
                let rest = completion.text.get(sent.len()..).unwrap_or_default();
                if !rest.is_empty() {
                    let _ = events
                        .send(head(vec![kind.choice(0, rest, None, true)]))
                        .await;
                }
                let finish = openai::finish_reason(completion.stop_reason);
                let _ = events
                    .send(head(vec![kind.choice(0, "", Some(finish), true)]))
                    .await;
                let usage = Usage::of(&[completion]);
                if checked.include_usage {
                    let mut last = head(vec![]);
                    last["usage"] = json!(usage);
                    let _ = events.send(last).await;
                }
                Outcome {
                    status: 200,
                    response: Some(json!({"text": completion.text, "finish_reason": finish})),
                    call_ids: vec![generated.call_id],
                    usage,
                    engine_seconds: (completion.timings.prefill_ms + completion.timings.decode_ms)
                        / 1e3,
                    ..Outcome::default()
                }
            }
            Err(e) => {
                let error = generate_error(&e);
                let _ = events.send(error.body()).await;
                Outcome::failed(&error)
            }
        };
        exchange.record(&model, &request_value, user.as_deref(), outcome);
        // The receiver turns a closed channel into the final `[DONE]`.
    });
    let stream = ReceiverStream::new(receiver)
        .map(|value| Ok::<_, Infallible>(Event::default().data(value.to_string())))
        .chain(tokio_stream::once(Ok(Event::default().data("[DONE]"))));
    let mut response = Sse::new(stream).into_response();
    add_trace_header(&mut response, &uid);
    response
}

async fn predict(
    Extract(state): Extract<Arc<State>>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let exchange = Exchange::new(&state, "predict");
    let bytes = match read_body(&state, body).await {
        Ok(b) => b,
        Err(e) => return refuse(&exchange, &name, &Value::Null, &e),
    };
    let request_value = body_value(&bytes);
    let body: Value = match openai::parse_body(&bytes) {
        Ok(v) => v,
        Err(e) => return refuse(&exchange, &name, &request_value, &e),
    };
    let user = body.get("user").and_then(Value::as_str).map(str::to_string);
    let program = state
        .programs
        .iter()
        .find(|p| p.answers_to(&name) || p.answers_to(&format!("program:{name}")));
    let Some(program) = program else {
        let error = ApiError::not_found(format!(
            "this server has no program `{name}`; it serves {}",
            state
                .programs
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return refuse_as(&exchange, &name, &request_value, user.as_deref(), &error);
    };
    let inputs = body.get("inputs").unwrap_or(&body);
    let inputs = match program.inputs_from_object(inputs) {
        Ok(i) => i,
        Err(e) => return refuse_as(&exchange, &name, &request_value, user.as_deref(), &e),
    };
    let permit = match admit(&state) {
        Ok(p) => p,
        Err(e) => return refuse_as(&exchange, &name, &request_value, user.as_deref(), &e),
    };
    let (outcome, result) = run_program(&state, program, &inputs).await;
    drop(permit);
    let mut response = match &result {
        Ok(outputs) => axum::Json(json!({
            "program": program.id,
            "outputs": outputs,
            "trace_id": exchange.uid,
            "artifact": outcome.artifact,
            "usage": outcome.usage,
            "steps": outcome.steps.as_ref().and_then(|s| s.get("steps")),
        }))
        .into_response(),
        Err(e) => error_response(e),
    };
    add_trace_header(&mut response, &exchange.uid);
    add_artifact_header(&mut response, outcome.artifact.as_deref());
    exchange.record(&name, &request_value, user.as_deref(), outcome);
    response
}

fn add_artifact_header(response: &mut Response, artifact: Option<&str>) {
    if let Some(value) = artifact.and_then(|a| HeaderValue::from_str(a).ok()) {
        response
            .headers_mut()
            .insert("x-tuningfork-artifact", value);
    }
}

async fn feedback(
    Extract(state): Extract<Arc<State>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let bytes = match read_body(&state, body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e),
    };
    #[derive(serde::Deserialize)]
    struct Feedback {
        score: f64,
        feedback: Option<String>,
    }
    let given: Feedback = match openai::parse_body(&bytes) {
        Ok(f) => f,
        Err(e) => return error_response(&e),
    };
    match state
        .store
        .score_trace(&id, given.score, given.feedback.as_deref())
    {
        Ok(()) => axum::Json(json!({"trace": id, "score": given.score})).into_response(),
        Err(crate::store::StoreError::NoSuchTrace(_)) => error_response(
            &ApiError::invalid(format!("no trace `{id}`")).status(404, "not_found_error"),
        ),
        Err(crate::store::StoreError::Invalid(message)) => {
            error_response(&ApiError::invalid(message).param("score"))
        }
        Err(e) => error_response(&ApiError::server(e.to_string())),
    }
}

//! OpenAI's wire format: the request bodies `serve` accepts, the responses and stream chunks it
//! writes, and the error object. Requests are checked here, once, and turned into our own
//! [`GenerationRequest`]; nothing below this module sees the wire format.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema;
use crate::engine::{Completion, GenerationRequest, Message, Prompt, SamplingParams, StopReason};

/// At most this many stop strings (OpenAI's own limit).
const MAX_STOPS: usize = 4;
/// At most this many choices per request.
pub const MAX_CHOICES: u32 = 8;

/// An error in OpenAI's shape, with the HTTP status it is sent with.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// OpenAI's `type`: `invalid_request_error`, `authentication_error`, `not_found_error`,
    /// `rate_limit_error`, `server_error`.
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
            kind: "invalid_request_error",
            param: None,
            code: None,
        }
    }

    pub fn param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn status(mut self, status: u16, kind: &'static str) -> Self {
        self.status = status;
        self.kind = kind;
        self
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::invalid(message)
            .status(404, "not_found_error")
            .code("model_not_found")
    }

    pub fn server(message: impl Into<String>) -> Self {
        Self::invalid(message).status(500, "server_error")
    }

    /// The body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> Value {
        serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// A message's `content`: text, or a list of parts of which only text parts are understood.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Value>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct WireMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// The sampling and output fields both completion endpoints share.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Sampling {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub stop: Option<Stop>,
    pub seed: Option<u64>,
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub response_format: Option<Value>,
    pub user: Option<String>,
    // Parameters that would change what the client gets back and that tuningfork does not
    // implement: refused when set, never silently ignored.
    pub logprobs: Option<Value>,
    pub top_logprobs: Option<Value>,
    pub tools: Option<Value>,
    pub functions: Option<Value>,
    pub logit_bias: Option<Value>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub echo: Option<bool>,
    pub best_of: Option<u32>,
    pub suffix: Option<Value>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<WireMessage>,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `POST /v1/completions`.
#[derive(Debug, Clone, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Stop,
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// Parses a request body, naming the line and column of a syntax error and the field of a
/// type error.
pub fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "the request body is not valid JSON"
            }
            _ => "the request body does not have the expected fields",
        };
        ApiError::invalid(format!("{what}: {e}"))
    })
}

impl Content {
    fn text(&self) -> Result<String, ApiError> {
        match self {
            Content::Text(text) => Ok(text.clone()),
            Content::Parts(parts) => parts
                .iter()
                .map(|part| match (part.get("type"), part.get("text")) {
                    (Some(Value::String(kind)), Some(Value::String(text))) if kind == "text" => {
                        Ok(text.as_str())
                    }
                    _ => Err(ApiError::invalid(
                        "only text content parts ({\"type\": \"text\", \"text\": …}) are supported",
                    )
                    .param("messages")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(|texts| texts.join("\n")),
        }
    }
}

/// The conversation of a chat request in our types. `developer` is read as `system`.
pub fn messages(wire: &[WireMessage]) -> Result<Vec<Message>, ApiError> {
    if wire.is_empty() {
        return Err(
            ApiError::invalid("`messages` must hold at least one message").param("messages"),
        );
    }
    wire.iter()
        .enumerate()
        .map(|(i, m)| {
            let text = m
                .content
                .as_ref()
                .map(Content::text)
                .transpose()?
                .unwrap_or_default();
            Ok(match m.role.as_str() {
                "system" | "developer" => Message::system(text),
                "user" => Message::user(text),
                "assistant" => Message::assistant(text),
                other => {
                    return Err(ApiError::invalid(format!(
                        "messages[{i}] has role `{other}`; tuningfork understands system, \
                         developer, user and assistant (tools are not supported)"
                    ))
                    .param("messages"))
                }
            })
        })
        .collect()
}

/// What one completion request asks for, checked.
#[derive(Debug, Clone)]
pub struct Checked {
    pub request: GenerationRequest,
    pub n: u32,
    pub stream: bool,
    pub include_usage: bool,
    pub user: Option<String>,
}

/// Checks the shared fields and builds the generation request for `prompt`. `max_tokens` is
/// capped at `cap` (and defaults to it); without `temperature` sampling is OpenAI's default of
/// 1, without `seed` the seed is 0 — so an identical request gets an identical reply, from the
/// cache.
pub fn check(sampling: &Sampling, prompt: Prompt, cap: u32) -> Result<Checked, ApiError> {
    let unsupported = |name: &str| {
        ApiError::invalid(format!("`{name}` is not supported by tuningfork")).param(name)
    };
    let set = |v: &Option<Value>| {
        v.as_ref()
            .is_some_and(|v| !v.is_null() && v != &Value::Bool(false))
    };
    for (name, value) in [
        ("logprobs", &sampling.logprobs),
        ("top_logprobs", &sampling.top_logprobs),
        ("tools", &sampling.tools),
        ("functions", &sampling.functions),
        ("suffix", &sampling.suffix),
    ] {
        if set(value) && value.as_ref().is_some_and(|v| v != &Value::Array(vec![])) {
            return Err(unsupported(name));
        }
    }
    if sampling
        .logit_bias
        .as_ref()
        .is_some_and(|v| v.as_object().is_some_and(|m| !m.is_empty()))
    {
        return Err(unsupported("logit_bias"));
    }
    for (name, value) in [
        ("frequency_penalty", sampling.frequency_penalty),
        ("presence_penalty", sampling.presence_penalty),
    ] {
        if value.is_some_and(|v| v != 0.0) {
            return Err(unsupported(name));
        }
    }
    if sampling.echo == Some(true) {
        return Err(unsupported("echo"));
    }
    if sampling.best_of.is_some_and(|b| b > 1) {
        return Err(unsupported("best_of"));
    }
    let n = sampling.n.unwrap_or(1);
    if n == 0 || n > MAX_CHOICES {
        return Err(
            ApiError::invalid(format!("`n` must be between 1 and {MAX_CHOICES}, got {n}"))
                .param("n"),
        );
    }
    let stop = match &sampling.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(list)) => list.clone(),
    };
    if stop.len() > MAX_STOPS {
        return Err(ApiError::invalid(format!("at most {MAX_STOPS} stop strings")).param("stop"));
    }
    let max_tokens = match sampling.max_completion_tokens.or(sampling.max_tokens) {
        Some(0) => {
            return Err(ApiError::invalid("`max_tokens` must be at least 1").param("max_tokens"))
        }
        Some(m) => m.min(cap),
        None => cap,
    };
    let params = SamplingParams {
        temperature: sampling.temperature.unwrap_or(1.0),
        top_p: sampling.top_p.unwrap_or(1.0),
        seed: sampling.seed.unwrap_or(0),
        ..SamplingParams::default()
    };
    params
        .validate()
        .map_err(|e| ApiError::invalid(e).param("temperature"))?;
    let grammar = match &sampling.response_format {
        None => None,
        Some(format) => response_grammar(format)?,
    };
    let mut request = GenerationRequest::new(prompt, max_tokens)
        .with_sampling(params)
        .with_stop(stop.into_iter().filter(|s| !s.is_empty()));
    request.grammar = grammar;
    Ok(Checked {
        request,
        n,
        stream: sampling.stream,
        include_usage: sampling
            .stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage),
        user: sampling.user.clone(),
    })
}

/// The grammar a `response_format` asks for: none for `text`, any JSON object for
/// `json_object`, the schema's language for `json_schema`.
fn response_grammar(format: &Value) -> Result<Option<String>, ApiError> {
    let bad = |message: String| ApiError::invalid(message).param("response_format");
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(schema::json_object_grammar())),
        Some("json_schema") => {
            let schema =
                format
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .ok_or_else(|| {
                        bad("`response_format.json_schema.schema` is missing: give the JSON schema \
                         of the reply there"
                        .to_string())
                    })?;
            schema::grammar_for_schema(schema)
                .map(Some)
                .map_err(|e| bad(format!("cannot turn the JSON schema into a grammar: {e}")))
        }
        other => Err(bad(format!(
            "`response_format.type` must be text, json_object or json_schema, got {}",
            other.map_or("nothing".to_string(), |o| format!("`{o}`"))
        ))),
    }
}

/// OpenAI's `finish_reason`.
pub fn finish_reason(reason: StopReason) -> &'static str {
    match reason {
        StopReason::MaxTokens | StopReason::ContextFull => "length",
        StopReason::EndOfText | StopReason::StopString | StopReason::GrammarComplete => "stop",
    }
}

/// Token counts of a response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl Usage {
    /// The usage of `n` completions of one prompt: the prompt counted once, as OpenAI does.
    pub fn of(completions: &[&Completion]) -> Usage {
        let prompt_tokens = completions.first().map_or(0, |c| c.prompt_tokens);
        let completion_tokens = completions.iter().map(|c| c.completion_tokens).sum();
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// Seconds since the Unix epoch, for `created`.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(json: Value) -> Sampling {
        serde_json::from_value(json).unwrap()
    }

    fn prompt() -> Prompt {
        Prompt::Raw("hello".into())
    }

    #[test]
    fn requests_are_checked_with_openai_defaults_and_a_capped_max_tokens() {
        let checked = check(&sampling(serde_json::json!({})), prompt(), 256).unwrap();
        assert_eq!(checked.request.max_tokens, 256);
        assert_eq!(checked.request.sampling.temperature, 1.0);
        assert_eq!(checked.n, 1);
        let checked = check(
            &sampling(serde_json::json!({
                "max_tokens": 100000, "temperature": 0, "seed": 9, "stop": "\n", "n": 3
            })),
            prompt(),
            256,
        )
        .unwrap();
        assert_eq!(checked.request.max_tokens, 256);
        assert_eq!(checked.request.sampling.seed, 9);
        assert_eq!(checked.request.stop, vec!["\n".to_string()]);
        assert_eq!(checked.n, 3);
    }

    #[test]
    fn what_tuningfork_cannot_honour_is_refused_naming_the_parameter() {
        for (body, param) in [
            (serde_json::json!({"n": 9}), "n"),
            (serde_json::json!({"logprobs": true}), "logprobs"),
            (
                serde_json::json!({"tools": [{"type": "function"}]}),
                "tools",
            ),
            (
                serde_json::json!({"frequency_penalty": 0.5}),
                "frequency_penalty",
            ),
            (serde_json::json!({"temperature": -1}), "temperature"),
            (serde_json::json!({"max_tokens": 0}), "max_tokens"),
            (
                serde_json::json!({"stop": ["a", "b", "c", "d", "e"]}),
                "stop",
            ),
            (
                serde_json::json!({"response_format": {"type": "xml"}}),
                "response_format",
            ),
            (
                serde_json::json!({"response_format": {"type": "json_schema"}}),
                "response_format",
            ),
        ] {
            let error = check(&sampling(body.clone()), prompt(), 64).unwrap_err();
            assert_eq!(error.status, 400, "{body}");
            assert_eq!(
                error.param.as_deref(),
                Some(param),
                "{body}: {}",
                error.message
            );
        }
        // Explicit "off" values of unsupported features are fine.
        let off = serde_json::json!({"logprobs": false, "tools": [], "frequency_penalty": 0});
        assert!(check(&sampling(off), prompt(), 64).is_ok());
    }

    #[test]
    fn messages_map_roles_and_text_parts() {
        let wire: Vec<WireMessage> = serde_json::from_value(serde_json::json!([
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        ]))
        .unwrap();
        assert_eq!(
            messages(&wire).unwrap(),
            vec![Message::system("be brief"), Message::user("hi")]
        );
        let tool: Vec<WireMessage> =
            serde_json::from_value(serde_json::json!([{"role": "tool", "content": "x"}])).unwrap();
        assert!(messages(&tool).unwrap_err().message.contains("role `tool`"));
        assert!(messages(&[]).is_err());
        let error =
            parse_body::<ChatRequest>(b"{\"model\": \"m\",\n \"messages\": [}").unwrap_err();
        assert!(error.message.contains("not valid JSON") && error.message.contains("line 2"));
    }
}

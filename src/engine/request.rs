//! What a caller asks of the engine and what it gets back.

use serde::{Deserialize, Serialize};

use super::sampling::SamplingParams;

/// A speaker in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// The input of a generation: a conversation rendered through the model's chat format, or a
/// raw prompt passed to the tokenizer as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Prompt {
    Chat(Vec<Message>),
    Raw(String),
}

/// A complete generation request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    pub prompt: Prompt,
    pub sampling: SamplingParams,
    /// Upper bound on generated tokens.
    pub max_tokens: u32,
    /// Generation stops before the first occurrence of any of these; the text ends before it.
    pub stop: Vec<String>,
    /// A GBNF grammar (root rule `root`) that every generated token must respect.
    pub grammar: Option<String>,
}

impl GenerationRequest {
    /// A greedy request for `prompt` with at most `max_tokens` new tokens.
    pub fn new(prompt: Prompt, max_tokens: u32) -> Self {
        GenerationRequest {
            prompt,
            sampling: SamplingParams::greedy(),
            max_tokens,
            stop: Vec::new(),
            grammar: None,
        }
    }

    pub fn chat(messages: Vec<Message>, max_tokens: u32) -> Self {
        Self::new(Prompt::Chat(messages), max_tokens)
    }

    pub fn raw(prompt: impl Into<String>, max_tokens: u32) -> Self {
        Self::new(Prompt::Raw(prompt.into()), max_tokens)
    }

    pub fn with_sampling(mut self, sampling: SamplingParams) -> Self {
        self.sampling = sampling;
        self
    }

    pub fn with_stop(mut self, stop: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.stop = stop.into_iter().map(Into::into).collect();
        self
    }

    pub fn with_grammar(mut self, grammar: impl Into<String>) -> Self {
        self.grammar = Some(grammar.into());
        self
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced an end-of-generation token.
    EndOfText,
    /// A stop string was produced (and cut from the text).
    StopString,
    /// `max_tokens` tokens were generated.
    MaxTokens,
    /// The context window is full.
    ContextFull,
    /// The grammar admits no further token.
    GrammarComplete,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::EndOfText => "end_of_text",
            StopReason::StopString => "stop_string",
            StopReason::MaxTokens => "max_tokens",
            StopReason::ContextFull => "context_full",
            StopReason::GrammarComplete => "grammar_complete",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "end_of_text" => StopReason::EndOfText,
            "stop_string" => StopReason::StopString,
            "max_tokens" => StopReason::MaxTokens,
            "context_full" => StopReason::ContextFull,
            "grammar_complete" => StopReason::GrammarComplete,
            _ => return None,
        })
    }
}

/// Wall-clock figures of one generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub prefill_ms: f64,
    pub decode_ms: f64,
}

/// The engine's answer to a [`GenerationRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub text: String,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub stop_reason: StopReason,
    /// Byte offset of `text` from which the token budget, not the model, decided what came
    /// (the values from there on were cut short to finish the grammar in time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_at: Option<u32>,
    /// Generated tokens that were appended as a grammar-forced span and then confirmed, rather
    /// than decoded one at a time.
    #[serde(default)]
    pub forced_tokens: u32,
    pub timings: Timings,
}

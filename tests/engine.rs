//! The engine on the real models: determinism, sampling, grammars, templates, faults.

mod common;

use common::*;
use tuningfork::engine::{
    EngineConfig, EngineError, GenerationRequest, Message, SamplingParams, StopReason,
};
use tuningfork::generator::GenerateError;

fn question() -> Vec<Message> {
    vec![
        Message::system("You are a concise assistant."),
        Message::user("Name three fruits."),
    ]
}

#[test]
fn greedy_output_is_identical_across_engine_loads() {
    let request = GenerationRequest::chat(question(), 32);
    let first = {
        let engine = load(SMOLLM, EngineConfig::default());
        block_on(complete(&engine, request.clone())).unwrap()
    };
    let second = {
        let engine = load(SMOLLM, EngineConfig::default());
        block_on(complete(&engine, request.clone())).unwrap()
    };
    assert!(!first.text.trim().is_empty());
    assert!(first.completion_tokens > 0);
    assert_eq!(first.text, second.text);
    assert_eq!(first.completion_tokens, second.completion_tokens);
}

#[test]
fn seeded_sampling_repeats_per_seed_and_varies_across_seeds() {
    let engine = shared(SMOLLM);
    let run = |seed| {
        let request =
            GenerationRequest::chat(vec![Message::user("Write one sentence about the sea.")], 24)
                .with_sampling(SamplingParams::seeded(1.0, seed));
        block_on(complete(&engine, request)).unwrap().text
    };
    let a1 = run(1);
    let a2 = run(1);
    assert_eq!(a1, a2, "the same seed must give the same text");
    let others: Vec<String> = (2..6).map(run).collect();
    assert!(
        others.iter().any(|t| t != &a1),
        "five seeds gave one text: {a1:?}"
    );
}

#[test]
fn grammar_constrains_every_output() {
    let engine = shared(SMOLLM);
    for question in [
        "Is water wet?",
        "Is fire cold?",
        "Tell me a story about dragons.",
    ] {
        let request = GenerationRequest::chat(vec![Message::user(question)], 8)
            .with_grammar(r#"root ::= "yes" | "no""#);
        let completion = block_on(complete(&engine, request)).unwrap();
        assert!(
            completion.text == "yes" || completion.text == "no",
            "{question} -> {:?}",
            completion.text
        );
    }
}

#[test]
fn bad_grammar_fails_that_request_only() {
    let engine = shared(SMOLLM);
    let bad = GenerationRequest::chat(vec![Message::user("hi")], 8).with_grammar("root ::= (");
    assert!(matches!(
        block_on(complete(&engine, bad)),
        Err(GenerateError::Engine(EngineError::Grammar(_)))
    ));
    let good = GenerationRequest::chat(vec![Message::user("hi")], 8);
    assert!(block_on(complete(&engine, good)).is_ok());
}

#[test]
fn stop_strings_cut_the_text() {
    let engine = shared(SMOLLM);
    let request = GenerationRequest::raw("Count: 1, 2, 3, 4, 5, 6,", 40).with_stop([" 9"]);
    let completion = block_on(complete(&engine, request)).unwrap();
    assert_eq!(completion.stop_reason, StopReason::StopString);
    assert!(!completion.text.contains(" 9"), "{:?}", completion.text);
    assert!(completion.text.contains('8'), "{:?}", completion.text);
}

#[test]
fn max_tokens_bounds_generation() {
    let engine = shared(SMOLLM);
    let request = GenerationRequest::raw("Count: 1, 2, 3, 4, 5, 6,", 5);
    let completion = block_on(complete(&engine, request)).unwrap();
    assert_eq!(completion.stop_reason, StopReason::MaxTokens);
    assert_eq!(completion.completion_tokens, 5);
}

#[test]
fn prompt_longer_than_the_context_is_refused_and_the_engine_goes_on() {
    let engine = load(
        SMOLLM,
        EngineConfig {
            n_ctx: 64,
            ..EngineConfig::default()
        },
    );
    let long = "word ".repeat(200);
    let err = block_on(complete(&engine, GenerationRequest::raw(long, 4))).unwrap_err();
    assert!(
        matches!(
            err,
            GenerateError::Engine(EngineError::PromptTooLong { n_ctx: 64, .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("--ctx-size"));
    // Generation that runs into the end of the context stops cleanly.
    let request = GenerationRequest::raw("Count: 1, 2, 3, 4, 5, 6,", 500);
    let completion = block_on(complete(&engine, request)).unwrap();
    assert_eq!(completion.stop_reason, StopReason::ContextFull);
}

#[test]
fn base_model_without_template_uses_the_plain_format() {
    let engine = shared(GEMMA);
    assert!(!engine.has_chat_template());
    let prepared = engine
        .prepare(GenerationRequest::chat(question(), 16))
        .unwrap();
    assert!(prepared
        .rendered
        .ends_with("User: Name three fruits.\n\nAssistant:"));
    assert!(prepared.request.stop.iter().any(|s| s == "\nUser:"));
    let completion = block_on(complete(&engine, GenerationRequest::chat(question(), 16))).unwrap();
    assert!(completion.completion_tokens > 0);
    // Raw completion works on a base model too.
    let raw = block_on(complete(
        &engine,
        GenerationRequest::raw("The capital of France is", 6),
    ))
    .unwrap();
    assert!(raw.completion_tokens > 0);
}

#[test]
fn chat_model_uses_its_template() {
    let engine = shared(SMOLLM);
    assert!(engine.has_chat_template());
    let prepared = engine
        .prepare(GenerationRequest::chat(question(), 8))
        .unwrap();
    assert!(
        prepared.rendered.contains("<|im_start|>user"),
        "{}",
        prepared.rendered
    );
}

#[test]
fn invalid_sampling_is_refused_before_inference() {
    let engine = shared(SMOLLM);
    let request = GenerationRequest::raw("x", 4).with_sampling(SamplingParams {
        top_p: 2.0,
        ..SamplingParams::default()
    });
    assert!(matches!(
        engine.prepare(request),
        Err(EngineError::InvalidRequest(_))
    ));
    assert!(engine.prepare(GenerationRequest::raw("x", 0)).is_err());
}

#[test]
fn fingerprint_records_the_build() {
    let engine = shared(SMOLLM);
    let fp = engine.fingerprint();
    assert_eq!(fp.backend, "cpu");
    assert!(fp.system_info.contains("CPU"), "{}", fp.system_info);
    assert!(!fp.cpu_features().is_empty());
    assert!(!fp.flash_attention && !fp.kv_unified);
}

#[test]
fn a_batched_measurement_leaves_no_trace_in_later_outputs() {
    use tuningfork::engine::BatchedWorkload;
    let engine = shared(SMOLLM);
    let request = GenerationRequest::chat(question(), 24);
    let before = block_on(complete(&engine, request.clone())).unwrap();
    let prompt = engine.tokenize("Count upwards without stopping: 1, 2, 3, 4, 5, 6, 7, 8, 9,");
    let timings = block_on(engine.measure_batched(BatchedWorkload {
        sequences: 2,
        prompt: prompt.clone(),
        gen_tokens: 4,
    }))
    .unwrap();
    assert!(
        timings.prefill_s > 0.0 && timings.decode_s > 0.0,
        "{timings:?}"
    );
    // The slots' cached prefixes are gone with the measurement's cache; a request computes
    // its prompt again and answers exactly as before.
    let after = block_on(complete(&engine, request)).unwrap();
    assert_eq!(before.text, after.text);
    // More sequences than slots, or more tokens than a slot holds, are refused with the fix.
    let slots = engine.config().slots;
    let too_many = block_on(engine.measure_batched(BatchedWorkload {
        sequences: slots + 1,
        prompt: prompt.clone(),
        gen_tokens: 4,
    }))
    .unwrap_err();
    assert!(too_many.to_string().contains("--slots"), "{too_many}");
    let too_long = block_on(engine.measure_batched(BatchedWorkload {
        sequences: 1,
        prompt,
        gen_tokens: engine.config().n_ctx,
    }))
    .unwrap_err();
    assert!(too_long.to_string().contains("--ctx-size"), "{too_long}");
}

//! The determinism contract of the batched engine, on both shipped models: a request's output
//! is byte-identical whether it runs alone, in a full batch, with or without prefix reuse,
//! with or without jump-forward spans, and within a tight token budget.

mod common;

use std::sync::Arc;

use common::*;
use tuningfork::engine::{
    Completion, Engine, EngineConfig, GenerationRequest, Message, SamplingParams,
};
use tuningfork::program::grammar::for_outputs;
use tuningfork::program::{FieldType, OutputField};

/// The reply grammar of a four-field extraction: field names and separators are forced text.
fn extraction_grammar() -> String {
    let field = |name: &str, ty: FieldType| OutputField {
        name: name.into(),
        description: None,
        ty,
        max_chars: None,
    };
    for_outputs(&[
        field("name", FieldType::Text),
        field("city", FieldType::Text),
        field("quantity", FieldType::Integer),
        field(
            "urgency",
            FieldType::Choice {
                choices: vec!["low".into(), "normal".into(), "urgent".into()],
            },
        ),
    ])
}

/// 45 requests: long shared few-shot prefixes with distinct questions, short unrelated prompts,
/// raw prompts, greedy and seeded sampling, grammars (multi-field replies with forced text,
/// some within a budget too small for the model's own reply).
fn mixed_requests() -> Vec<GenerationRequest> {
    let instructions = "You are a careful classifier of customer messages. Read the message and \
        answer with one word: positive, negative or neutral. Examples follow.";
    let shots = [
        ("I love this blender, it works great.", "positive"),
        ("The package arrived broken and late.", "negative"),
        ("The store opens at nine.", "neutral"),
        ("Fantastic support, they fixed it in minutes!", "positive"),
        ("I waited two hours and nobody answered.", "negative"),
    ];
    let questions = [
        "The battery lasts all day.",
        "It stopped working after a week.",
        "My order number is 1234.",
        "Best purchase of the year!",
        "The colour is different from the photo.",
        "Delivery took three days.",
        "Absolutely terrible experience.",
        "It does what it says.",
        "I would buy it again.",
        "The manual is in French.",
        "Customer service hung up on me.",
        "Five stars, highly recommended.",
    ];
    let few_shot = |question: &str| {
        let mut messages = vec![Message::system(instructions)];
        for (text, label) in shots {
            messages.push(Message::user(text));
            messages.push(Message::assistant(label));
        }
        messages.push(Message::user(question));
        messages
    };
    let mut requests = Vec::new();
    for (i, q) in questions.iter().enumerate() {
        // Greedy few-shot evaluation: the common case.
        requests.push(GenerationRequest::chat(few_shot(q), 12));
        // The same prompt with seeded sampling.
        requests.push(
            GenerationRequest::chat(few_shot(q), 16)
                .with_sampling(SamplingParams::seeded(0.9, 100 + i as u64)),
        );
    }
    for (i, q) in [
        "Write a limerick about a cat.",
        "What is 12 times 12?",
        "List three prime numbers.",
        "Say hello in Spanish.",
        "Describe the sea in one sentence.",
        "Name a famous painter.",
    ]
    .iter()
    .enumerate()
    {
        let request = GenerationRequest::chat(vec![Message::user(*q)], 20 + 4 * i as u32);
        requests.push(if i % 2 == 0 {
            request
        } else {
            request.with_sampling(SamplingParams {
                temperature: 0.7,
                top_k: 40,
                top_p: 0.9,
                min_p: 0.05,
                seed: i as u64,
            })
        });
    }
    for (i, text) in [
        "Once upon a time, in a small village,",
        "The three laws of thermodynamics are",
        "def fibonacci(n):",
    ]
    .iter()
    .enumerate()
    {
        requests.push(
            GenerationRequest::raw(*text, 24)
                .with_sampling(SamplingParams::seeded(1.0, 7 + i as u64)),
        );
    }
    for q in ["Is the sun hot?", "Is ice warm?", "Do fish swim?"] {
        requests
            .push(GenerationRequest::chat(few_shot(q), 4).with_grammar(r#"root ::= "yes" | "no""#));
    }
    let extract = |message: &str| {
        vec![
            Message::system(
                "Extract the customer's name, city, how many items they order and how urgent \
                 it is. Reply with the lines name, city, quantity and urgency.",
            ),
            Message::user(message),
        ]
    };
    for (i, message) in [
        "Hi, this is Marta from Porto, please send 12 boxes of tea as soon as you can!",
        "Order: 3 lamps for Jonas in Ghent, no hurry at all.",
        "Send forty-two pencils to Olga, Graz. It is needed by tomorrow morning.",
    ]
    .iter()
    .enumerate()
    {
        let grammar = extraction_grammar();
        requests.push(GenerationRequest::chat(extract(message), 48).with_grammar(&grammar));
        requests.push(
            GenerationRequest::chat(extract(message), 48)
                .with_grammar(&grammar)
                .with_sampling(SamplingParams::seeded(0.8, 40 + i as u64)),
        );
        // Too few tokens for the model's own reply: the budget closes values early.
        requests.push(GenerationRequest::chat(extract(message), 22).with_grammar(&grammar));
    }
    requests
}

fn alone(engine: &Arc<Engine>, requests: &[GenerationRequest]) -> Vec<Completion> {
    requests
        .iter()
        .map(|r| block_on(complete(engine, r.clone())).unwrap())
        .collect()
}

fn together(engine: Arc<Engine>, requests: &[GenerationRequest]) -> Vec<Completion> {
    let runtime = multi_thread_runtime();
    runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, request) in requests.iter().cloned().enumerate() {
            let engine = Arc::clone(&engine);
            set.spawn(async move { (i, complete(&engine, request).await) });
        }
        let mut results: Vec<Option<Completion>> = vec![None; requests.len()];
        while let Some(joined) = set.join_next().await {
            let (i, result) = joined.unwrap();
            results[i] = Some(result.unwrap());
        }
        results.into_iter().map(Option::unwrap).collect()
    })
}

fn check_contract(model: &str) {
    let requests = mixed_requests();
    assert!(requests.len() >= 32);
    let reference = {
        let engine = load(
            model,
            EngineConfig {
                slots: 1,
                prefix_reuse: false,
                jump_forward: false,
                ..EngineConfig::default()
            },
        );
        alone(&engine, &requests)
    };
    // Every grammar reply is complete, the tight ones by the budget's doing.
    let extraction = tuningfork::gbnf::Grammar::parse(&extraction_grammar()).unwrap();
    for (request, completion) in requests.iter().zip(&reference) {
        if request.grammar.as_deref() == Some(extraction_grammar().as_str()) {
            assert!(
                extraction.matches(&completion.text),
                "{model}: an incomplete reply {:?}",
                completion.text
            );
            assert!(completion.completion_tokens <= request.max_tokens);
        }
    }
    assert!(
        reference.iter().any(|c| c.cut_at.is_some()),
        "{model}: no reply was cut short"
    );
    assert!(reference.iter().all(|c| c.forced_tokens == 0));
    // One slot, with prefix reuse: every forced span is taken (with several slots, a span goes
    // ahead only when every decoding slot has one at the same step).
    let configs = [
        (8, true, 512),
        (4, false, 512),
        (3, true, 64),
        (1, true, 512),
    ];
    for (slots, prefix_reuse, n_batch) in configs {
        let engine = load(
            model,
            EngineConfig {
                slots,
                prefix_reuse,
                n_batch,
                ..EngineConfig::default()
            },
        );
        let batched = together(Arc::clone(&engine), &requests);
        for (i, (a, b)) in reference.iter().zip(&batched).enumerate() {
            assert_eq!(
                a.text, b.text,
                "{model}: request {i} differs with slots={slots} prefix_reuse={prefix_reuse} n_batch={n_batch}"
            );
            assert_eq!(a.stop_reason, b.stop_reason, "{model}: request {i}");
            assert_eq!(
                a.completion_tokens, b.completion_tokens,
                "{model}: request {i}"
            );
            assert_eq!(a.cut_at, b.cut_at, "{model}: request {i}");
        }
        let forced: u32 = batched.iter().map(|c| c.forced_tokens).sum();
        if slots == 1 {
            assert!(forced > 0, "{model}: no token was jump-forwarded");
        }
        // Alone again on the batched engine, after the batch: still identical.
        let again = block_on(complete(&engine, requests[0].clone())).unwrap();
        assert_eq!(again.text, reference[0].text);
    }
    assert!(reference.iter().any(|c| c.completion_tokens > 2));
}

#[test]
fn outputs_do_not_depend_on_batching_smollm() {
    check_contract(SMOLLM);
}

#[test]
fn outputs_do_not_depend_on_batching_gemma() {
    check_contract(GEMMA);
}

#[test]
fn a_dropped_request_frees_its_slot_and_others_finish() {
    let engine = load(
        SMOLLM,
        EngineConfig {
            slots: 1,
            ..EngineConfig::default()
        },
    );
    let runtime = multi_thread_runtime();
    runtime.block_on(async {
        let long = GenerationRequest::raw("Count: 1, 2, 3,", 2000);
        let e = Arc::clone(&engine);
        let handle = tokio::spawn(async move { complete(&e, long).await });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        handle.abort();
        // With one slot, this only finishes if the aborted request gave its slot up.
        let short = GenerationRequest::raw("Hello", 4);
        let done =
            tokio::time::timeout(std::time::Duration::from_secs(20), complete(&engine, short))
                .await
                .expect("the dropped request must not hold the only slot");
        assert!(done.is_ok());
    });
}

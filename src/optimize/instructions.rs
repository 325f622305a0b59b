//! Instruction proposals, made robust for small models: the request a proposer model answers
//! (decoded under a grammar that admits one line of plain text in a fixed frame), the checks
//! that reject degenerate proposals with a reason, and the merge of two candidates that
//! improved different steps.
//!
//! Small models are known to answer a request for an instruction with an empty line, the
//! current instruction again, a copy of an example, a JSON object or an unending ramble; each
//! of these is refused here, recorded with its reason by the caller, and never becomes a
//! candidate.

use super::session::Session;
use super::OptimizeError;
use crate::engine::{GenerationRequest, Message, SamplingParams};
use crate::program::adapter::format_value;
use crate::program::{Predictor, Program, Values};

/// The longest instruction accepted by default, in characters: sized so that a 135M-parameter
/// task model still has room for demonstrations and the input.
pub const DEFAULT_MAX_CHARS: usize = 400;

/// The grammar of a proposal: one line of text after a fixed label. JSON objects, lists and
/// multi-line answers cannot be produced at all.
pub const PROPOSAL_GRAMMAR: &str = "root ::= \"instruction: \" [^\\n{}\\[\\]`]+\n";

/// One example the proposer reflects on: what the step read and wrote, and what the metric
/// said about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reflection {
    pub inputs: Values,
    /// The step's outputs, or `None` when its reply could not be used.
    pub outputs: Option<Values>,
    pub score: f64,
    /// The metric's feedback text.
    pub feedback: Option<String>,
}

/// The request that asks the proposer for a better instruction for `step`, from examples of
/// what the step did with its current one.
pub fn reflection_request(
    step: &Predictor,
    examples: &[Reflection],
    max_chars: usize,
    seed: u64,
) -> GenerationRequest {
    let mut shown = String::new();
    for (i, example) in examples.iter().enumerate() {
        shown.push_str(&format!("Example {}\n", i + 1));
        for (name, value) in &example.inputs {
            shown.push_str(&format!(
                "  input {name}: {}\n",
                one_line(&format_value(value))
            ));
        }
        match &example.outputs {
            Some(outputs) => {
                for (name, value) in outputs {
                    shown.push_str(&format!(
                        "  output {name}: {}\n",
                        one_line(&format_value(value))
                    ));
                }
            }
            None => shown.push_str("  output: (the reply could not be read)\n"),
        }
        shown.push_str(&format!("  score: {:.2}\n", example.score));
        if let Some(feedback) = &example.feedback {
            shown.push_str(&format!("  feedback: {}\n", one_line(feedback)));
        }
    }
    let fields: Vec<String> = step
        .signature
        .inputs
        .iter()
        .map(|f| f.name.clone())
        .collect();
    let outputs: Vec<String> = step
        .signature
        .outputs
        .iter()
        .map(|f| f.name.clone())
        .collect();
    let system = "You write instructions for a small language model. The current instruction \
                  leads to the wrong answers shown. Write a NEW instruction, different from the \
                  current one, that tells the model how to get these cases right: name the \
                  mistake and the rule that avoids it. Plain sentences on one line; no \
                  examples copied, no JSON, no lists.";
    let user = format!(
        "The step reads {} and writes {}.\nCurrent instruction (do not repeat it): {}\n\nWhat happened with it:\n{shown}\nA new instruction of at most {max_chars} characters that fixes these mistakes:",
        fields.join(", "),
        outputs.join(", "),
        one_line(&step.signature.instructions),
    );
    // Tokens are about four characters; the cap leaves room to close the line.
    let max_tokens = (max_chars / 3 + 16) as u32;
    GenerationRequest::chat(
        vec![Message::system(system), Message::user(user)],
        max_tokens,
    )
    .with_sampling(SamplingParams::seeded(0.7, seed))
    .with_grammar(PROPOSAL_GRAMMAR)
}

/// The grammar of a dataset summary: one line after a fixed label.
pub const SUMMARY_GRAMMAR: &str = "root ::= \"summary: \" [^\\n{}\\[\\]]+\n";

/// The tips MIPROv2's grounded proposer draws from, one per proposal (the first: no tip).
pub const TIPS: [&str; 6] = [
    "",
    "Be creative: find a new way to put the task.",
    "Keep the instruction simple and short.",
    "Describe the task precisely, naming what decides each output.",
    "Say what is most important to get right, as if mistakes were costly.",
    "Give the model a role that suits the task.",
];

/// How `program` looks to a proposer, in prose: what each step reads and writes, with the
/// fields' types, choices and descriptions, and its current instruction. (Small code models
/// shown a structured listing answer with more listing, not with an instruction.)
pub fn describe_program(program: &Program) -> String {
    let mut text = String::new();
    let many = program.steps.len() > 1;
    for (i, step) in program.steps.iter().enumerate() {
        let about = |name: &str, description: Option<&String>| match description {
            Some(d) => format!("{name} ({})", one_line(d)),
            None => name.to_string(),
        };
        let reads: Vec<String> = step
            .signature
            .inputs
            .iter()
            .map(|f| about(&f.name, f.description.as_ref()))
            .collect();
        let writes: Vec<String> = step
            .signature
            .outputs
            .iter()
            .map(|f| {
                format!(
                    "{}, {}",
                    about(&f.name, f.description.as_ref()),
                    f.ty.describe()
                )
            })
            .collect();
        if many {
            text.push_str(&format!("Step {} of {}: ", i + 1, program.steps.len()));
        }
        text.push_str(&format!(
            "the model reads {} and writes {}. Its current instruction: \"{}\"\n",
            reads.join("; "),
            writes.join("; "),
            one_line(&step.signature.instructions)
        ));
    }
    text
}

/// One example as a line of `name: value` pairs.
fn example_line(values: &Values) -> String {
    values
        .iter()
        .map(|(name, value)| format!("{name}: {}", one_line(&format_value(value))))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The request that asks the proposer to summarise a sample of the training data, in one
/// line: what the examples are about and what decides their outputs.
pub fn summary_request(program: &Program, examples: &[Values], seed: u64) -> GenerationRequest {
    let shown: String = examples
        .iter()
        .map(|e| format!("- {}\n", example_line(e)))
        .collect();
    let user = format!(
        "The task: {}\nExamples of its data:\n{shown}\nIn one or two sentences, describe this data: what the examples are about and what decides the outputs.",
        describe_program(program)
    );
    GenerationRequest::chat(
        vec![
            Message::system(
                "You study datasets and describe them briefly. Plain sentences on one line.",
            ),
            Message::user(user),
        ],
        96,
    )
    .with_sampling(SamplingParams::seeded(0.7, seed))
    .with_grammar(SUMMARY_GRAMMAR)
}

/// Reads a summary reply: the text after its label, or `None` when there is none.
pub fn read_summary(reply: &str) -> Option<String> {
    let text = one_line(reply.strip_prefix("summary:")?);
    (text.chars().filter(|c| c.is_alphabetic()).count() >= 12).then_some(text)
}

/// MIPROv2's grounded proposal: a new instruction for step `step` of `program`, written from a
/// summary of the data, a description of the program, examples of the step (a demonstration
/// set) and a tip.
pub fn grounded_request(
    program: &Program,
    step: usize,
    summary: Option<&str>,
    examples: &[Values],
    tip: &str,
    max_chars: usize,
    seed: u64,
) -> GenerationRequest {
    let predictor = &program.steps[step];
    let mut user = String::new();
    if let Some(summary) = summary {
        user.push_str(&format!("About the data: {summary}\n\n"));
    }
    user.push_str(&format!(
        "The task: {}",
        describe_program(&Program {
            steps: vec![predictor.clone()],
            retrievals: Vec::new(),
        })
    ));
    if program.steps.len() > 1 {
        user.push_str(&format!(
            "It is step {} (`{}`) of a program:\n{}",
            step + 1,
            predictor.name,
            describe_program(program)
        ));
    }
    if !examples.is_empty() {
        user.push_str("Examples of this step done right:\n");
        for example in examples {
            user.push_str(&format!("- {}\n", example_line(example)));
        }
    }
    if !tip.is_empty() {
        user.push_str(&format!("Tip: {tip}\n"));
    }
    user.push_str(&format!(
        "\nWrite a better instruction for the model, in plain words, starting with a verb, of at most {max_chars} characters:"
    ));
    let system = "You write instructions for a small language model that runs one step of a \
                  program. Tell it what to do and how to decide its outputs. Plain sentences on \
                  one line; no examples copied, no JSON, no lists.";
    GenerationRequest::chat(
        vec![Message::system(system), Message::user(user)],
        (max_chars / 3 + 16) as u32,
    )
    .with_sampling(SamplingParams::seeded(0.9, seed))
    .with_grammar(PROPOSAL_GRAMMAR)
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Why a proposal was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the reply is not in the proposal frame")]
    Unframed,
    #[error("the instruction is empty or too short to mean anything")]
    Empty,
    #[error("the instruction is {0} characters, over the cap")]
    TooLong(usize),
    #[error("the instruction is the current one again")]
    Unchanged,
    #[error("the instruction repeats an earlier candidate's")]
    Duplicate,
    #[error("the instruction copies an example's input")]
    CopiesInput,
}

/// Reads a proposer's reply as a new instruction for a step whose instruction is `current`,
/// rejecting degenerate ones: empty, over `max_chars`, unchanged, a copy of one in `seen`, or
/// one that contains an example's input text.
pub fn read_proposal(
    reply: &str,
    current: &str,
    seen: &[String],
    examples: &[Reflection],
    max_chars: usize,
) -> Result<String, Rejected> {
    let text = reply
        .strip_prefix("instruction:")
        .ok_or(Rejected::Unframed)?;
    let instruction = one_line(text);
    // Small models often quote what they write.
    let instruction = instruction
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .map_or(instruction.clone(), |t| t.trim().to_string());
    let chars = instruction.chars().count();
    if chars < 12 || !instruction.chars().any(char::is_alphabetic) {
        return Err(Rejected::Empty);
    }
    if chars > max_chars {
        return Err(Rejected::TooLong(chars));
    }
    // Equal up to case, spacing and punctuation.
    let words = |text: &str| -> String {
        text.chars()
            .filter(|c| c.is_alphanumeric() || c.is_whitespace())
            .collect::<String>()
            .to_lowercase()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let same = |a: &str, b: &str| words(a) == words(b);
    if same(current, &instruction) {
        return Err(Rejected::Unchanged);
    }
    if seen.iter().any(|s| same(s, &instruction)) {
        return Err(Rejected::Duplicate);
    }
    let copies = examples.iter().flat_map(|e| e.inputs.values()).any(|v| {
        let input = one_line(&format_value(v));
        input.chars().count() >= 24 && instruction.contains(&input)
    });
    if copies {
        return Err(Rejected::CopiesInput);
    }
    Ok(instruction)
}

/// Proposals asked for per instruction before it is given up: a small proposer often repeats
/// what it was shown, and another seed is often enough.
pub const PROPOSAL_ATTEMPTS: u64 = 3;

/// What a proposal is checked against (see [`read_proposal`]).
pub struct ProposalRules<'a> {
    /// The step's current instruction.
    pub current: &'a str,
    /// Instructions already proposed.
    pub seen: &'a [String],
    /// The examples the proposer was shown.
    pub examples: &'a [Reflection],
    pub max_chars: usize,
}

/// Asks the proposer for a new instruction until one passes [`read_proposal`], at most
/// [`PROPOSAL_ATTEMPTS`] times; attempt `k` sends `request(seed + k)`. Each rejection is noted
/// with its reason, after `context`. `None` when every attempt was rejected.
pub(super) async fn ask_for_instruction(
    session: &Session,
    request: impl Fn(u64) -> GenerationRequest,
    seed: u64,
    rules: &ProposalRules<'_>,
    context: &str,
) -> Result<Option<String>, OptimizeError> {
    for attempt in 0..PROPOSAL_ATTEMPTS {
        let reply = session
            .ask_proposer(request(seed.wrapping_add(attempt)))
            .await?;
        match read_proposal(
            &reply,
            rules.current,
            rules.seen,
            rules.examples,
            rules.max_chars,
        ) {
            Ok(instruction) => return Ok(Some(instruction)),
            Err(rejected) => session.note(&format!(
                "{context}: proposal rejected ({rejected}): {reply:?}"
            )),
        }
    }
    Ok(None)
}

/// `program` with step `step`'s instruction replaced.
pub fn with_instruction(program: &Program, step: usize, instruction: &str) -> Program {
    let mut program = program.clone();
    if let Some(s) = program.steps.get_mut(step) {
        s.signature.instructions = instruction.to_string();
    }
    program
}

/// GEPA's merge: two descendants `a` and `b` of `ancestor` that changed different steps give a
/// child with both changes. `None` when they are not eligible: a step changed in both, a
/// side that changed nothing, or programs of different shapes.
pub fn merge(ancestor: &Program, a: &Program, b: &Program) -> Option<Program> {
    if a.steps.len() != ancestor.steps.len() || b.steps.len() != ancestor.steps.len() {
        return None;
    }
    let (mut from_a, mut from_b) = (false, false);
    let mut child = ancestor.clone();
    for (i, base) in ancestor.steps.iter().enumerate() {
        let (changed_a, changed_b) = (a.steps[i] != *base, b.steps[i] != *base);
        match (changed_a, changed_b) {
            (true, true) => return None,
            (true, false) => {
                child.steps[i] = a.steps[i].clone();
                from_a = true;
            }
            (false, true) => {
                child.steps[i] = b.steps[i].clone();
                from_b = true;
            }
            (false, false) => {}
        }
    }
    (from_a && from_b).then_some(child)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gbnf::Grammar;
    use crate::program::{FieldType, InputField, OutputField, PredictorKind, Signature};
    use serde_json::json;

    fn step(name: &str, instructions: &str) -> Predictor {
        Predictor {
            nearest: None,
            name: name.into(),
            kind: PredictorKind::Predict,
            signature: Signature {
                instructions: instructions.into(),
                inputs: vec![InputField {
                    name: "review".into(),
                    description: None,
                }],
                outputs: vec![OutputField {
                    name: "sentiment".into(),
                    description: None,
                    ty: FieldType::Text,
                    max_chars: None,
                }],
            },
            demos: Vec::new(),
            optimize: true,
        }
    }

    fn example(review: &str) -> Reflection {
        Reflection {
            inputs: [("review".to_string(), json!(review))]
                .into_iter()
                .collect(),
            outputs: Some(
                [("sentiment".to_string(), json!("positive"))]
                    .into_iter()
                    .collect(),
            ),
            score: 0.0,
            feedback: Some("`sentiment` was \"positive\", expected \"neutral\"".into()),
        }
    }

    #[test]
    fn the_request_shows_the_step_its_examples_and_their_feedback() {
        let request = reflection_request(
            &step("classify", "Classify the review."),
            &[example("The tent weighs two kilograms.")],
            200,
            9,
        );
        let crate::engine::Prompt::Chat(messages) = &request.prompt else {
            panic!("a chat request");
        };
        let user = &messages[1].content;
        assert!(user.contains("Classify the review."), "{user}");
        assert!(user.contains("input review: The tent weighs two kilograms."));
        assert!(user.contains("expected \"neutral\""));
        assert!(user.contains("at most 200 characters"));
        assert_eq!(request.sampling.seed, 9);
        let grammar = Grammar::parse(request.grammar.as_deref().unwrap()).unwrap();
        assert!(grammar.matches("instruction: Say neutral for plain facts."));
        assert!(
            !grammar.matches("instruction: {\"text\": \"x\"}"),
            "no JSON"
        );
        assert!(!grammar.matches("instruction: one\ntwo"), "one line");
        assert!(!grammar.matches("Say neutral."), "the frame is required");
    }

    #[test]
    fn degenerate_proposals_are_rejected_with_their_reason() {
        let current = "Classify the review.";
        let seen = vec!["Label the review as positive, negative or neutral.".to_string()];
        let examples = [example(
            "After a month, the tent weighs about two kilograms.",
        )];
        let read = |reply: &str| read_proposal(reply, current, &seen, &examples, 80);
        assert_eq!(
            read("instruction: Answer neutral when the review only states facts."),
            Ok("Answer neutral when the review only states facts.".to_string())
        );
        assert_eq!(read("Classify it."), Err(Rejected::Unframed));
        assert_eq!(read("instruction:   ...   "), Err(Rejected::Empty));
        assert_eq!(
            read("instruction: classify   the review."),
            Err(Rejected::Unchanged)
        );
        assert_eq!(
            read("instruction: \"Classify the review\""),
            Err(Rejected::Unchanged),
            "quotes, case and punctuation do not make it new"
        );
        assert_eq!(
            read("instruction: \"Say neutral for plain facts.\""),
            Ok("Say neutral for plain facts.".to_string())
        );
        assert_eq!(
            read("instruction: Label the review as positive, negative or neutral."),
            Err(Rejected::Duplicate)
        );
        assert_eq!(
            read("instruction: After a month, the tent weighs about two kilograms."),
            Err(Rejected::CopiesInput)
        );
        let long = format!("instruction: {}", "Think about the tone. ".repeat(10));
        assert!(matches!(read(&long), Err(Rejected::TooLong(n)) if n > 80));
    }

    #[test]
    fn merging_takes_each_side_s_changed_steps() {
        let base = Program {
            steps: vec![step("a", "Do a."), step("b", "Do b.")],
            retrievals: Vec::new(),
        };
        let left = with_instruction(&base, 0, "Do a better.");
        let right = with_instruction(&base, 1, "Do b better.");
        let child = merge(&base, &left, &right).unwrap();
        assert_eq!(child.steps[0].signature.instructions, "Do a better.");
        assert_eq!(child.steps[1].signature.instructions, "Do b better.");
        // Both changed the same step: not eligible; nor is a side that changed nothing.
        let clash = with_instruction(&base, 0, "Do a differently.");
        assert_eq!(merge(&base, &left, &clash), None);
        assert_eq!(merge(&base, &left, &base), None);
        assert_eq!(
            with_instruction(&base, 7, "x"),
            base,
            "no such step: unchanged"
        );
    }
}

//! The optimizers' logic against the deterministic fake model: which demonstrations a
//! bootstrap keeps, how random search breaks ties, what a resumed loop recomputes, where a
//! calls budget stops, and that nothing before the test stage sees a test example. Each test
//! runs in milliseconds on a real SQLite file.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::run::LoopContext;
use super::*;
use crate::artifact::ArtifactModel;
use crate::dataset::{Example, Split};
use crate::engine::{EngineFingerprint, Prompt};
use crate::lm::{FakeCall, FakeLm};
use crate::metrics::Judges;
use crate::observe::Observer;
use crate::store::{LoopStatus, NewRun, Store};
use crate::task::Task;

const TASK: &str = r#"
[task]
name = "fake-sentiment"
model = "fake"
seed = 7

[[steps]]
name = "classify"
kind = "predict"
instructions = "Classify the review."
inputs = [{ name = "review" }]
outputs = [{ name = "sentiment", type = "choice", choices = ["positive", "negative", "neutral"] }]

[dataset]
path = "unused.jsonl"

[metric]
kind = "exact_match"
field = "sentiment"
"#;

const LABELS: [&str; 3] = ["positive", "negative", "neutral"];

fn examples(split: &str, n: usize) -> Vec<Example> {
    (0..n)
        .map(|i| Example {
            source: format!("{split}:{i}"),
            values: [
                ("review".to_string(), json!(format!("{split} review {i}"))),
                ("sentiment".to_string(), json!(LABELS[i % 3])),
            ]
            .into_iter()
            .collect(),
        })
        .collect()
}

fn spec(optimizer: OptimizerConfig) -> LoopSpec {
    let task = Task::parse(TASK, Path::new("fake.toml"), ".".into()).unwrap();
    let (train, val, test) = (
        examples("train", 12),
        examples("val", 6),
        examples("test", 6),
    );
    let hash = |name, examples: &Vec<Example>| Split::new(name, examples.clone()).hash;
    LoopSpec {
        task_file: "fake.toml".into(),
        task_source: TASK.into(),
        program: task.program,
        parent: None,
        optimizer,
        seed: 7,
        model: ArtifactModel {
            name: "fake".into(),
            sha256: "0".repeat(64),
        },
        proposer: None,
        train_hash: hash("train", &train),
        val_hash: hash("val", &val),
        test_hash: hash("test", &test),
        train,
        val,
        test,
        cleaning: Default::default(),
    }
}

fn bootstrap_settings() -> BootstrapSettings {
    BootstrapSettings {
        max_bootstrapped: 2,
        max_labeled: 4,
        max_rounds: 1,
        threshold: 1.0,
    }
}

/// `spec` with a fake proposer model pinned.
fn with_proposer(mut spec: LoopSpec) -> LoopSpec {
    spec.proposer = Some(ArtifactModel {
        name: "fake-proposer".into(),
        sha256: "1".repeat(64),
    });
    spec
}

/// A fake proposer: a short summary when asked for one, else `instruction(call)`.
fn summarising_proposer(
    instruction: impl Fn(&FakeCall) -> String + Send + Sync + 'static,
) -> Arc<FakeLm> {
    Arc::new(FakeLm::new(3).with_script(move |call| {
        Some(
            if call.request.grammar.as_deref() == Some(instructions::SUMMARY_GRAMMAR) {
                "summary: Short reviews.".to_string()
            } else {
                format!("instruction: {}", instruction(call))
            },
        )
    }))
}

/// The reply of a fake asked to restate (the fixed first step of [`TWO_STEPS`]), when it is.
fn restated(call: &FakeCall) -> Option<String> {
    call.request
        .grammar
        .as_deref()
        .is_some_and(|g| g.contains("restated"))
        .then(|| "restated: the same review".to_string())
}

/// The review a call asks about (its last user message).
fn review_of(call: &FakeCall) -> String {
    let Prompt::Chat(messages) = &call.request.prompt else {
        return String::new();
    };
    let last = messages.last().map_or("", |m| m.content.as_str());
    last.strip_prefix("review: ").unwrap_or(last).to_string()
}

/// A fake that answers right exactly for the reviews `knows` accepts, and `neutral`-or-wrong
/// otherwise.
fn oracle(knows: impl Fn(&str) -> bool + Send + Sync + 'static) -> FakeLm {
    let gold: BTreeMap<String, &str> = ["train", "val", "test"]
        .iter()
        .flat_map(|split| examples(split, 12))
        .map(|e| {
            (
                e.values["review"].as_str().unwrap().to_string(),
                LABELS
                    .iter()
                    .find(|l| e.values["sentiment"] == **l)
                    .unwrap(),
            )
        })
        .map(|(r, l)| (r, *l))
        .collect();
    FakeLm::new(1).with_script(move |call| {
        let review = review_of(call);
        let right = gold.get(&review).copied().unwrap_or("neutral");
        let wrong = if right == "positive" {
            "negative"
        } else {
            "positive"
        };
        Some(format!(
            "sentiment: {}",
            if knows(&review) { right } else { wrong }
        ))
    })
}

/// Records the call count when the test stage begins.
#[derive(Default)]
struct Stages {
    lm: Mutex<Option<Arc<FakeLm>>>,
    calls_before_test: Mutex<Option<usize>>,
}

impl Observer for Stages {
    fn stage(&self, stage: &str, _total: u64) {
        if stage == "test split" {
            let lm = self.lm.lock().unwrap();
            *self.calls_before_test.lock().unwrap() = lm.as_ref().map(|lm| lm.call_count());
        }
    }
}

struct Loop {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    optimization_id: i64,
}

impl Loop {
    fn new(spec: &LoopSpec) -> Loop {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store.sqlite")).unwrap());
        let run_id = store
            .begin_run(&NewRun {
                kind: "optimize",
                config: json!({}),
                seed: Some(spec.seed),
                model_sha256: None,
                fingerprint: &EngineFingerprint::current(),
            })
            .unwrap();
        let optimization_id = store
            .begin_optimization(
                run_id,
                0,
                "fake-sentiment",
                spec.optimizer.name(),
                &serde_json::to_value(spec).unwrap(),
            )
            .unwrap();
        Loop {
            _dir: dir,
            store,
            optimization_id,
        }
    }

    /// Runs (or resumes) the loop on `lm` under `budget`.
    fn run(
        &self,
        spec: &LoopSpec,
        lm: &Arc<FakeLm>,
        budget: Budget,
        observer: Arc<dyn Observer>,
    ) -> Result<LoopOutcome, OptimizeError> {
        self.run_with(spec, lm, None, budget, observer)
    }

    /// Runs the loop with a proposer model too.
    fn run_with(
        &self,
        spec: &LoopSpec,
        lm: &Arc<FakeLm>,
        proposer: Option<&Arc<FakeLm>>,
        budget: Budget,
        observer: Arc<dyn Observer>,
    ) -> Result<LoopOutcome, OptimizeError> {
        let context = LoopContext {
            store: Arc::clone(&self.store),
            optimization_id: self.optimization_id,
            run_uid: "fake-run".into(),
            lm: Arc::clone(lm) as Arc<dyn crate::lm::Lm>,
            retriever: Arc::new(crate::corpus::NoRetriever),
            judges: Judges::none(),
            proposer: proposer.map(|p| Arc::clone(p) as Arc<dyn crate::lm::Lm>),
            tracker: Arc::new(Tracker::new(budget)),
            observer,
        };
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(run_loop(spec, context))
    }

    fn chosen_program(&self, outcome: &LoopOutcome) -> crate::program::Program {
        self.store
            .artifact(&outcome.artifact_hash)
            .unwrap()
            .artifact
            .program
    }
}

fn demo_reviews(program: &crate::program::Program) -> Vec<String> {
    program.steps[0]
        .demos
        .iter()
        .map(|d| d.inputs["review"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn bootstrap_keeps_the_first_passing_traces_in_training_order_then_fills_with_labels() {
    let spec = spec(OptimizerConfig::BootstrapFewShot {
        settings: bootstrap_settings(),
    });
    // The teacher is right only on training examples 5, 7 and 8.
    let knows = |r: &str| ["train review 5", "train review 7", "train review 8"].contains(&r);
    let lm = Arc::new(oracle(knows));
    let l = Loop::new(&spec);
    let outcome = l
        .run(&spec, &lm, Budget::default(), Arc::new(Silent))
        .unwrap();
    let demos = demo_reviews(&l.chosen_program(&outcome));
    assert_eq!(demos.len(), 4, "{demos:?}");
    assert_eq!(
        demos[..2],
        ["train review 5", "train review 7"],
        "{demos:?}"
    );
    assert!(
        demos[2..].iter().all(|d| !demos[..2].contains(d)),
        "the labeled fill takes untraced examples: {demos:?}"
    );
    // Bootstrapped demonstrations carry the teacher's outputs; they were right, so they
    // equal the labels.
    let program = l.chosen_program(&outcome);
    assert_eq!(
        program.steps[0].demos[0].outputs["sentiment"],
        json!("neutral")
    );
}

#[test]
fn random_search_breaks_ties_by_the_earliest_proposal() {
    let spec = spec(OptimizerConfig::RandomSearch {
        settings: bootstrap_settings(),
        candidates: 3,
    });
    // Every program scores the same: the baseline (candidate 0) must win.
    let lm = Arc::new(oracle(|_| false));
    let l = Loop::new(&spec);
    let outcome = l
        .run(&spec, &lm, Budget::default(), Arc::new(Silent))
        .unwrap();
    assert_eq!(outcome.chosen, "baseline");
    assert!(outcome.candidates > 3, "{outcome:?}");
    assert_eq!(outcome.artifact_hash, outcome.baseline_hash);
}

#[test]
fn random_search_in_rounds_proposes_every_candidate_in_order_and_scores_each_once() {
    let shuffled = 2 * super::fewshot::SEARCH_ROUND + 3;
    let spec = spec(OptimizerConfig::RandomSearch {
        settings: bootstrap_settings(),
        candidates: shuffled,
    });
    let lm = Arc::new(oracle(|_| true));
    let l = Loop::new(&spec);
    l.run(&spec, &lm, Budget::default(), Arc::new(Silent))
        .unwrap();
    let rows = l.store.candidates(l.optimization_id).unwrap();
    let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
    // The starting program, the fixed three, then every shuffle in order.
    assert_eq!(labels.len(), 4 + shuffled, "{labels:?}");
    assert_eq!(
        labels[..4],
        ["baseline", "zero-shot", "labeled k=4", "bootstrap"]
    );
    for (c, label) in labels[4..].iter().enumerate() {
        assert!(
            label.starts_with(&format!("bootstrap shuffle {c} ")),
            "{labels:?}"
        );
    }
    assert!(rows.iter().enumerate().all(|(i, r)| r.ordinal == i as i64));
    // Identical programs within the search are scored once: a program's first proposal
    // carries its score (the starting program is scored before the search, on its own).
    let mut seen = std::collections::BTreeSet::new();
    for row in &rows[1..] {
        let first = seen.insert(row.program_hash.clone());
        assert_eq!(row.val_score.is_some(), first, "{}", row.label);
    }
}

#[test]
fn a_resumed_loop_asks_for_nothing_it_already_has() {
    let spec = spec(OptimizerConfig::RandomSearch {
        settings: bootstrap_settings(),
        candidates: 2,
    });
    let knows = |r: &str| r.ends_with('1') || r.ends_with('4');
    let l = Loop::new(&spec);
    let first = Arc::new(oracle(knows));
    let outcome = l
        .run(&spec, &first, Budget::default(), Arc::new(Silent))
        .unwrap();
    assert!(first.call_count() > 0);
    let again = Arc::new(oracle(knows));
    let resumed = l
        .run(&spec, &again, Budget::default(), Arc::new(Silent))
        .unwrap();
    assert_eq!(again.call_count(), 0, "every result was read back");
    assert_eq!(resumed, outcome);
}

#[test]
fn a_calls_budget_stops_at_the_same_candidate_every_time() {
    let spec = spec(OptimizerConfig::RandomSearch {
        settings: bootstrap_settings(),
        candidates: 4,
    });
    let stop = || {
        let l = Loop::new(&spec);
        let lm = Arc::new(oracle(|r| r.ends_with('2')));
        let budget = Budget {
            calls: Some(40),
            ..Budget::default()
        };
        let outcome = l.run(&spec, &lm, budget, Arc::new(Silent)).unwrap();
        let scored: Vec<(String, Option<f64>)> = l
            .store
            .candidates(l.optimization_id)
            .unwrap()
            .into_iter()
            .map(|c| (c.label, c.val_score))
            .collect();
        (outcome, scored, lm.call_count())
    };
    let (a, scored_a, calls_a) = stop();
    let (b, scored_b, calls_b) = stop();
    assert_eq!(a.status, LoopStatus::Stopped, "{a:?}");
    assert!(
        a.stop_reason.as_deref().unwrap_or("").contains("calls"),
        "{a:?}"
    );
    assert_eq!((a, scored_a), (b, scored_b));
    assert_eq!(calls_a, calls_b);
}

#[test]
fn no_call_before_the_test_stage_contains_a_test_example() {
    let spec = spec(OptimizerConfig::RandomSearch {
        settings: bootstrap_settings(),
        candidates: 2,
    });
    let lm = Arc::new(oracle(|r| r.ends_with('0')));
    let stages = Arc::new(Stages::default());
    *stages.lm.lock().unwrap() = Some(Arc::clone(&lm));
    let l = Loop::new(&spec);
    l.run(&spec, &lm, Budget::default(), stages.clone())
        .unwrap();
    let before = stages
        .calls_before_test
        .lock()
        .unwrap()
        .expect("the test stage ran");
    let calls = lm.calls();
    assert!(before > 0 && before < calls.len());
    let leaks: Vec<&FakeCall> = calls[..before]
        .iter()
        .filter(|c| c.prompt.contains("test review"))
        .collect();
    assert!(leaks.is_empty(), "{} calls saw test data", leaks.len());
    assert!(
        calls[before..]
            .iter()
            .all(|c| c.prompt.contains("test review")),
        "the test stage runs test examples only"
    );
}

const NEW_INSTRUCTION: &str = "Say neutral when the review only states facts, else its tone.";

/// A task model that answers neutral examples right only under the new instruction, and the
/// others always right.
fn instruction_follower() -> FakeLm {
    FakeLm::new(2).with_script(|call| {
        let Prompt::Chat(messages) = &call.request.prompt else {
            return None;
        };
        let review = review_of(call);
        let index: usize = review.rsplit(' ').next()?.parse().ok()?;
        let label = LABELS[index % 3];
        let follows = messages[0].content.contains(NEW_INSTRUCTION);
        let answer = if label == "neutral" && !follows {
            "positive"
        } else {
            label
        };
        Some(format!("sentiment: {answer}"))
    })
}

/// Runs `optimizer` with a fake proposer (each run gets a fresh one from `proposer`) on the
/// instruction follower, and checks the part both instruction optimizers share: the result
/// carries [`NEW_INSTRUCTION`] at a perfect validation score the baseline lacks, and resuming
/// with fresh fakes asks the task model for nothing and ends the same. Returns the loop, its
/// outcome and the first run's proposer.
fn instruction_run(
    optimizer: OptimizerConfig,
    proposer: impl Fn() -> Arc<FakeLm>,
) -> (Loop, LoopOutcome, Arc<FakeLm>) {
    let spec = with_proposer(spec(optimizer));
    let l = Loop::new(&spec);
    let first = proposer();
    let outcome = l
        .run_with(
            &spec,
            &Arc::new(instruction_follower()),
            Some(&first),
            Budget::default(),
            Arc::new(Silent),
        )
        .unwrap();
    assert_eq!(outcome.optimized.val, Some(1.0), "{outcome:?}");
    assert!(outcome.baseline.val < Some(1.0));
    let program = l.chosen_program(&outcome);
    assert_eq!(program.steps[0].signature.instructions, NEW_INSTRUCTION);
    // Resuming reads every task-model result back; the same choices follow.
    let again = Arc::new(instruction_follower());
    let resumed = l
        .run_with(
            &spec,
            &again,
            Some(&proposer()),
            Budget::default(),
            Arc::new(Silent),
        )
        .unwrap();
    assert_eq!(again.call_count(), 0);
    assert_eq!(resumed, outcome);
    (l, outcome, first)
}

#[test]
fn gepa_keeps_a_reflected_instruction_that_beats_its_parent_and_rejects_repeats() {
    let optimizer = OptimizerConfig::Gepa {
        settings: GepaSettings {
            candidates: 6,
            metric_calls: Some(6 + 36),
            minibatch: 3,
            max_chars: 200,
            merge: true,
        },
    };
    // The first proposal repeats the current instruction; the next ones are new.
    let proposer = || {
        let asked = std::sync::atomic::AtomicUsize::new(0);
        Arc::new(FakeLm::new(3).with_script(move |_| {
            let n = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(if n == 0 {
                "instruction: Classify the review.".to_string()
            } else {
                format!("instruction: {NEW_INSTRUCTION}")
            })
        }))
    };
    let (l, outcome, reflecting) = instruction_run(optimizer, proposer);
    // The proposer was shown the metric's feedback on the parent's misses.
    let first = &reflecting.calls()[0];
    assert!(
        first.prompt.contains("expected \"neutral\""),
        "{}",
        first.prompt
    );
    // The unchanged proposal was rejected and noted, and made no candidate.
    assert!(reflecting.call_count() >= 2);
    assert!(
        outcome
            .notes
            .iter()
            .any(|n| n.contains("the current one again")),
        "{:?}",
        outcome.notes
    );
    let labels: Vec<String> = l
        .store
        .candidates(l.optimization_id)
        .unwrap()
        .into_iter()
        .map(|c| c.label)
        .collect();
    assert_eq!(labels.len(), 1 + outcome.candidates - 1, "{labels:?}");
    assert!(labels
        .iter()
        .skip(1)
        .all(|l| l.starts_with("gepa") || l.starts_with("merge")));
}

#[test]
fn gepa_without_a_proposer_is_a_clear_error() {
    let spec = spec(OptimizerConfig::Gepa {
        settings: GepaSettings::default(),
    });
    let l = Loop::new(&spec);
    let err = l
        .run(
            &spec,
            &Arc::new(instruction_follower()),
            Budget::default(),
            Arc::new(Silent),
        )
        .unwrap_err();
    assert!(err.to_string().contains("proposer"), "{err}");
}

#[test]
fn mipro_searches_grounded_instructions_with_demonstration_sets_and_resumes() {
    let optimizer = OptimizerConfig::Mipro {
        settings: MiproSettings {
            candidates: 3,
            trials: Some(12),
            minibatch: 4,
            full_eval_every: 3,
            max_chars: 200,
            nearest: 0,
            cover: true,
            demos: BootstrapSettings {
                max_labeled: 2,
                max_bootstrapped: 1,
                ..BootstrapSettings::default()
            },
        },
    };
    // A summary first; then the new instruction, then a different one.
    let proposer = || {
        let asked = std::sync::atomic::AtomicUsize::new(0);
        Arc::new(FakeLm::new(3).with_script(move |call| {
            if call.request.grammar.as_deref() == Some(instructions::SUMMARY_GRAMMAR) {
                return Some("summary: Short reviews, each labelled with its tone.".into());
            }
            let n = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Some(if n == 0 {
                format!("instruction: {NEW_INSTRUCTION}")
            } else {
                "instruction: Read the review and name its tone in one word.".to_string()
            })
        }))
    };
    let (l, outcome, proposing) = instruction_run(optimizer, proposer);
    // Grounded: the proposals saw the summary, the program and a demonstration set.
    let calls = proposing.calls();
    assert_eq!(
        calls.len(),
        3,
        "a summary and one proposal per non-empty set"
    );
    assert!(
        calls[1].prompt.contains("About the data: Short reviews"),
        "{}",
        calls[1].prompt
    );
    assert!(calls[1]
        .prompt
        .contains("writes sentiment, one of: positive, negative, neutral"));
    assert!(calls[1]
        .prompt
        .contains("Examples of this step done right:"));
    assert!(outcome.notes.iter().any(|n| n.starts_with("data summary:")));
    assert!(
        outcome.notes.iter().any(|n| n.contains(NEW_INSTRUCTION)),
        "{:?}",
        outcome.notes
    );
    let candidates = l.store.candidates(l.optimization_id).unwrap();
    assert!(candidates
        .iter()
        .skip(1)
        .all(|c| c.label.starts_with("mipro instruction")));
    // The instruction was also tried without demonstrations, or with them: both are choices.
    assert!(candidates.len() > 3, "{candidates:?}");
}

const TWO_STEPS: &str = r#"
[task]
name = "fake-sentiment"
model = "fake"
seed = 7

[[steps]]
name = "restate"
kind = "predict"
instructions = "Restate the review."
inputs = [{ name = "review" }]
outputs = [{ name = "restated", type = "text" }]
optimize = false

[[steps]]
name = "classify"
kind = "predict"
instructions = "Classify the review."
inputs = [{ name = "review" }, { name = "restated" }]
outputs = [{ name = "sentiment", type = "choice", choices = ["positive", "negative", "neutral"] }]

[dataset]
path = "unused.jsonl"

[metric]
kind = "exact_match"
field = "sentiment"
"#;

/// A loop of `optimizer` over [`TWO_STEPS`]' program.
fn two_step_spec(optimizer: OptimizerConfig) -> LoopSpec {
    let task = Task::parse(TWO_STEPS, Path::new("fake.toml"), ".".into()).unwrap();
    let mut spec = spec(optimizer);
    spec.task_source = TWO_STEPS.into();
    spec.program = task.program;
    spec
}

#[test]
fn every_optimizer_leaves_a_fixed_step_as_written() {
    let task = Task::parse(TWO_STEPS, Path::new("fake.toml"), ".".into()).unwrap();
    assert_eq!(task.program.optimized_steps(), ["classify"]);
    let proposer = summarising_proposer(|_| NEW_INSTRUCTION.to_string());
    // Right on every other training review, so bootstraps keep some traces.
    let lm = Arc::new(FakeLm::new(1).with_script(|call| {
        if let Some(reply) = restated(call) {
            return Some(reply);
        }
        let Prompt::Chat(messages) = &call.request.prompt else {
            return None;
        };
        let last = messages.last().map_or("", |m| m.content.as_str());
        let review = last
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("review: ");
        let i: usize = review.rsplit(' ').next()?.parse().ok()?;
        let label = if i.is_multiple_of(2) {
            LABELS[i % 3]
        } else {
            "positive"
        };
        Some(format!("sentiment: {label}"))
    }));
    for optimizer in [
        OptimizerConfig::LabeledFewShot { k: 3 },
        OptimizerConfig::BootstrapFewShot {
            settings: bootstrap_settings(),
        },
        OptimizerConfig::RandomSearch {
            settings: bootstrap_settings(),
            candidates: 4,
        },
        OptimizerConfig::Mipro {
            settings: MiproSettings {
                candidates: 3,
                trials: Some(6),
                minibatch: 3,
                full_eval_every: 3,
                max_chars: 200,
                demos: bootstrap_settings(),
                // No pool can be made for `classify` (it reads `restated`), so no such set.
                nearest: 1,
                cover: true,
            },
        },
        OptimizerConfig::Gepa {
            settings: GepaSettings {
                candidates: 4,
                metric_calls: Some(40),
                minibatch: 3,
                max_chars: 200,
                merge: true,
            },
        },
    ] {
        let name = optimizer.name();
        let spec = two_step_spec(optimizer);
        let l = Loop::new(&spec);
        let outcome = l
            .run_with(
                &spec,
                &lm,
                Some(&proposer),
                Budget::default(),
                Arc::new(Silent),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let chosen = l.chosen_program(&outcome);
        assert_eq!(chosen.steps[0], task.program.steps[0], "{name}");
        // No candidate of the run touched the fixed step, and every optimizer but the labeled
        // one tried changing the other (labeled demonstrations need every input in the
        // example, and `restated` comes from the fixed step).
        let fixed = serde_json::to_value(&task.program.steps[0]).unwrap();
        let free = serde_json::to_value(&task.program.steps[1]).unwrap();
        let candidates = l.store.candidates(l.optimization_id).unwrap();
        for candidate in &candidates {
            assert_eq!(candidate.program["steps"][0], fixed, "{name}");
        }
        assert!(
            name == "labeled_few_shot" || candidates.iter().any(|c| c.program["steps"][1] != free),
            "{name}"
        );
    }
}

/// A task model that copies the answer of the demonstration shown last (next to the input),
/// and answers `positive` without one: it follows examples, never instructions. (Asked to
/// restate, it restates.)
fn copier() -> FakeLm {
    FakeLm::new(4).with_script(|call| {
        if let Some(reply) = restated(call) {
            return Some(reply);
        }
        let Prompt::Chat(messages) = &call.request.prompt else {
            return None;
        };
        let shown = messages.len().checked_sub(2).map(|i| &messages[i]);
        Some(match shown {
            Some(m) if m.content.starts_with("sentiment: ") => m.content.clone(),
            _ => "sentiment: positive".to_string(),
        })
    })
}

/// The messages of the last call about `review`.
fn messages_for(lm: &FakeLm, review: &str) -> Vec<String> {
    let call = lm
        .calls()
        .into_iter()
        .rev()
        .find(|c| review_of(c) == review);
    let Some(Prompt::Chat(messages)) = call.map(|c| c.request.prompt) else {
        panic!("no call about {review}");
    };
    messages.into_iter().map(|m| m.content).collect()
}

#[test]
fn knn_shows_each_input_its_most_similar_training_examples() {
    let spec = spec(OptimizerConfig::KnnFewShot { k: 2 });
    let lm = Arc::new(copier());
    let l = Loop::new(&spec);
    let outcome = l
        .run(&spec, &lm, Budget::default(), Arc::new(Silent))
        .unwrap();
    // "val review 4" reads most like "train review 4", which has the same label.
    assert_eq!(outcome.optimized.val, Some(1.0), "{outcome:?}");
    assert_eq!(outcome.optimized.test, 1.0);
    assert_eq!((outcome.demos, outcome.retrieved), (0, 2));
    assert_eq!(
        outcome.demonstrations(),
        "0 demonstrations, 2 retrieved per input"
    );
    let messages = messages_for(&lm, "val review 4");
    assert_eq!(messages.len(), 6, "system, two demonstrations, input");
    assert_eq!(messages[3], "review: train review 4", "the nearest is last");
    // The pool is the training split: nothing from validation or test.
    let program = l.chosen_program(&outcome);
    let pool = &program.steps[0].nearest.as_ref().unwrap().pool;
    assert_eq!(pool.len(), 12);
    assert!(pool
        .iter()
        .all(|d| d.inputs["review"].as_str().unwrap().starts_with("train ")));
    // A step whose inputs are not in the data has nothing to retrieve from.
    let two = two_step_spec(OptimizerConfig::KnnFewShot { k: 2 });
    let err = Loop::new(&two)
        .run(&two, &lm, Budget::default(), Arc::new(Silent))
        .unwrap_err();
    assert!(
        err.to_string().contains("KNN few-shot needs a step"),
        "{err}"
    );
}

#[test]
fn mipro_offers_the_nearest_examples_as_a_demonstration_set() {
    let mut settings = MiproSettings::preset("light").unwrap();
    settings.nearest = 1;
    settings.minibatch = 4;
    settings.demos = bootstrap_settings();
    let spec = with_proposer(spec(OptimizerConfig::Mipro { settings }));
    let proposer =
        summarising_proposer(|call| format!("{NEW_INSTRUCTION} {}", call.request.sampling.seed));
    let lm = Arc::new(copier());
    let l = Loop::new(&spec);
    let outcome = l
        .run_with(
            &spec,
            &lm,
            Some(&proposer),
            Budget::default(),
            Arc::new(Silent),
        )
        .unwrap();
    assert!(outcome.chosen.ends_with("nearest k=1"), "{outcome:?}");
    assert_eq!(outcome.optimized.val, Some(1.0));
    assert_eq!(outcome.retrieved, 1);
    // The set grounded a proposal too: the proposer saw examples from its pool.
    let grounded = proposer
        .calls()
        .iter()
        .filter(|c| c.prompt.contains("Examples of this step done right:"))
        .count();
    let sets_with_demos = 6 - 1 + 1; // light's six, zero-shot excluded, plus the nearest set
    assert_eq!(grounded, sets_with_demos);
}

//! Progress bars: the command line's [`Observer`]s.

use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tuningfork::observe::Observer;
use tuningfork::optimize::budget::format_duration;
use tuningfork::optimize::Tracker;
use tuningfork::workspace::LoopObservers;

/// One bar per optimization loop: stage, calls, tokens, the best validation score and time
/// left.
#[derive(Default)]
pub struct LoopBars {
    bars: MultiProgress,
}

impl LoopBars {
    pub fn clear(&self) {
        self.bars.clear().ok();
    }
}

impl LoopObservers for LoopBars {
    fn observer(&self, label: &str, tracker: &Arc<Tracker>) -> Arc<dyn Observer> {
        let bar = self.bars.add(ProgressBar::new(0));
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:20}] {pos}/{len} {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(250));
        Arc::new(LoopBar {
            bar,
            tracker: Arc::clone(tracker),
            label: label.to_string(),
            state: Mutex::new((String::new(), None)),
        })
    }
}

struct LoopBar {
    bar: ProgressBar,
    tracker: Arc<Tracker>,
    label: String,
    /// The current stage and the best score so far.
    state: Mutex<(String, Option<f64>)>,
}

impl LoopBar {
    fn refresh(&self) {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let best = state.1.map_or("-".to_string(), |b| format!("{b:.3}"));
        let left = self.tracker.time_left().map_or(String::new(), |d| {
            format!(" · {} left", format_duration(d.as_secs()))
        });
        self.bar.set_message(format!(
            "{} · {} · calls {} · tokens {} · best val {best}{left}",
            self.label,
            state.0,
            self.tracker.calls(),
            self.tracker.tokens(),
        ));
    }
}

impl Drop for LoopBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for LoopBar {
    fn stage(&self, stage: &str, total: u64) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = stage.to_string();
        self.bar.set_length(total);
        self.bar.set_position(0);
        self.refresh();
    }

    fn advance(&self) {
        self.bar.inc(1);
        self.refresh();
    }

    fn scored(&self, _label: &str, _score: f64, best: f64) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).1 = Some(best);
        self.refresh();
    }
}

/// A bar over a known number of items (examples, calls) with the mean score so far.
pub struct CountBar {
    bar: ProgressBar,
    label: String,
    /// Sum of scores and examples scored.
    scores: Mutex<(f64, usize)>,
}

impl CountBar {
    /// The bar of an evaluation of a task's split.
    pub fn evaluation(task: &std::path::Path) -> Self {
        CountBar::new(
            &task.display().to_string(),
            "{spinner} {msg} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
    }

    pub fn new(label: &str, template: &str) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.set_message(label.to_string());
        CountBar {
            bar,
            label: label.to_string(),
            scores: Mutex::new((0.0, 0)),
        }
    }

    pub fn inc(&self) {
        self.bar.inc(1);
    }
}

impl Drop for CountBar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for CountBar {
    fn stage(&self, _stage: &str, total: u64) {
        self.bar.set_length(total);
    }

    fn advance(&self) {
        self.bar.inc(1);
    }

    fn example_scored(&self, score: f64) {
        let mut s = self.scores.lock().unwrap_or_else(|p| p.into_inner());
        s.0 += score;
        s.1 += 1;
        self.bar
            .set_message(format!("{} mean {:.3}", self.label, s.0 / s.1 as f64));
    }
}

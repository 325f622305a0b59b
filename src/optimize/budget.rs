//! Run budgets: wall time, model calls and tokens.
//!
//! Calls are admitted before work starts: a batch of examples is admitted only if its calls
//! fit in what is left, so a calls budget stops a run at the same point every time. Time and
//! tokens are checked as examples finish; the work in flight is then cancelled and the run
//! ends with the best program scored so far.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Limits of one run; `None` is unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub time_secs: Option<u64>,
    pub calls: Option<u64>,
    pub tokens: Option<u64>,
}

/// Parses a duration such as `8h`, `90m`, `1h30m`, `45s` or `600` (seconds).
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = || format!("`{text}` is not a duration; write e.g. 8h, 90m, 1h30m or 45s");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let value: u64 = number.parse().map_err(|_| bad())?;
        total = value
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Why a run stopped before its optimizer finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop(pub String);

/// Counts what a run has used against its budget. Shared by every loop of the run.
///
/// Once the time or token budget is spent the tracker stays stopped, so every loop and every
/// piece of work in flight stops for the same reason.
#[derive(Debug)]
pub struct Tracker {
    budget: Budget,
    started: Instant,
    calls: AtomicU64,
    tokens: AtomicU64,
    stopped: Mutex<Option<String>>,
}

impl Tracker {
    pub fn new(budget: Budget) -> Self {
        Tracker {
            budget,
            started: Instant::now(),
            calls: AtomicU64::new(0),
            tokens: AtomicU64::new(0),
            stopped: Mutex::new(None),
        }
    }

    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Admits `calls` more model calls, or says why the run must stop.
    pub fn admit(&self, calls: u64) -> Result<(), Stop> {
        self.check()?;
        if let Some(limit) = self.budget.calls {
            let used = self.calls.load(Ordering::SeqCst);
            if used + calls > limit {
                // Not sticky: a refused step leaves the calls it asked for unused.
                return Err(Stop(format!(
                    "the calls budget ({limit}) is spent: {used} used, the next step needs {calls}"
                )));
            }
        }
        self.calls.fetch_add(calls, Ordering::SeqCst);
        Ok(())
    }

    /// Counts tokens used by a finished example.
    pub fn spend_tokens(&self, tokens: u64) {
        self.tokens.fetch_add(tokens, Ordering::SeqCst);
    }

    /// `Err` once the time or token budget is spent (or the run was stopped).
    pub fn check(&self) -> Result<(), Stop> {
        if let Some(reason) = self
            .stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(Stop(reason));
        }
        if let Some(limit) = self.budget.tokens {
            let used = self.tokens.load(Ordering::SeqCst);
            if used >= limit {
                return Err(self.stop(format!("the tokens budget ({limit}) is spent: {used} used")));
            }
        }
        if let Some(deadline) = self.deadline() {
            if Instant::now() >= deadline {
                return Err(self.stop(format!(
                    "the time budget ({}) is spent",
                    format_duration(self.budget.time_secs.unwrap_or(0))
                )));
            }
        }
        Ok(())
    }

    fn stop(&self, reason: String) -> Stop {
        let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        Stop(stopped.get_or_insert(reason).clone())
    }

    /// When the time budget runs out.
    pub fn deadline(&self) -> Option<Instant> {
        self.budget
            .time_secs
            .map(|s| self.started + Duration::from_secs(s))
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::SeqCst)
    }

    /// Time left of the time budget.
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }
}

/// `3h05m`, `4m10s`, `12s`.
pub fn format_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m{s:02}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("8h"), Ok(8 * 3600));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("45s"), Ok(45));
        assert_eq!(parse_duration("600"), Ok(600));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        for bad in ["", "h", "8x", "1h30", "-5m"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("8h"), "{bad}: {err}");
        }
        assert_eq!(format_duration(3 * 3600 + 300), "3h05m");
        assert_eq!(format_duration(250), "4m10s");
    }

    #[test]
    fn calls_are_admitted_whole_or_not_at_all() {
        let tracker = Tracker::new(Budget {
            calls: Some(10),
            ..Budget::default()
        });
        assert!(tracker.admit(6).is_ok());
        let stop = tracker.admit(5).unwrap_err();
        assert!(stop.0.contains("calls budget (10)"), "{stop:?}");
        assert_eq!(tracker.calls(), 6);
        assert!(tracker.admit(4).is_ok());
        assert!(tracker.admit(1).is_err());
    }

    #[test]
    fn tokens_and_time_stop_the_run() {
        let tracker = Tracker::new(Budget {
            tokens: Some(100),
            ..Budget::default()
        });
        tracker.spend_tokens(99);
        assert!(tracker.check().is_ok());
        tracker.spend_tokens(1);
        assert!(tracker.check().unwrap_err().0.contains("tokens budget"));
        let tracker = Tracker::new(Budget {
            time_secs: Some(0),
            ..Budget::default()
        });
        assert!(tracker.admit(1).unwrap_err().0.contains("time budget"));
    }
}

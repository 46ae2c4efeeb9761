//! Did the board boot? Fed console lines and clock ticks, the watch gives one verdict:
//! the expected pattern was seen, a failure pattern was seen, the time ran out, the console
//! stayed silent, or it printed only garbage. Each is a different thing for an operator to
//! fix (image, board, cable, baud rate), so they are never folded into one "timeout".

use std::time::Duration;

use regex::Regex;

/// What the watch decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootVerdict {
    /// `expect` matched this line.
    Booted { line: String, after: Duration },
    /// A `fail` pattern matched (`Kernel panic`).
    Failed { line: String, pattern: String },
    /// The console printed, but `expect` never came.
    TimedOut { after: Duration },
    /// Nothing at all on the console for `silence` (or the whole timeout).
    Silent { after: Duration },
    /// `lines` unreadable lines in a row.
    Garbage { lines: u32 },
}

impl BootVerdict {
    pub fn booted(&self) -> bool {
        matches!(self, BootVerdict::Booted { .. })
    }

    /// One line for a job log or an event.
    pub fn describe(&self) -> String {
        match self {
            BootVerdict::Booted { after, .. } => format!("booted after {after:?}"),
            BootVerdict::Failed { line, pattern } => {
                format!("boot failed: `{line}` matched `{pattern}`")
            }
            BootVerdict::TimedOut { after } => {
                format!("boot prompt not seen within {after:?}")
            }
            BootVerdict::Silent { after } => {
                format!("console silent for {after:?} (board unpowered or wrong console?)")
            }
            BootVerdict::Garbage { lines } => {
                format!("{lines} unreadable console lines in a row (wrong baud rate?)")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct BootRules {
    pub expect: Regex,
    pub fail: Vec<Regex>,
    pub timeout: Duration,
    pub silence: Option<Duration>,
    pub max_garbage_lines: u32,
}

/// The watch's state between lines.
#[derive(Debug, Clone)]
pub struct BootWatch {
    rules: BootRules,
    last_output: Option<Duration>,
    garbage_run: u32,
}

impl BootWatch {
    pub fn new(rules: BootRules) -> BootWatch {
        BootWatch {
            rules,
            last_output: None,
            garbage_run: 0,
        }
    }

    /// A console line at `at` since the watch started.
    pub fn line(&mut self, at: Duration, text: &str, garbage: bool) -> Option<BootVerdict> {
        if let Some(v) = self.tick(at) {
            return Some(v);
        }
        self.last_output = Some(at);
        if garbage {
            self.garbage_run += 1;
            if self.garbage_run >= self.rules.max_garbage_lines {
                return Some(BootVerdict::Garbage {
                    lines: self.garbage_run,
                });
            }
            return None;
        }
        self.garbage_run = 0;
        if let Some(p) = self.rules.fail.iter().find(|p| p.is_match(text)) {
            return Some(BootVerdict::Failed {
                line: text.to_string(),
                pattern: p.as_str().to_string(),
            });
        }
        if self.rules.expect.is_match(text) {
            return Some(BootVerdict::Booted {
                line: text.to_string(),
                after: at,
            });
        }
        None
    }

    /// Time passed with no line; a verdict once a limit is reached.
    pub fn tick(&self, at: Duration) -> Option<BootVerdict> {
        if let Some(silence) = self.rules.silence {
            let since = self.last_output.unwrap_or_default();
            if at.saturating_sub(since) >= silence {
                return Some(BootVerdict::Silent {
                    after: at.saturating_sub(since),
                });
            }
        }
        if at >= self.rules.timeout {
            return Some(match self.last_output {
                None => BootVerdict::Silent { after: at },
                Some(_) => BootVerdict::TimedOut { after: at },
            });
        }
        None
    }

    /// When to call [`BootWatch::tick`] next if no line comes.
    pub fn next_deadline(&self) -> Duration {
        let mut d = self.rules.timeout;
        if let Some(silence) = self.rules.silence {
            d = d.min(self.last_output.unwrap_or_default() + silence);
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rules() -> BootRules {
        BootRules {
            expect: Regex::new("login:").unwrap(),
            fail: vec![Regex::new("Kernel panic").unwrap()],
            timeout: Duration::from_secs(60),
            silence: Some(Duration::from_secs(10)),
            max_garbage_lines: 3,
        }
    }
    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn each_verdict_has_its_cause() {
        let mut w = BootWatch::new(rules());
        assert_eq!(w.line(S(1), "U-Boot", false), None);
        let v = w.line(S(2), "buildroot login:", false).unwrap();
        assert!(v.booted(), "{v:?}");

        let mut w = BootWatch::new(rules());
        let v = w.line(S(1), "Kernel panic - not syncing", false).unwrap();
        assert!(matches!(v, BootVerdict::Failed { .. }), "{v:?}");

        let w = BootWatch::new(rules());
        assert!(matches!(w.tick(S(10)), Some(BootVerdict::Silent { .. })));

        let mut w = BootWatch::new(rules());
        for i in 0..2 {
            assert_eq!(w.line(S(i), "\u{FFFD}", true), None);
        }
        assert_eq!(
            w.line(S(3), "x", true),
            Some(BootVerdict::Garbage { lines: 3 })
        );

        let mut r = rules();
        r.silence = None;
        let mut w = BootWatch::new(r);
        w.line(S(1), "booting", false);
        assert_eq!(w.tick(S(60)), Some(BootVerdict::TimedOut { after: S(60) }));
    }

    #[test]
    fn a_line_after_the_deadline_does_not_count() {
        let mut r = rules();
        r.silence = None;
        let mut w = BootWatch::new(r);
        let v = w.line(S(61), "login:", false).unwrap();
        assert!(!v.booted(), "{v:?}");
    }

    proptest! {
        /// Whatever comes before, a readable `login:` line inside the limits is a boot, and
        /// no verdict ever comes before its cause: no silence verdict while lines keep
        /// coming closer together than the silence limit.
        #[test]
        fn steady_output_then_prompt_boots(gaps in proptest::collection::vec(0u64..9, 0..20)) {
            let mut w = BootWatch::new(rules());
            let mut at = 0;
            for g in &gaps {
                at += g;
                if at >= 59 { break; }
                prop_assert_eq!(w.line(S(at), "dmesg noise", false), None);
            }
            prop_assume!(at < 59);
            let v = w.line(S(at + 1), "login:", false);
            prop_assert!(v.is_some_and(|v| v.booted()));
        }

        #[test]
        fn the_next_deadline_is_when_tick_decides(
            lines in proptest::collection::vec(0u64..30, 0..10)
        ) {
            let mut w = BootWatch::new(rules());
            let mut at = 0;
            for l in lines {
                at += l;
                if w.line(S(at), "x", false).is_some() { return Ok(()); }
            }
            let d = w.next_deadline();
            prop_assert!(w.tick(d).is_some());
            if d > Duration::ZERO {
                prop_assert!(w.tick(d - Duration::from_millis(1)).is_none());
            }
        }
    }
}

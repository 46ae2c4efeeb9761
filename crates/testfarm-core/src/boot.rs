//! When a boot counts, when it has failed, whether to try again, and what the job says when
//! it gives up. The agent observes (console text, the guest agent's hello, QEMU's exit, the
//! clock) and asks here, so the rules are tested without a VM.
//!
//! A failed boot is the lab's or the image's fault, never the test's: its step ends `error`.

use std::time::Duration;

use crate::duration;
use crate::jobspec::BootStep;

/// What proves a boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootCheck {
    /// This text appeared on the serial console.
    Console(String),
    /// The in-guest agent said hello on its virtio-serial port.
    Hello,
}

impl BootCheck {
    pub fn of(step: &BootStep) -> BootCheck {
        match &step.expect {
            Some(p) => BootCheck::Console(p.clone()),
            None => BootCheck::Hello,
        }
    }

    /// For messages: "`login:` on the console", "the guest agent's hello".
    pub fn describe(&self) -> String {
        match self {
            BootCheck::Console(p) => format!("{p:?} on the console"),
            BootCheck::Hello => "the guest agent's hello".into(),
        }
    }
}

/// What the agent has seen of one boot attempt so far.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// The console text of this attempt (control sequences removed).
    pub console: &'a str,
    pub hello: bool,
    /// QEMU ended, with how (`exit status 1`).
    pub exited: Option<&'a str>,
    pub elapsed: Duration,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Booted,
    Waiting,
    Failed(String),
}

/// Console lines that mean the guest will never boot: waiting out the timeout is pointless.
const FATAL_CONSOLE: &[&str] = &["Kernel panic - not syncing", "VFS: Unable to mount root fs"];

/// The verdict on one attempt.
pub fn verdict(check: &BootCheck, seen: &Observed<'_>) -> Verdict {
    let proved = match check {
        BootCheck::Console(p) => seen.console.contains(p.as_str()),
        BootCheck::Hello => seen.hello,
    };
    if let Some(how) = seen.exited {
        return Verdict::Failed(format!("QEMU exited during boot ({how})"));
    }
    if proved {
        return Verdict::Booted;
    }
    if let Some(line) = seen
        .console
        .lines()
        .find(|l| FATAL_CONSOLE.iter().any(|f| l.contains(f)))
    {
        return Verdict::Failed(format!("the guest kernel failed: {}", line.trim()));
    }
    if seen.elapsed >= seen.timeout {
        return Verdict::Failed(format!(
            "no {} within {}",
            check.describe(),
            duration::format(seen.timeout)
        ));
    }
    Verdict::Waiting
}

/// Whether to boot again after attempt `attempt` (1-based) failed, with `retries` allowed.
pub fn retry(attempt: u32, retries: u32) -> bool {
    attempt <= retries
}

/// The last `lines` lines of console text.
pub fn tail(console: &str, lines: usize) -> String {
    let all: Vec<&str> = console.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The step's reason when every attempt failed: each attempt's reason, then the console
/// tail of the last, so the job's reason alone says what the image did.
pub fn final_reason(failures: &[String], console_tail: &str) -> String {
    let n = failures.len();
    let mut s = match failures {
        [] => "the boot failed".to_string(),
        [only] => format!("the boot failed: {only}"),
        many => {
            let each: Vec<String> = many
                .iter()
                .enumerate()
                .map(|(i, r)| format!("attempt {}: {r}", i + 1))
                .collect();
            format!("the boot failed {n} times: {}", each.join("; "))
        }
    };
    if !console_tail.trim().is_empty() {
        s.push_str("\n--- console tail ---\n");
        s.push_str(console_tail);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(console: &str, hello: bool, secs: u64) -> Observed<'_> {
        Observed {
            console,
            hello,
            exited: None,
            elapsed: Duration::from_secs(secs),
            timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn console_pattern_and_hello() {
        let login = BootCheck::Console("login:".into());
        assert_eq!(
            verdict(&login, &seen("booting\n", false, 1)),
            Verdict::Waiting
        );
        assert_eq!(
            verdict(&login, &seen("booting\nhost login: ", false, 2)),
            Verdict::Booted
        );
        // The hello does not prove a console pattern, and the other way round.
        assert_eq!(verdict(&login, &seen("", true, 2)), Verdict::Waiting);
        assert_eq!(
            verdict(&BootCheck::Hello, &seen("login:", false, 2)),
            Verdict::Waiting
        );
        assert_eq!(
            verdict(&BootCheck::Hello, &seen("", true, 2)),
            Verdict::Booted
        );
    }

    #[test]
    fn timeout_exit_and_panic_fail() {
        let login = BootCheck::Console("login:".into());
        assert_eq!(
            verdict(&login, &seen("booting\n", false, 60)),
            Verdict::Failed("no \"login:\" on the console within 1m".into())
        );
        let mut s = seen("login:", false, 3);
        s.exited = Some("exit status 1");
        assert_eq!(
            verdict(&login, &s),
            Verdict::Failed("QEMU exited during boot (exit status 1)".into())
        );
        let v = verdict(
            &BootCheck::Hello,
            &seen("x\nKernel panic - not syncing: No init found\n", false, 3),
        );
        assert!(
            matches!(&v, Verdict::Failed(m) if m.contains("No init found")),
            "{v:?}"
        );
    }

    #[test]
    fn retries_and_the_final_reason() {
        assert!(retry(1, 2));
        assert!(retry(2, 2));
        assert!(!retry(3, 2));
        assert!(!retry(1, 0));
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("", 5), "");
        let r = final_reason(&["no x".into(), "no y".into()], "last line");
        assert_eq!(
            r,
            "the boot failed 2 times: attempt 1: no x; attempt 2: no y\n--- console tail ---\nlast line"
        );
        assert_eq!(final_reason(&["no x".into()], " "), "the boot failed: no x");
    }
}

//! Watching a console for the boot verdict: [`rules::boot`](crate::rules::boot) decides,
//! this only feeds it lines and clock ticks. Every line also goes to the caller's sink (the
//! job log), and the last lines are kept so a failed boot is reported with what the board
//! last said.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::console::{Console, ConsoleEvent, ConsoleLine};
use crate::rules::boot::{BootRules, BootVerdict, BootWatch};

#[derive(Debug, Clone)]
pub struct BootReport {
    pub verdict: BootVerdict,
    /// The last lines seen (up to the tail length), oldest first.
    pub tail: Vec<String>,
    /// Set when the console itself ended during the watch.
    pub console_closed: Option<String>,
}

/// Watches until a verdict; bounded by the rules' timeout (plus nothing).
pub async fn watch_boot(
    console: &mut Console,
    rules: BootRules,
    tail_len: usize,
    sink: &mut (dyn FnMut(&ConsoleLine) + Send),
) -> BootReport {
    watch_boot_since(console, rules, tail_len, sink, std::time::UNIX_EPOCH).await
}

/// [`watch_boot`], judging only lines read at or after `since`: what the board said
/// before a power cycle (a prompt still in flight when it hung) is not its new boot.
/// Earlier lines still go to the sink.
pub async fn watch_boot_since(
    console: &mut Console,
    rules: BootRules,
    tail_len: usize,
    sink: &mut (dyn FnMut(&ConsoleLine) + Send),
    since: std::time::SystemTime,
) -> BootReport {
    let start = Instant::now();
    let mut watch = BootWatch::new(rules);
    let mut tail: VecDeque<String> = VecDeque::with_capacity(tail_len);
    let mut closed = None;
    let verdict = loop {
        let deadline = start + watch.next_deadline();
        let event = if closed.is_some() {
            tokio::time::sleep_until(deadline.into()).await;
            None
        } else {
            tokio::select! {
                ev = console.next() => Some(ev),
                _ = tokio::time::sleep_until(deadline.into()) => None,
            }
        };
        let at = start.elapsed();
        match event {
            Some(ConsoleEvent::Line(line)) if line.at < since => sink(&line),
            Some(ConsoleEvent::Line(line)) => {
                sink(&line);
                if tail.len() == tail_len {
                    tail.pop_front();
                }
                if tail_len > 0 {
                    tail.push_back(line.text.clone());
                }
                if let Some(v) = watch.line(at, &line.text, line.garbage) {
                    break v;
                }
            }
            Some(ConsoleEvent::Closed { reason }) => {
                // A closed console is a silent one from here on; keep waiting for the
                // limits so the verdict names the same causes.
                closed = Some(reason);
            }
            None => {
                if let Some(v) = watch.tick(at.max(watch.next_deadline())) {
                    break v;
                }
            }
        }
    };
    BootReport {
        verdict,
        tail: tail.into(),
        console_closed: closed,
    }
}

/// Is the board answering? Types `command` and waits for `expect` in the output: a board
/// whose console only echoes (or says nothing) within `timeout` hangs.
pub async fn probe_alive(
    console: &mut Console,
    command: &str,
    expect: &regex::Regex,
    timeout: Duration,
) -> bool {
    if console.write(command.as_bytes()).await.is_err() {
        return false;
    }
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            ev = console.next() => match ev {
                ConsoleEvent::Line(l) if expect.is_match(&l.text) && !l.text.contains(command.trim()) => return true,
                ConsoleEvent::Line(_) => {}
                ConsoleEvent::Closed { .. } => return false,
            },
            _ = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

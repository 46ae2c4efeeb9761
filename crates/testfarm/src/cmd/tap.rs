//! `testfarm tap [FILE|-] [--format summary|json|junit]`: parse one TAP stream.
//!
//! `summary` streams through a counting consumer and keeps nothing per test, so it runs in
//! constant memory on any stream length; `json` and `junit` keep the document (they print
//! every test). A stream with `TAP_START`/`TAP_END` markers is reported per script.

use std::fs::File;
use std::io::{self, Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use testfarm_tap::report::{Collector, SuiteRun};
use testfarm_tap::{Counter, Event, Options, Parser, Summary};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Counts and verdict (constant memory).
    Summary,
    /// The document with its summary (one object; per-script report for marked streams).
    Json,
    /// JUnit XML (junit-10.xsd).
    Junit,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// TAP file to read; `-` or nothing reads standard input.
    pub file: Option<String>,
    /// What to print.
    #[arg(long, value_enum, default_value = "summary")]
    pub format: Format,
}

/// Read size: large enough that syscalls are noise, small enough to stay in cache.
const CHUNK: usize = 256 * 1024;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let name = match args.file.as_deref() {
        None | Some("-") => "stdin".to_string(),
        Some(path) => path.to_string(),
    };
    let mut input: Box<dyn Read> = match args.file.as_deref() {
        None | Some("-") => Box::new(io::stdin().lock()),
        Some(path) => match File::open(path) {
            Ok(f) => Box::new(f),
            Err(e) => {
                eprintln!("error: cannot open {path}: {e}");
                return Ok(ExitCode::from(2));
            }
        },
    };
    let ok = match args.format {
        Format::Summary => summary(&mut input, &name)?,
        Format::Json | Format::Junit => full(&mut input, &name, args.format)?,
    };
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Feeds `input` to the parser in chunks.
fn pump(
    input: &mut dyn Read,
    parser: &mut Parser,
    on: &mut impl FnMut(Event),
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the TAP stream"),
        };
        parser.feed(&buf[..n], on);
    }
    parser.finish(on);
    Ok(())
}

/// Per-script counters for marked streams; one counter otherwise.
struct Counting {
    current: Counter,
    current_name: Option<String>,
    touched: bool,
    done: Vec<(String, Summary)>,
}

impl Counting {
    fn event(&mut self, e: Event) {
        match e {
            Event::TapStart { name } => {
                self.close(None);
                self.current_name = Some(name);
                self.touched = true;
            }
            Event::TapEnd { name, exit } => {
                if self.current_name.is_none() {
                    self.current_name = Some(name);
                }
                self.touched = true;
                self.close(Some(exit));
            }
            other => {
                // Noise around markers (unknown lines, comments) does not make a run.
                if !matches!(other, Event::Unknown { .. } | Event::Comment { .. }) {
                    self.touched = true;
                }
                self.current.event(&other);
            }
        }
    }

    fn close(&mut self, exit: Option<i32>) {
        let counter = std::mem::take(&mut self.current);
        let name = self.current_name.take();
        let touched = std::mem::replace(&mut self.touched, false);
        if name.is_none() && !touched {
            return;
        }
        let mut summary = counter.finish().summary(exit);
        let name = match name {
            Some(n) => {
                if exit.is_none() {
                    // A script that never reached TAP_END did not finish.
                    summary.ok = false;
                }
                n
            }
            None => String::new(),
        };
        self.done.push((name, summary));
    }
}

fn summary(input: &mut dyn Read, name: &str) -> anyhow::Result<bool> {
    let mut parser = Parser::with_options(Options {
        parse_yaml: false,
        keep_text: false,
    });
    let mut counting = Counting {
        current: Counter::new(),
        current_name: None,
        touched: false,
        done: Vec::new(),
    };
    pump(input, &mut parser, &mut |e| counting.event(e))?;
    counting.close(None);
    let mut runs = counting.done;
    if runs.is_empty() {
        runs.push((String::new(), Counter::new().finish().summary(None)));
    }
    let mut out = io::stdout().lock();
    let all_ok = runs.iter().all(|(_, s)| s.ok);
    for (run_name, s) in &runs {
        let label = if run_name.is_empty() { name } else { run_name };
        writeln!(
            out,
            "{label}: {} (tests {}, pass {}, fail {}, todo {}, skip {})",
            if s.ok { "ok" } else { "FAILED" },
            s.count,
            s.pass,
            s.fail,
            s.todo,
            s.skip
        )?;
        for reason in &s.reasons {
            writeln!(out, "  {reason}")?;
        }
    }
    if runs.len() > 1 {
        let failed = runs.iter().filter(|(_, s)| !s.ok).count();
        writeln!(out, "Files={}, Failed={failed}", runs.len())?;
    }
    writeln!(out, "Result: {}", if all_ok { "PASS" } else { "FAIL" })?;
    Ok(all_ok)
}

fn full(input: &mut dyn Read, name: &str, format: Format) -> anyhow::Result<bool> {
    let mut parser = Parser::new();
    let mut collector = Collector::new(name);
    let mut marked = false;
    pump(input, &mut parser, &mut |e| {
        marked |= matches!(e, Event::TapStart { .. } | Event::TapEnd { .. });
        collector.event(e);
    })?;
    let mut runs: Vec<SuiteRun> = collector.finish();
    if runs.is_empty() {
        runs.push(SuiteRun::new(name, testfarm_tap::Document::default()));
    }
    let ok = runs.iter().all(SuiteRun::ok);
    let mut out = io::stdout().lock();
    match format {
        Format::Json if !marked && runs.len() == 1 => {
            let run = &runs[0];
            writeln!(
                out,
                "{}",
                testfarm_tap::json::document_string(&run.document, run.exit_code)
            )?;
        }
        Format::Json => {
            let v = testfarm_tap::json::render(&runs);
            writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        }
        _ => out.write_all(testfarm_tap::junit::render(&runs).as_bytes())?,
    }
    Ok(ok)
}

//! `testfarm bench console [--size 32MB] [--json]`: a board console's throughput from a
//! pty into a sink, against `head -c` of a pty in the same run (issue 16's target: at least
//! 20 MB/s with no line lost or reordered). The measurement is `testfarm_board::bench`.

use std::process::ExitCode;
use std::time::Duration;

use testfarm_board::bench::{ConsoleBenchOptions, console_throughput};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Bytes to push through: a number with an optional KB/MB suffix (powers of 1000).
    #[arg(long, default_value = "32MB")]
    pub size: String,
    /// Print one JSON object instead of lines for people.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("MB") {
        (n, 1_000_000)
    } else if let Some(n) = s.strip_suffix("KB") {
        (n, 1_000)
    } else {
        (s, 1)
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(bytes) = parse_size(&args.size) else {
        eprintln!("error: --size {:?}: expected e.g. 32MB, 512KB", args.size);
        return Ok(ExitCode::from(2));
    };
    let opts = ConsoleBenchOptions {
        bytes,
        line_len: 100,
        timeout: Duration::from_secs(300),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let r = rt.block_on(console_throughput(&opts))?;
    if args.json {
        outln!("{}", serde_json::to_string(&r)?);
    } else {
        outln!(
            "console: {:.1} MB/s ({} lines, {} lost, {} reordered); {}: {:.1} MB/s; ratio {:.2}; target {} MB/s {}",
            r.console_mb_s,
            r.lines,
            r.lost_lines,
            r.reordered_lines,
            r.baseline,
            r.baseline_mb_s,
            r.ratio,
            r.target_mb_s,
            if r.target_met { "met" } else { "NOT met" }
        );
    }
    Ok(if r.target_met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

//! What the simulated board says while powered: a boot banner, `login:`, then a tiny
//! shell. It can be told never to finish booting or to hang after some commands, which is
//! what the boot watcher and hang recovery are tested against.

use std::time::Duration;

use tokio::sync::mpsc;

/// How the board misbehaves.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Stop answering (no output, input ignored) after this many shell commands.
    pub hang_after: Option<u32>,
    /// Print the bootloader and stop before the kernel: `login:` never comes.
    pub no_boot: bool,
    /// Pause between banner lines (a real boot takes a while; tests want it short).
    pub line_delay: Duration,
}

pub const HOSTNAME: &str = "sim-board";
const PROMPT: &str = "root@sim-board:~# ";

const BOOTLOADER: &[&str] = &[
    "",
    "U-Boot SPL 2024.01 (testfarm sim-board)",
    "DRAM:  512 MiB",
    "Trying to boot from MMC1",
    "Starting kernel ...",
];
const KERNEL: &[&str] = &[
    "[    0.000000] Booting Linux on physical CPU 0x0",
    "[    0.000000] Linux version 6.1.0-sim (testfarm) #1 SMP",
    "[    0.512000] Run /sbin/init as init process",
    "Welcome to testfarm sim-board!",
    "",
];

/// Output towards the console and input from it.
pub struct Io<'a> {
    pub out: &'a mpsc::Sender<Vec<u8>>,
    pub input: &'a mut mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

impl<'a> Io<'a> {
    pub fn new(out: &'a mpsc::Sender<Vec<u8>>, input: &'a mut mpsc::Receiver<Vec<u8>>) -> Self {
        Io {
            out,
            input,
            pending: Vec::new(),
        }
    }

    async fn say(&self, text: &str) {
        let _ = self.out.send(text.as_bytes().to_vec()).await;
    }

    async fn line(&self, text: &str) {
        self.say(&format!("{text}\r\n")).await;
    }

    /// One typed line, echoed as a terminal does. `None`: the console input ended.
    async fn read_line(&mut self) -> Option<String> {
        loop {
            if let Some(i) = self.pending.iter().position(|b| *b == b'\r' || *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                if line.len() == 1 && line[0] == b'\n' {
                    continue; // the \n of a \r\n
                }
                let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                self.say(&format!("{text}\r\n")).await;
                return Some(text);
            }
            let more = self.input.recv().await?;
            self.pending.extend_from_slice(&more);
        }
    }
}

/// Runs while powered; dropped (cancelled) when the power goes off.
pub async fn powered(io: &mut Io<'_>, b: &Behaviour) {
    let mut commands = 0u32;
    'boot: loop {
        for l in BOOTLOADER {
            io.line(l).await;
            tokio::time::sleep(b.line_delay).await;
        }
        if b.no_boot {
            std::future::pending::<()>().await;
        }
        for l in KERNEL {
            io.line(l).await;
            tokio::time::sleep(b.line_delay).await;
        }
        loop {
            io.say(&format!("{HOSTNAME} login: ")).await;
            let Some(user) = io.read_line().await else {
                return;
            };
            if user.trim().is_empty() {
                continue;
            }
            loop {
                io.say(PROMPT).await;
                let Some(cmd) = io.read_line().await else {
                    return;
                };
                let cmd = cmd.trim();
                if cmd.is_empty() {
                    continue;
                }
                match run_line(io, cmd).await {
                    Next::Prompt => {}
                    Next::Logout => break,
                    Next::Reboot => continue 'boot,
                    Next::Hang => std::future::pending::<()>().await,
                }
                commands += 1;
                if b.hang_after.is_some_and(|n| commands >= n) {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

enum Next {
    /// Done; the shell prompts again.
    Prompt,
    Logout,
    Reboot,
    Hang,
}

/// A command line as busybox `sh` takes the part the agent uses: commands separated by
/// `;`, each seeing the exit status of the one before as `$?` (the agent's console steps
/// type `CMD; echo __TF_<nonce>_$?` to learn how CMD ended).
async fn run_line(io: &mut Io<'_>, line: &str) -> Next {
    let mut status = 0;
    for part in line.split(';') {
        let cmd = part.trim().replace("$?", &status.to_string());
        if cmd.is_empty() {
            continue;
        }
        match run(io, &cmd).await {
            (Next::Prompt, s) => status = s,
            (other, _) => return other,
        }
    }
    Next::Prompt
}

/// Runs one command: what comes next, and its exit status.
async fn run(io: &mut Io<'_>, cmd: &str) -> (Next, i32) {
    let mut words = cmd.split_whitespace();
    let name = words.next().unwrap_or_default();
    let args: Vec<&str> = words.collect();
    match name {
        "echo" => io.line(&args.join(" ")).await,
        "uname" if args.first() == Some(&"-a") => {
            io.line(&format!(
                "Linux {HOSTNAME} 6.1.0-sim #1 SMP armv7l GNU/Linux"
            ))
            .await;
        }
        "uname" => io.line("Linux").await,
        "sleep" => {
            let secs: f64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(1.0);
            tokio::time::sleep(Duration::from_secs_f64(secs.clamp(0.0, 3600.0))).await;
        }
        "run-tap" => return (Next::Prompt, run_tap(io, &args).await),
        "true" => {}
        "false" => return (Next::Prompt, 1),
        "hang" => return (Next::Hang, 0),
        "reboot" => return (Next::Reboot, 0),
        "exit" | "logout" => return (Next::Logout, 0),
        "help" => {
            io.line(
                "echo uname sleep true false run-tap [N] [fail K] hang reboot exit; `;` and `$?`",
            )
            .await
        }
        other => {
            io.line(&format!("sh: {other}: not found")).await;
            return (Next::Prompt, 127);
        }
    }
    (Next::Prompt, 0)
}

/// `run-tap [N] [fail K]`: a TAP 13 stream of N tests, test K failing (exit status 1).
async fn run_tap(io: &mut Io<'_>, args: &[&str]) -> i32 {
    let n: u32 = args.first().and_then(|a| a.parse().ok()).unwrap_or(3);
    let fail: Option<u32> = match args.get(1..3) {
        Some(["fail", k]) => k.parse().ok(),
        _ => None,
    };
    io.line("TAP version 13").await;
    io.line(&format!("1..{n}")).await;
    for i in 1..=n {
        if Some(i) == fail {
            io.line(&format!("not ok {i} - sim test {i}")).await;
            io.line("  ---").await;
            io.line("  message: simulated failure").await;
            io.line("  ...").await;
        } else {
            io.line(&format!("ok {i} - sim test {i}")).await;
        }
    }
    i32::from(fail.is_some_and(|k| (1..=n).contains(&k)))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn said(line: &str) -> String {
        let (out_tx, mut out_rx) = mpsc::channel(64);
        let (_in_tx, mut in_rx) = mpsc::channel(1);
        let mut io = Io::new(&out_tx, &mut in_rx);
        assert!(matches!(run_line(&mut io, line).await, Next::Prompt));
        drop(io);
        drop(out_tx);
        let mut text = String::new();
        while let Some(b) = out_rx.recv().await {
            text.push_str(&String::from_utf8_lossy(&b));
        }
        text
    }

    #[tokio::test]
    async fn sequences_see_the_previous_exit_status() {
        assert_eq!(said("echo a; echo $?").await, "a\r\n0\r\n");
        assert_eq!(said("false; echo s=$?").await, "s=1\r\n");
        assert_eq!(
            said("nope; echo $?").await,
            "sh: nope: not found\r\n127\r\n"
        );
        let tap = said("run-tap 2 fail 2; echo __TF_x_$?").await;
        assert!(tap.ends_with("__TF_x_1\r\n"), "{tap}");
        assert!(said("run-tap 1; echo $?").await.ends_with("0\r\n"));
    }
}

//! `testfarm agent detect-boards`: what is wired to this host that could be a board —
//! serial devices under `/dev/serial/by-id` (stable names, with the tty each points to),
//! USB hubs whose ports `uhubctl` can switch (when it is installed; run bounded), and a
//! proposed `[[board]]` table per serial device (power through the hub port its USB serial
//! adapter hangs off when that can be matched, else manual). A missing directory or tool
//! is a note, not an error: most hosts have one or the other.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest `uhubctl` may take.
const UHUBCTL_TIMEOUT: Duration = Duration::from_secs(10);
pub const SERIAL_BY_ID: &str = "/dev/serial/by-id";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SerialDevice {
    /// The stable path (`/dev/serial/by-id/usb-FTDI_…-if00-port0`).
    pub path: PathBuf,
    /// What it points to (`/dev/ttyUSB0`), when it resolves.
    pub target: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HubPort {
    pub port: u32,
    /// uhubctl's status word and flags (`0103 power enable connect`).
    pub status: String,
    /// The device on it (`0403:6001 FTDI FT232R USB UART A50285BI`), if any.
    pub device: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UsbHub {
    /// uhubctl's location (`1-1`), what `-l` takes.
    pub location: String,
    pub description: String,
    pub ports: Vec<HubPort>,
}

/// What detection found, printable as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DetectedBoards {
    pub serial: Vec<SerialDevice>,
    pub hubs: Vec<UsbHub>,
    /// Why a part found nothing (`/dev/serial/by-id: no such directory`).
    pub notes: Vec<String>,
    /// `[[board]]` tables to paste into agent.toml and complete.
    pub proposal: String,
}

impl std::fmt::Display for DetectedBoards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "serial devices ({SERIAL_BY_ID}):")?;
        if self.serial.is_empty() {
            writeln!(f, "  none")?;
        }
        for s in &self.serial {
            let t = s
                .target
                .as_ref()
                .map(|t| t.display().to_string())
                .unwrap_or_else(|| "?".into());
            writeln!(f, "  {} -> {t}", s.path.display())?;
        }
        writeln!(f, "switchable USB hubs (uhubctl):")?;
        if self.hubs.is_empty() {
            writeln!(f, "  none")?;
        }
        for h in &self.hubs {
            writeln!(f, "  hub {} [{}]", h.location, h.description)?;
            for p in &h.ports {
                let dev = p
                    .device
                    .as_deref()
                    .map(|d| format!(" [{d}]"))
                    .unwrap_or_default();
                writeln!(f, "    port {}: {}{dev}", p.port, p.status)?;
            }
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        if !self.proposal.is_empty() {
            writeln!(
                f,
                "\nproposed [[board]] entries (complete board_type, arch and boot):\n"
            )?;
            write!(f, "{}", self.proposal)?;
        }
        Ok(())
    }
}

/// Looks at this host.
pub async fn detect_boards() -> DetectedBoards {
    let mut d = DetectedBoards::default();
    match serial_devices(Path::new(SERIAL_BY_ID)) {
        Ok(s) => d.serial = s,
        Err(e) => d.notes.push(format!("{SERIAL_BY_ID}: {e}")),
    }
    match run_uhubctl().await {
        Ok(text) => d.hubs = parse_uhubctl(&text),
        Err(e) => d.notes.push(e),
    }
    d.proposal = propose(&d.serial, &d.hubs);
    d
}

/// The by-id links of a directory, sorted.
pub fn serial_devices(dir: &Path) -> std::io::Result<Vec<SerialDevice>> {
    let mut out: Vec<SerialDevice> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            SerialDevice {
                target: std::fs::canonicalize(&path).ok(),
                path,
            }
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

async fn run_uhubctl() -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("uhubctl");
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    match tokio::time::timeout(UHUBCTL_TIMEOUT, cmd.output()).await {
        Err(_) => Err(format!("uhubctl: no answer within {UHUBCTL_TIMEOUT:?}")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("uhubctl is not installed: no switchable hubs listed".into())
        }
        Ok(Err(e)) => Err(format!("uhubctl: {e}")),
        Ok(Ok(out)) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.trim().is_empty() {
                let err = String::from_utf8_lossy(&out.stderr);
                Err(format!("uhubctl found no switchable hub: {}", err.trim()))
            } else {
                Ok(text)
            }
        }
    }
}

/// Reads `uhubctl`'s status listing.
pub fn parse_uhubctl(text: &str) -> Vec<UsbHub> {
    let mut hubs: Vec<UsbHub> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.trim().strip_prefix("Current status for hub ") {
            let (location, desc) = match rest.split_once(' ') {
                Some((l, d)) => (l, d.trim()),
                None => (rest, ""),
            };
            hubs.push(UsbHub {
                location: location.to_string(),
                description: desc
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                ports: Vec::new(),
            });
        } else if let Some(rest) = line.trim().strip_prefix("Port ")
            && let Some((n, status)) = rest.split_once(':')
            && let Ok(port) = n.trim().parse::<u32>()
            && let Some(hub) = hubs.last_mut()
        {
            let status = status.trim();
            let (status, device) = match status.split_once(" [") {
                Some((s, d)) => (s.trim(), Some(d.trim_end_matches(']').to_string())),
                None => (status, None),
            };
            hub.ports.push(HubPort {
                port,
                status: status.to_string(),
                device,
            });
        }
    }
    hubs
}

/// A name the server accepts, from a by-id file name.
fn board_name(path: &Path, i: usize) -> String {
    let file = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let short = file.trim_start_matches("usb-").trim_end_matches("-port0");
    let mut name: String = short
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name = name.trim_matches('-');
    let name: String = name.chars().take(40).collect();
    if name.is_empty() {
        format!("board-{}", i + 1)
    } else {
        format!("board-{}", name.trim_end_matches('-'))
    }
}

/// The hub port whose device's serial number appears in the by-id name.
fn hub_port_of<'a>(dev: &SerialDevice, hubs: &'a [UsbHub]) -> Option<(&'a UsbHub, &'a HubPort)> {
    let file = dev.path.file_name()?.to_string_lossy().into_owned();
    hubs.iter().find_map(|h| {
        h.ports.iter().find_map(|p| {
            let serial = p.device.as_deref()?.split_whitespace().last()?;
            (serial.len() >= 4 && file.contains(serial)).then_some((h, p))
        })
    })
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// `[[board]]` tables for each serial device (they parse with `parse_boards`).
pub fn propose(serial: &[SerialDevice], hubs: &[UsbHub]) -> String {
    let mut out = String::new();
    for (i, dev) in serial.iter().enumerate() {
        let name = board_name(&dev.path, i);
        out.push_str("[[board]]\n");
        out.push_str(&format!("name = {}\n", quote(&name)));
        out.push_str("board_type = \"unknown\"   # set: what the board is (rpi4, grapefruit, …)\n");
        out.push_str("arch = \"unknown\"         # set: arm64, arm, riscv64, …\n");
        match hub_port_of(dev, hubs) {
            Some((h, p)) => {
                let base = format!("uhubctl -l {} -p {}", h.location, p.port);
                out.push_str(&format!(
                    "power = {{ driver = \"command\", on = {}, off = {}, status = {}, status_on = \"\\\\bpower\\\\b\" }}\n",
                    quote(&format!("{base} -a on")),
                    quote(&format!("{base} -a off")),
                    quote(&base),
                ));
            }
            None => out.push_str(
                "power = { driver = \"manual\", instructions = \"switch the board's power by hand\" }   # or a command/http driver\n",
            ),
        }
        out.push_str(&format!(
            "console = {{ driver = \"serial\", device = {}, baud = 115200 }}\n",
            quote(&dev.path.to_string_lossy())
        ));
        out.push_str("boot = { expect = \"login:\", timeout = \"3m\" }\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from uhubctl 2.5 on a host with a VIA hub and an FTDI adapter.
    const SAMPLE: &str = "\
Current status for hub 1-1 [2109:3431 USB2.0 Hub, USB 2.10, 4 ports, ppps]
  Port 1: 0100 power
  Port 2: 0103 power enable connect [0403:6001 FTDI FT232R USB UART A50285BI]
  Port 3: 0000 off
  Port 4: 0100 power
Current status for hub 2 [1d6b:0003 Linux Foundation 3.00 root hub, USB 3.00, 4 ports, ppps]
  Port 1: 02a0 power 5gbps Rx.Detect
";

    #[test]
    fn uhubctl_output_is_read() {
        let hubs = parse_uhubctl(SAMPLE);
        assert_eq!(hubs.len(), 2);
        assert_eq!(hubs[0].location, "1-1");
        assert!(
            hubs[0].description.starts_with("2109:3431"),
            "{:?}",
            hubs[0]
        );
        assert_eq!(hubs[0].ports.len(), 4);
        assert_eq!(hubs[0].ports[1].status, "0103 power enable connect");
        assert_eq!(
            hubs[0].ports[1].device.as_deref(),
            Some("0403:6001 FTDI FT232R USB UART A50285BI")
        );
        assert_eq!(hubs[0].ports[2].status, "0000 off");
        assert_eq!(hubs[1].location, "2");
        assert_eq!(hubs[1].ports[0].device, None);
        assert!(parse_uhubctl("").is_empty());
    }

    #[test]
    fn the_proposal_parses_and_uses_the_matching_hub_port() {
        let serial = vec![
            SerialDevice {
                path: PathBuf::from(
                    "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0",
                ),
                target: Some(PathBuf::from("/dev/ttyUSB0")),
            },
            SerialDevice {
                path: PathBuf::from("/dev/serial/by-id/usb-Silicon_Labs_CP2102_0001-if00-port0"),
                target: None,
            },
        ];
        let text = propose(&serial, &parse_uhubctl(SAMPLE));
        let boards = testfarm_board::parse_boards(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(boards.len(), 2, "{text}");
        assert_eq!(boards[0].name, "board-ftdi-ft232r-usb-uart-a50285bi-if00");
        assert!(text.contains("uhubctl -l 1-1 -p 2 -a on"), "{text}");
        assert!(text.contains("driver = \"manual\""), "{text}");
        for b in &boards {
            testfarm_core::resource::validate_name(&b.name).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn a_missing_directory_is_a_note() {
        assert!(serial_devices(Path::new("/nonexistent/serial/by-id")).is_err());
        let d = DetectedBoards {
            notes: vec!["x: gone".into()],
            ..Default::default()
        };
        assert!(d.to_string().contains("note: x: gone"));
    }
}

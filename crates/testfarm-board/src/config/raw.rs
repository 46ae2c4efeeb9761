//! The file's shape as serde sees it: flat tables per section (`power = { driver, … }`)
//! so serde's unknown-field errors carry the key's own span and a did-you-mean, then
//! [`RawBoard::check`] turns them into the typed config, one driver's rules at a time.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use testfarm_core::duration::HumanDuration;

use super::*;
use crate::template::{self, Scope};

/// The file: only `[[board]]` matters here; the agent reads the rest.
#[derive(Debug, Deserialize)]
pub(super) struct RawFile {
    #[serde(default)]
    pub board: Vec<RawBoard>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBoard {
    pub name: String,
    pub board_type: String,
    pub arch: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    peripherals: Vec<String>,
    power: RawPower,
    console: RawConsole,
    #[serde(default)]
    flash: Option<RawFlash>,
    #[serde(default)]
    boot: Option<RawBoot>,
    #[serde(default)]
    health: Option<RawHealth>,
    #[serde(default)]
    recovery: Option<RawRecovery>,
    #[serde(default)]
    quarantine: Option<RawQuarantine>,
    #[serde(default)]
    on_release: Option<ReleasePower>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum PowerKind {
    Command,
    Http,
    Qemu,
    Manual,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPower {
    driver: PowerKind,
    on: Option<String>,
    off: Option<String>,
    cycle: Option<String>,
    status: Option<String>,
    status_on: Option<String>,
    timeout: Option<HumanDuration>,
    cycle_delay: Option<HumanDuration>,
    url: Option<String>,
    method: Option<String>,
    body: Option<String>,
    status_url: Option<String>,
    user: Option<String>,
    password_env: Option<String>,
    bearer_env: Option<String>,
    qmp: Option<PathBuf>,
    instructions: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ConsoleKind {
    Serial,
    Tcp,
    Command,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// What the end of a lease does to a board's power.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReleasePower {
    #[default]
    Off,
    On,
    Leave,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsole {
    driver: ConsoleKind,
    device: Option<PathBuf>,
    baud: Option<u32>,
    parity: Option<Parity>,
    data_bits: Option<u8>,
    stop_bits: Option<u8>,
    address: Option<String>,
    connect_timeout: Option<HumanDuration>,
    command: Option<String>,
    max_line: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum FlashKind {
    Command,
    Qemu,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFlash {
    driver: FlashKind,
    run: Option<String>,
    timeout: Option<HumanDuration>,
    flash_station: Option<String>,
    qmp: Option<PathBuf>,
    image: Option<PathBuf>,
    artifact: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBoot {
    #[serde(default = "default_expect")]
    expect: String,
    #[serde(default)]
    fail: Vec<String>,
    timeout: Option<HumanDuration>,
    silence: Option<HumanDuration>,
    max_garbage_lines: Option<u32>,
    login: Option<String>,
    prompt: Option<String>,
}

fn default_expect() -> String {
    "login:".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    probe: Option<String>,
    interval: Option<HumanDuration>,
    timeout: Option<HumanDuration>,
    /// Poke the console of an idle, booted board each interval (default true).
    console: Option<bool>,
    console_timeout: Option<HumanDuration>,
    #[serde(default)]
    thresholds: BTreeMap<String, RawThreshold>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    warn: Option<f64>,
    degraded: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecovery {
    tries: Option<u32>,
    backoff: Option<HumanDuration>,
    backoff_max: Option<HumanDuration>,
    hang_after: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuarantine {
    health_failures: Option<u32>,
    lab_errors: Option<u32>,
    window: Option<HumanDuration>,
}

/// A check's failure: the field path inside the board and why.
type Fault = (String, String);

fn fault(field: &str, message: impl Into<String>) -> Fault {
    (field.to_string(), message.into())
}

fn dur(d: Option<HumanDuration>, default: Duration) -> Duration {
    d.map_or(default, |d| d.0)
}

/// Fields set in a section, by name, so a driver can refuse the ones it does not use.
fn refuse_unused(
    section: &str,
    driver: &str,
    set: &[(&str, bool)],
    uses: &[&str],
) -> Result<(), Fault> {
    for (name, present) in set {
        if *present && !uses.contains(name) {
            return Err(fault(
                &format!("{section}.{name}"),
                format!(
                    "the `{driver}` {section} driver does not use `{name}` (it uses {})",
                    uses.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn need<T: Clone>(section: &str, driver: &str, name: &str, v: &Option<T>) -> Result<T, Fault> {
    v.clone().ok_or_else(|| {
        fault(
            section,
            format!("the `{driver}` {section} driver needs `{name}`"),
        )
    })
}

fn tmpl(field: &str, source: &str, scope: Scope) -> Result<String, Fault> {
    template::check(source, scope).map_err(|m| fault(field, m))?;
    Ok(source.to_string())
}

fn pattern(field: &str, source: &str) -> Result<Regex, Fault> {
    Regex::new(source).map_err(|e| fault(field, format!("not a valid pattern: {e}")))
}

impl RawBoard {
    pub(super) fn check(self) -> Result<BoardConfig, Fault> {
        if self.name.trim().is_empty() {
            return Err(fault("name", "a board needs a non-empty name"));
        }
        let recovery = self.recovery.as_ref();
        let quarantine = self.quarantine.as_ref();
        let defaults = RecoveryPolicy::default();
        let qdefaults = QuarantinePolicy::default();
        let recovery = RecoveryPolicy {
            tries: recovery.and_then(|r| r.tries).unwrap_or(defaults.tries),
            backoff: dur(recovery.and_then(|r| r.backoff), defaults.backoff),
            backoff_max: dur(recovery.and_then(|r| r.backoff_max), defaults.backoff_max),
            hang_after: dur(recovery.and_then(|r| r.hang_after), defaults.hang_after),
        };
        let quarantine = QuarantinePolicy {
            health_failures: quarantine
                .and_then(|q| q.health_failures)
                .unwrap_or(qdefaults.health_failures),
            lab_errors: quarantine
                .and_then(|q| q.lab_errors)
                .unwrap_or(qdefaults.lab_errors),
            window: dur(quarantine.and_then(|q| q.window), qdefaults.window),
        };
        if quarantine.health_failures == 0 {
            return Err(fault("quarantine.health_failures", "must be at least 1"));
        }
        if quarantine.lab_errors == 0 {
            return Err(fault("quarantine.lab_errors", "must be at least 1"));
        }
        Ok(BoardConfig {
            power: check_power(&self.power)?,
            console: check_console(&self.console)?,
            flash: self.flash.as_ref().map(check_flash).transpose()?,
            boot: check_boot(self.boot.as_ref())?,
            health: self.health.as_ref().map(check_health).transpose()?,
            recovery,
            quarantine,
            on_release: self.on_release.unwrap_or_default(),
            name: self.name,
            board_type: self.board_type,
            arch: self.arch,
            labels: self.labels,
            targets: self.targets,
            peripherals: self.peripherals,
        })
    }
}

fn check_power(p: &RawPower) -> Result<PowerConfig, Fault> {
    let set = [
        ("on", p.on.is_some()),
        ("off", p.off.is_some()),
        ("cycle", p.cycle.is_some()),
        ("status", p.status.is_some()),
        ("status_on", p.status_on.is_some()),
        ("timeout", p.timeout.is_some()),
        ("cycle_delay", p.cycle_delay.is_some()),
        ("url", p.url.is_some()),
        ("method", p.method.is_some()),
        ("body", p.body.is_some()),
        ("status_url", p.status_url.is_some()),
        ("user", p.user.is_some()),
        ("password_env", p.password_env.is_some()),
        ("bearer_env", p.bearer_env.is_some()),
        ("qmp", p.qmp.is_some()),
        ("instructions", p.instructions.is_some()),
    ];
    let timeout = dur(p.timeout, Duration::from_secs(30));
    let cycle_delay = dur(p.cycle_delay, Duration::from_secs(2));
    let status_on = p
        .status_on
        .as_deref()
        .map(|s| pattern("power.status_on", s))
        .transpose()?;
    let t = |name: &str, v: &Option<String>| -> Result<Option<String>, Fault> {
        v.as_deref()
            .map(|s| tmpl(&format!("power.{name}"), s, template::POWER))
            .transpose()
    };
    match p.driver {
        PowerKind::Command => {
            let uses = [
                "on",
                "off",
                "cycle",
                "status",
                "status_on",
                "timeout",
                "cycle_delay",
            ];
            refuse_unused("power", "command", &set, &uses)?;
            let on = need("power", "command", "on", &p.on)?;
            let off = need("power", "command", "off", &p.off)?;
            Ok(PowerConfig::Command(CommandPower {
                on: tmpl("power.on", &on, template::POWER)?,
                off: tmpl("power.off", &off, template::POWER)?,
                cycle: t("cycle", &p.cycle)?,
                status: t("status", &p.status)?,
                status_on,
                timeout,
                cycle_delay,
            }))
        }
        PowerKind::Http => {
            let uses = [
                "url",
                "method",
                "body",
                "status_url",
                "status_on",
                "user",
                "password_env",
                "bearer_env",
                "timeout",
                "cycle_delay",
            ];
            refuse_unused("power", "http", &set, &uses)?;
            let url = need("power", "http", "url", &p.url)?;
            let method = p.method.clone().unwrap_or_else(|| "POST".into());
            if reqwest::Method::from_bytes(method.as_bytes()).is_err() {
                return Err(fault(
                    "power.method",
                    format!("`{method}` is not an HTTP method"),
                ));
            }
            let auth = match (&p.user, &p.password_env, &p.bearer_env) {
                (None, None, None) => HttpAuth::None,
                (Some(user), Some(pw), None) => HttpAuth::Basic {
                    user: user.clone(),
                    password_env: pw.clone(),
                },
                (None, None, Some(token)) => HttpAuth::Bearer {
                    token_env: token.clone(),
                },
                (Some(_), None, None) => {
                    return Err(fault(
                        "power.user",
                        "basic auth needs `password_env` too (the variable holding the password)",
                    ));
                }
                (None, Some(_), None) => {
                    return Err(fault("power.password_env", "basic auth needs `user` too"));
                }
                _ => {
                    return Err(fault(
                        "power.bearer_env",
                        "use either `user`/`password_env` or `bearer_env`, not both",
                    ));
                }
            };
            Ok(PowerConfig::Http(HttpPower {
                url: tmpl("power.url", &url, template::POWER)?,
                method: method.to_ascii_uppercase(),
                body: t("body", &p.body)?,
                status_url: t("status_url", &p.status_url)?,
                status_on,
                auth,
                timeout,
                cycle_delay,
            }))
        }
        PowerKind::Qemu => {
            refuse_unused("power", "qemu", &set, &["qmp", "timeout"])?;
            Ok(PowerConfig::Qemu(QemuPower {
                qmp: need("power", "qemu", "qmp", &p.qmp)?,
                timeout,
            }))
        }
        PowerKind::Manual => {
            refuse_unused("power", "manual", &set, &["instructions"])?;
            Ok(PowerConfig::Manual(ManualPower {
                instructions: p
                    .instructions
                    .clone()
                    .unwrap_or_else(|| "switch the board's power by hand".into()),
            }))
        }
    }
}

const DEFAULT_MAX_LINE: usize = 4096;

fn check_console(c: &RawConsole) -> Result<ConsoleConfig, Fault> {
    let set = [
        ("device", c.device.is_some()),
        ("baud", c.baud.is_some()),
        ("parity", c.parity.is_some()),
        ("data_bits", c.data_bits.is_some()),
        ("stop_bits", c.stop_bits.is_some()),
        ("address", c.address.is_some()),
        ("connect_timeout", c.connect_timeout.is_some()),
        ("command", c.command.is_some()),
        ("max_line", c.max_line.is_some()),
    ];
    let max_line = c.max_line.unwrap_or(DEFAULT_MAX_LINE);
    if !(16..=1 << 20).contains(&max_line) {
        return Err(fault(
            "console.max_line",
            "must be between 16 and 1048576 bytes",
        ));
    }
    match c.driver {
        ConsoleKind::Serial => {
            let uses = [
                "device",
                "baud",
                "parity",
                "data_bits",
                "stop_bits",
                "max_line",
            ];
            refuse_unused("console", "serial", &set, &uses)?;
            let data_bits = c.data_bits.unwrap_or(8);
            if !(5..=8).contains(&data_bits) {
                return Err(fault("console.data_bits", "must be 5, 6, 7 or 8"));
            }
            let stop_bits = c.stop_bits.unwrap_or(1);
            if !(1..=2).contains(&stop_bits) {
                return Err(fault("console.stop_bits", "must be 1 or 2"));
            }
            let baud = c.baud.unwrap_or(115_200);
            if baud == 0 {
                return Err(fault("console.baud", "must be positive"));
            }
            Ok(ConsoleConfig::Serial {
                device: need("console", "serial", "device", &c.device)?,
                baud,
                parity: c.parity.unwrap_or_default(),
                data_bits,
                stop_bits,
                max_line,
            })
        }
        ConsoleKind::Tcp => {
            refuse_unused(
                "console",
                "tcp",
                &set,
                &["address", "connect_timeout", "max_line"],
            )?;
            let address = need("console", "tcp", "address", &c.address)?;
            if address
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(fault("console.address", "expected HOST:PORT"));
            }
            Ok(ConsoleConfig::Tcp {
                address,
                connect_timeout: dur(c.connect_timeout, Duration::from_secs(10)),
                max_line,
            })
        }
        ConsoleKind::Command => {
            refuse_unused("console", "command", &set, &["command", "max_line"])?;
            let command = need("console", "command", "command", &c.command)?;
            Ok(ConsoleConfig::Command {
                command: tmpl("console.command", &command, template::BOARD)?,
                max_line,
            })
        }
    }
}

fn check_flash(f: &RawFlash) -> Result<FlashConfig, Fault> {
    let set = [
        ("run", f.run.is_some()),
        ("timeout", f.timeout.is_some()),
        ("flash_station", f.flash_station.is_some()),
        ("qmp", f.qmp.is_some()),
        ("image", f.image.is_some()),
        ("artifact", f.artifact.is_some()),
    ];
    let timeout = dur(f.timeout, Duration::from_secs(600));
    let driver = match f.driver {
        FlashKind::Command => {
            refuse_unused(
                "flash",
                "command",
                &set,
                &["run", "timeout", "flash_station"],
            )?;
            let run = need("flash", "command", "run", &f.run)?;
            FlashDriverConfig::Command {
                run: tmpl("flash.run", &run, template::FLASH)?,
            }
        }
        FlashKind::Qemu => {
            refuse_unused(
                "flash",
                "qemu",
                &set,
                &["qmp", "image", "artifact", "timeout"],
            )?;
            FlashDriverConfig::Qemu {
                qmp: need("flash", "qemu", "qmp", &f.qmp)?,
                image: need("flash", "qemu", "image", &f.image)?,
                artifact: f.artifact.clone().unwrap_or_else(|| "disk".into()),
            }
        }
    };
    Ok(FlashConfig {
        driver,
        timeout,
        flash_station: f.flash_station.clone(),
    })
}

/// A shell prompt: ends in `#` or `$` (and maybe a space), as busybox and bash print it.
const DEFAULT_PROMPT: &str = r"[#$] ?$";

fn check_boot(b: Option<&RawBoot>) -> Result<BootConfig, Fault> {
    let expect = b.map_or("login:", |b| b.expect.as_str());
    let fail = b.map_or(&[][..], |b| b.fail.as_slice());
    let timeout = dur(b.and_then(|b| b.timeout), Duration::from_secs(300));
    if timeout.is_zero() {
        return Err(fault("boot.timeout", "must be longer than zero"));
    }
    Ok(BootConfig {
        expect: pattern("boot.expect", expect)?,
        fail: fail
            .iter()
            .map(|f| pattern("boot.fail", f))
            .collect::<Result<_, _>>()?,
        timeout,
        silence: b.and_then(|b| b.silence).map(|d| d.0),
        max_garbage_lines: b.and_then(|b| b.max_garbage_lines).unwrap_or(50),
        login: match b.and_then(|b| b.login.as_deref()) {
            Some(l) if l.trim().is_empty() || l.chars().any(char::is_control) => {
                return Err(fault(
                    "boot.login",
                    "a user name: printable text, not empty",
                ));
            }
            other => other.map(str::to_string),
        },
        prompt: pattern(
            "boot.prompt",
            b.and_then(|b| b.prompt.as_deref())
                .unwrap_or(DEFAULT_PROMPT),
        )?,
    })
}

fn check_health(h: &RawHealth) -> Result<HealthConfig, Fault> {
    for (key, t) in &h.thresholds {
        if let (Some(w), Some(d)) = (t.warn, t.degraded)
            && w > d
        {
            return Err(fault(
                &format!("health.thresholds.{key}"),
                format!("`warn` ({w}) is above `degraded` ({d})"),
            ));
        }
    }
    Ok(HealthConfig {
        probe: h
            .probe
            .as_deref()
            .map(|p| tmpl("health.probe", p, template::BOARD))
            .transpose()?,
        interval: dur(h.interval, Duration::from_secs(300)),
        timeout: dur(h.timeout, Duration::from_secs(30)),
        console: h.console.unwrap_or(true),
        console_timeout: dur(h.console_timeout, Duration::from_secs(10)),
        thresholds: h
            .thresholds
            .iter()
            .map(|(k, t)| {
                (
                    k.clone(),
                    Threshold {
                        warn: t.warn,
                        degraded: t.degraded,
                    },
                )
            })
            .collect(),
    })
}

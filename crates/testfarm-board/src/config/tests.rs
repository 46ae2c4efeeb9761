use super::*;

const FULL: &str = r#"
url = "http://lab:8080"   # the agent's own keys are left alone

[[board]]
name = "grapefruit-7f495641"
board_type = "grapefruit"
arch = "arm"
labels = { sp_type = "grapefruit", baseline = "v16" }
targets = ["sp-grapefruit"]
power = { driver = "command", on = "uhubctl -l 1-1 -p 2 -a on", off = "uhubctl -l 1-1 -p 2 -a off", status = "uhubctl -l 1-1 -p 2", status_on = "power$" }
console = { driver = "serial", device = "/dev/ttyUSB0", baud = 115200 }
flash = { driver = "command", run = "sp-runner --config {{ config }} flash {{ artifacts.firmware }}" }
boot = { expect = "login:", timeout = "3m" }

[[board]]
name = "rpi4-2"
board_type = "rpi4"
arch = "arm64"
power = { driver = "http", url = "http://pdu1/outlets/3/{{ action }}", method = "PUT", user = "admin", password_env = "PDU_PASSWORD" }
console = { driver = "tcp", address = "ser2net:7002" }
health = { probe = "ssh {{ board.name }} cat /sys/class/thermal/thermal_zone0/temp", thresholds = { temp_c = { warn = 70.0, degraded = 85.0 } } }
recovery = { tries = 3, backoff = "10s", hang_after = "2m" }
quarantine = { health_failures = 2 }
on_release = "off"

[[board]]
name = "qemu-arm"
board_type = "qemu-virt"
arch = "arm64"
power = { driver = "qemu", qmp = "/run/qemu-arm/qmp.sock" }
console = { driver = "command", command = "socat - UNIX-CONNECT:/run/qemu-arm/serial.sock" }
flash = { driver = "qemu", qmp = "/run/qemu-arm/qmp.sock", image = "/var/lib/qemu-arm/disk.raw" }

[[board]]
name = "bench-1"
board_type = "vehicle-bench"
arch = "arm64"
power = { driver = "manual", instructions = "flip the red switch on bench 1" }
console = { driver = "tcp", address = "10.0.0.5:23" }
"#;

#[test]
fn the_issue_example_and_every_driver_parse() {
    let boards = parse_boards(FULL).unwrap();
    assert_eq!(boards.len(), 4);
    let g = &boards[0];
    assert_eq!(g.name, "grapefruit-7f495641");
    assert_eq!(g.targets, ["sp-grapefruit"]);
    assert_eq!(g.boot.timeout, Duration::from_secs(180));
    assert!(matches!(&g.power, PowerConfig::Command(c) if c.status_on.is_some()));
    assert!(matches!(
        g.console,
        ConsoleConfig::Serial { baud: 115_200, .. }
    ));
    let r = &boards[1];
    assert!(matches!(&r.power, PowerConfig::Http(h)
        if h.method == "PUT" && matches!(h.auth, HttpAuth::Basic { .. })));
    assert_eq!(r.recovery.tries, 3);
    assert_eq!(r.quarantine.health_failures, 2);
    assert!(
        r.health
            .as_ref()
            .is_some_and(|h| h.thresholds.contains_key("temp_c"))
    );
    assert!(
        matches!(&boards[2].flash, Some(FlashConfig { driver: FlashDriverConfig::Qemu { artifact, .. }, .. }) if artifact == "disk")
    );
    assert!(
        matches!(&boards[3].power, PowerConfig::Manual(m) if m.instructions.contains("red switch"))
    );
    assert!(parse_boards("url = \"x\"\n").unwrap().is_empty());
}

/// Replaces `from` in the example and parses.
fn broken(from: &str, to: &str) -> BoardConfigError {
    assert!(FULL.contains(from), "{from}");
    parse_boards(&FULL.replacen(from, to, 1)).unwrap_err()
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map_or(0, |i| i + 1)
}

#[test]
fn a_misspelt_key_names_board_field_position_and_suggests() {
    let e = broken("off = \"uhubctl", "of = \"uhubctl");
    assert_eq!(e.board.as_deref(), Some("grapefruit-7f495641"), "{e}");
    assert_eq!(e.field, "power.of", "{e}");
    let text = FULL.replacen("off = \"uhubctl", "of = \"uhubctl", 1);
    assert_eq!(e.line, line_of(&text, "of = \"uhubctl"), "{e}");
    let col = text.lines().nth(e.line - 1).unwrap().find("of = ").unwrap() + 1;
    assert_eq!(e.column, col, "{e}");
    assert!(e.message.contains("did you mean `off`"), "{e}");
    assert!(
        e.to_string().starts_with(&format!(
            "{}:{}: board `grapefruit-7f495641`: `power.of`:",
            e.line, e.column
        )),
        "{e}"
    );
}

#[test]
fn a_field_the_driver_does_not_use_is_refused_where_it_is() {
    let e = broken(
        "driver = \"command\", on =",
        "driver = \"command\", url = \"http://x\", on =",
    );
    assert_eq!(e.field, "power.url", "{e}");
    assert!(e.message.contains("does not use `url`"), "{e}");
    assert_eq!(e.line, 10, "{e}");
    let e = broken(
        "driver = \"http\", url = \"http://pdu1/outlets/3/{{ action }}\", ",
        "driver = \"http\", ",
    );
    assert_eq!(
        (e.board.as_deref(), e.field.as_str()),
        (Some("rpi4-2"), "power"),
        "{e}"
    );
    assert!(e.message.contains("needs `url`"), "{e}");
    assert_eq!(e.line, 19, "{e}");
}

#[test]
fn templates_patterns_and_values_are_checked() {
    let e = broken("{{ artifacts.firmware }}", "{{ artifact.firmware }}");
    assert_eq!((e.field.as_str(), e.line), ("flash.run", 12), "{e}");
    assert!(e.message.contains("`artifact`"), "{e}");
    let e = broken("{{ action }}", "{{ acton }}");
    assert_eq!(e.field, "power.url", "{e}");
    let e = broken("{{ board.name }} cat", "{{ board.nmae }} cat");
    assert_eq!(e.field, "health.probe", "{e}");
    let e = broken("status_on = \"power$\"", "status_on = \"power(\"");
    assert!(e.message.contains("not a valid pattern"), "{e}");
    let e = broken("timeout = \"3m\"", "timeout = \"3 minutes\"");
    assert_eq!((e.field.as_str(), e.line), ("boot.timeout", 13), "{e}");
    assert!(e.message.contains("invalid duration"), "{e}");
    let e = broken("driver = \"serial\"", "driver = \"usb\"");
    assert_eq!(e.field, "console.driver", "{e}");
    assert!(e.message.contains("serial"), "{e}");
    let e = broken("address = \"ser2net:7002\"", "address = \"ser2net\"");
    assert!(e.message.contains("HOST:PORT"), "{e}");
    let e = broken("warn = 70.0", "warn = 90.0");
    assert_eq!(e.field, "health.thresholds.temp_c", "{e}");
    let e = broken("name = \"rpi4-2\"", "name = \"qemu-arm\"");
    assert_eq!((e.line, e.field.as_str()), (27, "name"), "{e}");
    assert!(e.message.contains("second board"), "{e}");
    let e = broken("board_type = \"rpi4\"\n", "");
    assert!(e.message.contains("board_type"), "{e}");
    assert_eq!(e.board.as_deref(), Some("rpi4-2"), "{e}");
}

#[test]
fn a_syntax_error_is_located() {
    let e = parse_boards("[[board]]\nname = \"x\nboard_type = 1\n").unwrap_err();
    assert_eq!(e.line, 2, "{e}");
}

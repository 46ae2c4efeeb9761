//! The board examples users copy from are valid: every `[[board]]` of
//! `examples/agent-sp-testbed.toml` passes the same checks the agent applies at start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_sp_testbed_example_parses_with_its_drivers() {
    let boards = testfarm_board::parse_boards(&example("agent-sp-testbed.toml"))
        .unwrap_or_else(|e| panic!("agent-sp-testbed.toml: {e}"));
    let names: Vec<&str> = boards.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["grapefruit-7f495641", "gimlet-sp-c2a1"]);
    let g = &boards[0];
    assert_eq!(g.targets, ["sp-grapefruit"]);
    assert_eq!(g.labels.get("baseline").map(String::as_str), Some("v16"));
    assert!(g.flash.is_some(), "the testbed flashes with sp-runner");
    assert!(matches!(
        g.power,
        testfarm_board::config::PowerConfig::Command(_)
    ));
    assert!(matches!(
        boards[1].power,
        testfarm_board::config::PowerConfig::Http(_)
    ));
}

const BIN: &str = env!("CARGO_BIN_EXE_testfarm");

#[test]
fn detect_boards_reports_what_it_found_and_why_not() {
    let out = std::process::Command::new(BIN)
        .args(["agent", "detect-boards", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in ["serial", "hubs", "notes"] {
        assert!(v[key].is_array(), "{key} in {v}");
    }
    // On a machine without serial adapters or uhubctl, it says so instead of nothing.
    if v["serial"].as_array().unwrap().is_empty() {
        assert!(v["notes"].to_string().contains("/dev/serial/by-id"), "{v}");
    }
}

#[test]
fn check_registers_an_unreachable_testbed_offline_with_the_reason() {
    // The grapefruit testbed of the example, on a host without its hub or FTDI cable.
    let text = example("agent-sp-testbed.toml");
    let first = text.split("\n[[board]]\nname = \"gimlet").next().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        first
            .replace(
                "/srv/testfarm-agent",
                &dir.path().join("work").display().to_string(),
            )
            .replace(
                "/etc/testfarm/agent.token",
                &dir.path().join("t").display().to_string(),
            ),
    )
    .unwrap();
    std::fs::write(dir.path().join("t"), "x").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["agent", "--check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(stdout.contains("grapefruit-7f495641"), "{stdout}");
    assert!(stdout.contains("OFFLINE"), "{stdout}");
    assert!(stdout.contains("found: power"), "{stdout}");
}

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

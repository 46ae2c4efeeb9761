//! Every example job spec in `examples/jobs/` parses, so the docs never show a spec that
//! `testfarm submit` would refuse.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure report

use std::path::PathBuf;

use testfarm_core::jobspec::JobSpec;
use testfarm_core::resource::ResourceKind;

fn examples() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/jobs");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_example_parses() {
    let all = examples();
    assert!(all.len() >= 4, "{all:?}");
    for (name, text) in &all {
        if let Err(e) = JobSpec::parse(text) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn the_examples_cover_each_kind_and_a_pin() {
    let specs: Vec<(String, JobSpec)> = examples()
        .into_iter()
        .map(|(n, t)| (n, JobSpec::parse(&t).unwrap()))
        .collect();
    let kinds: Vec<Option<ResourceKind>> =
        specs.iter().map(|(_, s)| s.requirements().kind).collect();
    for k in ResourceKind::ALL {
        assert!(kinds.contains(&Some(k)), "no example for {k}");
    }
    assert!(
        specs
            .iter()
            .any(|(_, s)| s.requirements().resource.is_some())
    );
    assert!(
        specs
            .iter()
            .any(|(_, s)| !s.requirements().needs_resource())
    );
}

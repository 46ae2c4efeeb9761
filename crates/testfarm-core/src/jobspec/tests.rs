use super::*;
use crate::resource::ResourceKind;
use std::time::Duration;

const GOOD: &str = r#"
name: kernel-smoke
priority: high            # low | normal | high | urgent, or an integer
timeout: 30m
queue_timeout: 2h
retry_on_error: 1
requires:
  kind: board
  labels: { arch: arm64, board_type: rpi4, team: { in: [kernel, bsp] }, gpu: { exists: true }, site: { notin: [b] }, os: { not: win } }
  selector: "rack!=r9"
  peripherals: [ethernet]
  memory: 512M
steps:
  - deploy: { artifacts: { branch: main, latest: true } }
  - boot: { expect: "login:", timeout: 5m }
  - test: { run: "t/**/*_test.sh", via: guest, format: tap, timeout: 10m }
  - shell: "sp-runner --config ~/ci/config.toml --baseline v16 run"
  - http: { method: POST, url: "{{ vars.api }}/events", json: { vin: "{{ vars.vin }}" },
        save: { event_id: "$.id" } }
  - wait_for: { http: { url: "{{ vars.api }}/deployments/{{ event_id }}" },
            until: "$.state in ['COMPLETE', 'FAILED']", interval: 60s, timeout: 2h }
  - sleep: 10s
  - upload: out/report.html
always:
  - shell: "collect-diagnostics"
vars:
  api: http://localhost:9
  vin: 5
"#;

fn err(text: &str) -> SpecError {
    JobSpec::parse(text).unwrap_err()
}

#[test]
fn parses_the_design_example() {
    let s = JobSpec::parse(GOOD).unwrap();
    assert_eq!(s.priority, Priority::HIGH);
    assert_eq!(s.timeout.unwrap().get(), Duration::from_secs(1800));
    assert_eq!(s.retry_on_error, 1);
    assert_eq!(s.steps.len(), 8);
    assert!(matches!(&s.steps[3], Step::Shell(sh) if sh.run.starts_with("sp-runner")));
    assert!(matches!(&s.steps[7], Step::Upload(u) if u.path == "out/report.html"));
    let r = s.requirements();
    assert_eq!(r.kind, Some(ResourceKind::Board));
    assert_eq!(r.memory_mb, Some(512));
    assert_eq!(
        r.selector.to_string(),
        "arch=arm64,board_type=rpi4,gpu,os!=win,site notin (b),team in (kernel,bsp),rack!=r9"
    );
    // Templates are left alone.
    assert!(matches!(&s.steps[4], Step::Http(h) if h.url == "{{ vars.api }}/events"));
    // Round trip through JSON (how the server stores it).
    let json = serde_json::to_string(&s).unwrap();
    let back: JobSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}

#[test]
fn server_only_job_and_integer_priority() {
    let s = JobSpec::parse("name: ping\npriority: 350\nsteps:\n  - sleep: 1s\n").unwrap();
    assert_eq!(s.priority.value(), 350);
    assert!(!s.requirements().needs_resource());
    let e = err("name: x\nsteps:\n  - sleep: 1s\n  - shell: make\n");
    assert_eq!(e.path, "steps[1].shell");
    assert_eq!((e.line, e.column), (4, 5), "{e}");
}

#[test]
fn workflow_expressions_are_checked_at_submit() {
    let ok = "name: x\nsteps:\n  - http: { url: u, save: { id: \"$.items[0].id\" } }\n  - wait_for: { http: { url: u }, until: \"$.state in ['A', 'B']\", timeout: 1m }\n  - fail_if: \"$.id == null\"\n";
    let s = JobSpec::parse(ok).unwrap();
    assert!(matches!(&s.steps[2], Step::FailIf(e) if e == "$.id == null"));
    let e = err(
        "name: x\nsteps:\n  - wait_for:\n      http: { url: u }\n      until: \"$.state = 'A'\"\n      timeout: 1m\n",
    );
    assert_eq!(e.path, "steps[0].wait_for.until", "{e}");
    assert_eq!(e.line, 5, "{e}");
    assert!(e.message.contains("column 9"), "{e}");
    let e = err("name: x\nsteps:\n  - http: { url: u, save: { id: \"id\" } }\n");
    assert_eq!(e.path, "steps[0].http.save.id", "{e}");
    let e = err("name: x\nsteps:\n  - sleep: 1s\nalways:\n  - fail_if: \"(\"\n");
    assert_eq!(e.path, "always[0].fail_if", "{e}");
    assert_eq!(e.line, 5, "{e}");
}

#[test]
fn unknown_key_names_path_and_position() {
    let e = err("name: x\nrequires:\n  kind: board\n  colour: red\nsteps:\n  - shell: a\n");
    assert_eq!(e.path, "requires.colour", "{e}");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("colour"), "{e}");
    let e = err("name: x\nstep:\n  - shell: a\n");
    assert_eq!(e.path, "step", "{e}");
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.ends_with("did you mean `steps`?"), "{e}");
    assert!(
        !err("name: x\nzzz: 1\nsteps:\n  - sleep: 1s\n")
            .message
            .contains("did you mean")
    );
    let e = err("name: x\nsteps:\n  - shel: a\n");
    assert!(e.message.ends_with("did you mean `shell`?"), "{e}");
}

#[test]
fn unknown_label_op() {
    let e = err(
        "name: x\nrequires:\n  kind: board\n  labels:\n    team: { among: [a] }\nsteps:\n  - shell: a\n",
    );
    assert!(e.path.starts_with("requires.labels.team"), "{e}");
    assert_eq!(e.line, 5, "{e}");
}

#[test]
fn wrong_type() {
    let e = err("name: x\nretry_on_error: lots\nsteps:\n  - sleep: 1s\n");
    assert_eq!(e.path, "retry_on_error", "{e}");
    assert_eq!((e.line, e.column), (2, 17), "{e}");
    let e = err("name: x\nrequires:\n  kind: board\n  cpus: [1]\nsteps:\n  - shell: a\n");
    assert_eq!(e.path, "requires.cpus", "{e}");
    assert_eq!(e.line, 4, "{e}");
}

#[test]
fn bad_priority() {
    let e = err("name: x\npriority: top\nsteps:\n  - sleep: 1s\n");
    assert_eq!(e.path, "priority");
    assert_eq!((e.line, e.column), (2, 11), "{e}");
    assert!(e.message.contains("low, normal, high, urgent"), "{e}");
    let e = err("name: x\npriority: 5000\nsteps:\n  - sleep: 1s\n");
    assert_eq!(e.path, "priority");
}

#[test]
fn bad_duration() {
    let e = err("name: x\ntimeout: 30\nsteps:\n  - sleep: 1s\n");
    assert_eq!(e.path, "timeout");
    assert_eq!((e.line, e.column), (2, 10), "{e}");
    assert!(e.message.contains("unit"), "{e}");
    let e = err("name: x\nsteps:\n  - sleep: 1s\n  - sleep: 3 weeks\n");
    assert_eq!(e.path, "steps[1].sleep", "{e}");
    assert_eq!(e.line, 4, "{e}");
}

#[test]
fn bad_selector_and_size() {
    let e =
        err("name: x\nrequires:\n  kind: board\n  selector: \"team in a\"\nsteps:\n  - shell: a\n");
    assert_eq!(e.path, "requires.selector", "{e}");
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("column"), "{e}");
    let e = err("name: x\nrequires:\n  kind: qemu-host\n  memory: 4096\nsteps:\n  - shell: a\n");
    assert_eq!(e.path, "requires.memory", "{e}");
    assert_eq!(e.line, 4, "{e}");
}

#[test]
fn cross_field_rules_have_positions() {
    let e = err("name: x\nrequires:\n  cpus: 2\nsteps:\n  - shell: a\n");
    assert_eq!(e.path, "requires.kind");
    assert_eq!(e.line, 2, "{e}");
    let e = err("name: x\nsteps: []\n");
    assert_eq!(e.path, "steps");
    assert_eq!(e.line, 2, "{e}");
    let e = err("steps:\n  - sleep: 1s\n");
    assert!(e.message.contains("name"), "{e}");
    let e = err("name: x\nsteps:\n  - reboot: {}\n");
    assert!(e.path.starts_with("steps[0]"), "{e}");
    assert!(e.message.contains("shell"), "{e}");
    assert_eq!(e.line, 3, "{e}");
}

#[test]
fn garbage_never_panics() {
    for t in [
        "",
        ":",
        "[",
        "name: [",
        "- a\n- b",
        "name: x\nsteps: {a: 1}",
        "\t\t",
    ] {
        let e = err(t);
        assert!(!e.message.is_empty());
    }
}

#[test]
fn overrides() {
    let mut s = JobSpec::parse(GOOD).unwrap();
    let v = parse_var("vin=WAUZZZ").unwrap();
    s.apply_overrides(&[v], Some(Priority::LOW)).unwrap();
    assert_eq!(s.vars["vin"], serde_json::json!("WAUZZZ"));
    assert_eq!(s.priority, Priority::LOW);
    assert!(parse_var("novalue").is_err());
    assert!(
        s.apply_overrides(&[("a b".into(), "1".into())], None)
            .is_err()
    );
}

/// YAML-shaped input built from the spec's own keys and values, to reach deep paths.
fn yamlish() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let key = prop_oneof![
        Just("name"),
        Just("priority"),
        Just("timeout"),
        Just("requires"),
        Just("kind"),
        Just("labels"),
        Just("selector"),
        Just("in"),
        Just("notin"),
        Just("exists"),
        Just("steps"),
        Just("always"),
        Just("shell"),
        Just("test"),
        Just("http"),
        Just("wait_for"),
        Just("sleep"),
        Just("memory"),
        Just("cpus"),
        Just("run"),
        Just("vars"),
        Just("x"),
    ];
    let value = prop_oneof![
        Just("board"),
        Just("1s"),
        Just("4G"),
        Just("high"),
        Just("[a, b]"),
        Just("{}"),
        Just("true"),
        Just("-1"),
        Just("99999999999999999999"),
        Just("\"team in (a\""),
        Just("~"),
        Just("&a x"),
        Just("*a"),
        Just("|\n  t"),
        Just(""),
    ];
    let line = (
        0usize..4,
        key,
        prop_oneof![Just(": "), Just(":\n"), Just("- ")],
        value,
    )
        .prop_map(|(indent, k, sep, v)| format!("{}{k}{sep}{v}", "  ".repeat(indent)));
    proptest::collection::vec(line, 0..16).prop_map(|l| l.join("\n"))
}

proptest::proptest! {
    #[test]
    fn never_panics(s in "\\PC{0,80}") {
        let _ = JobSpec::parse(&s);
    }

    #[test]
    fn never_panics_on_yamlish(s in yamlish()) {
        if let Err(e) = JobSpec::parse(&s) {
            proptest::prop_assert!(!e.message.is_empty());
        }
    }
}

const BUILD: &str = r#"
name: hello
steps:
  - build:
      source: /srv/git/hello.git
      ref: main
      arch: aarch64
      config: defconfig
      run: make
      artifacts:
        - { glob: out/hello, kind: other, name: hello-bin }
        - { glob: "**/*.dtb", kind: dtb }
      server: build-07
      timeout: 20m
      env: { V: "1" }
"#;

#[test]
fn a_build_step_parses_and_asks_for_a_build_server_with_its_toolchain() {
    let s = JobSpec::parse(BUILD).unwrap();
    let Step::Build(b) = &s.steps[0] else {
        panic!("not a build step: {:?}", s.steps[0]);
    };
    assert_eq!(b.git_ref.as_deref(), Some("main"));
    assert_eq!(b.artifacts[1].kind, crate::artifact::ArtifactKind::Dtb);
    assert_eq!(b.named_server(), Some("build-07"));
    assert_eq!(s.steps[0].kind(), "build");
    let r = s.requirements();
    assert_eq!(r.kind, Some(ResourceKind::BuildServer));
    assert_eq!(r.build_arches, vec!["arm64".to_string()]);
    assert_eq!(r.resource.as_deref(), Some("build-07"));
    // `auto` is the default and is not written back.
    let auto = JobSpec::parse(&BUILD.replace("      server: build-07\n", "")).unwrap();
    assert_eq!(auto.requirements().resource, None);
    let json = serde_json::to_string(&auto).unwrap();
    assert!(!json.contains("server"), "{json}");
    let back: JobSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
    // With `requires`, the arch still needs a toolchain.
    let with = JobSpec::parse(&BUILD.replace(
        "steps:",
        "requires: { kind: build-server, cpus: 4 }\nsteps:",
    ))
    .unwrap();
    assert_eq!(with.requirements().cpus, Some(4));
    assert_eq!(with.requirements().build_arches, vec!["arm64".to_string()]);
}

#[test]
fn bad_build_steps_name_the_field_and_line() {
    let cases = [
        ("ref: main", "ref: \"-c x\"", "steps[0].build.ref", 6),
        (
            "glob: out/hello,",
            "glob: /etc/passwd,",
            "steps[0].build.artifacts[0].glob",
            11,
        ),
        (
            "name: hello-bin",
            "name: \".hidden\"",
            "steps[0].build.artifacts[0].name",
            11,
        ),
        ("run: make", "run: \" \"", "steps[0].build.run", 9),
        (
            "server: build-07",
            "server: \"bad name\"",
            "steps[0].build.server",
            13,
        ),
        (
            "arch: aarch64",
            "arch: \"arm 64\"",
            "steps[0].build.arch",
            7,
        ),
        (
            "env: { V: \"1\" }",
            "env: { 1X: \"1\" }",
            "steps[0].build.env.1X",
            15,
        ),
    ];
    for (from, to, path, line) in cases {
        let e = err(&BUILD.replace(from, to));
        assert_eq!(e.path, path, "{to}: {e}");
        assert_eq!(e.line, line, "{to}: {e}");
    }
    let e = err(&BUILD.replace("kind: dtb", "kind: bzimage"));
    assert!(e.path.starts_with("steps[0]"), "{e}");
    assert!(e.message.contains("bzimage"), "{e}");
    let e = err(&BUILD.replace("      run: make\n", ""));
    assert!(e.message.contains("run"), "{e}");
    // A build step in `always`, and a server `requires` contradicts.
    let e = err(&format!(
        "{BUILD}always:\n  - build: {{ source: x, run: make }}\n"
    ));
    assert_eq!(e.path, "always[0].build");
    let e = err(&BUILD.replace("steps:", "requires: { kind: board }\nsteps:"));
    assert_eq!(e.path, "steps[0].build.server", "{e}");
    let e = err(&BUILD.replace("steps:", "requires: { resource: other }\nsteps:"));
    assert!(e.message.contains("pins the job to other"), "{e}");
}

use super::*;

const OK: &str = r#"
name: kernel-ci
vars: { branch: main }
stages:
  - name: build
    job:
      requires: { kind: build-server }
      steps: [ { shell: "make" } ]
  - name: deploy
    job:
      requires: { kind: qemu-host }
      steps:
        - shell: "echo {{ stages.build.build }} {{ pipeline.id }} {{ vars.branch }}"
  - name: report
    needs: [build, deploy]
    job:
      steps:
        - http: { url: "http://127.0.0.1:1/{{ stages['deploy'].job }}" }
"#;

#[test]
fn parses_and_defaults_needs_and_names() {
    let p = PipelineSpec::parse(OK).unwrap();
    assert_eq!(p.stages.len(), 3);
    assert_eq!(p.needs(0), &[] as &[String]);
    assert_eq!(p.needs(1), &["build".to_string()]);
    assert_eq!(p.needs(2), &["build".to_string(), "deploy".to_string()]);
    assert_eq!(p.stages[1].job.name, "kernel-ci/deploy");
    let anc = p.ancestors(2);
    assert!(anc.contains("build") && anc.contains("deploy"));
}

fn err(text: &str) -> SpecError {
    PipelineSpec::parse(text).unwrap_err()
}

#[test]
fn unknown_need_names_the_field_and_the_stages() {
    let e = err(r#"
name: p
stages:
  - name: a
    job: { steps: [ { sleep: 1s } ] }
  - name: b
    needs: [nope]
    job: { steps: [ { sleep: 1s } ] }
"#);
    assert_eq!(e.path, "stages[1].needs[0]");
    assert!(e.message.contains("unknown stage `nope`"), "{e}");
    assert!(e.message.contains("a, b"), "{e}");
    assert_eq!(e.line, 7);
}

#[test]
fn a_cycle_is_refused_with_its_members() {
    let e = err(r#"
name: p
stages:
  - name: a
    needs: [c]
    job: { steps: [ { sleep: 1s } ] }
  - name: b
    needs: [a]
    job: { steps: [ { sleep: 1s } ] }
  - name: c
    needs: [b]
    job: { steps: [ { sleep: 1s } ] }
"#);
    assert!(e.message.contains("cycle"), "{e}");
    assert!(e.message.contains("a → c → b → a"), "{e}");
    assert_eq!(e.path, "stages[0].needs");
}

#[test]
fn a_template_naming_an_unneeded_or_unknown_stage_is_refused() {
    let e = err(r#"
name: p
stages:
  - name: a
    job: { steps: [ { sleep: 1s } ] }
  - name: b
    needs: []
    job: { steps: [ { http: { url: "http://x/{{ stages.a.job }}" } } ] }
"#);
    assert_eq!(e.path, "stages[1].job.steps[0].http.url");
    assert!(e.message.contains("does not need it"), "{e}");
    assert_eq!(e.line, 8);
    let e = err(r#"
name: p
stages:
  - name: a
    job: { steps: [ { http: { url: "http://x/{{ stages.zz.job }}" } } ] }
"#);
    assert!(e.message.contains("unknown stage `zz`"), "{e}");
}

#[test]
fn stage_jobs_are_checked_as_jobs() {
    let e = err(r#"
name: p
stages:
  - name: a
    job: { steps: [ { shell: "make" } ] }
"#);
    assert!(e.path.starts_with("stages[0].job.steps[0]"), "{e}");
    assert!(e.message.contains("needs a resource"), "{e}");
    let e = err(r#"
name: p
stages:
  - name: Bad-Name
    job: { steps: [ { sleep: 1s } ] }
"#);
    assert_eq!(e.path, "stages[0].name");
    let e = err("name: p\nstages: []\n");
    assert_eq!(e.path, "stages");
    let e = err(r#"
name: p
stages:
  - name: a
    job: { steps: [ { sleep: 1s } ] }
  - name: a
    job: { steps: [ { sleep: 1s } ] }
"#);
    assert!(e.message.contains("twice"), "{e}");
    let e = err("name: p\nstages:\n  - name: a\n    jobb: {}\n");
    assert!(e.message.contains("jobb"), "{e}");
}

#[test]
fn blocks_and_refs() {
    let t =
        "a {{ stages.build.artifacts.kernel }} b {{ vars.x }} {{- pipeline.id }} {{ secrets.s }}";
    let blocks = pipeline_blocks(t);
    assert_eq!(blocks.len(), 2);
    assert_eq!(
        &t[blocks[0].span.clone()],
        "{{ stages.build.artifacts.kernel }}"
    );
    assert_eq!(&t[blocks[1].span.clone()], "{{- pipeline.id }}");
    assert_eq!(
        stage_refs(" stages.build.x ~ stages[\"boot\"].y "),
        vec!["build", "boot"]
    );
    assert!(stage_refs("mystages.x").is_empty());
    assert!(pipeline_blocks("{{ unclosed").is_empty());
}

#[test]
fn vars_merge_with_overrides_winning() {
    let mut p = PipelineSpec::parse(
        r#"
name: p
vars: { a: "1", b: "2" }
stages:
  - name: s
    job: { vars: { b: "stage", c: "3" }, steps: [ { sleep: 1s } ] }
"#,
    )
    .unwrap();
    let job = p.stage_job(0, &BTreeSet::new()).unwrap();
    assert_eq!(job.vars["a"], "1");
    assert_eq!(job.vars["b"], "stage");
    p.apply_vars(&[("b".into(), "cli".into())]).unwrap();
    let over: BTreeSet<String> = ["b".to_string()].into();
    let job = p.stage_job(0, &over).unwrap();
    assert_eq!(job.vars["b"], "cli");
    assert!(p.apply_vars(&[("bad-name".into(), "x".into())]).is_err());
}

fn view<'a>(name: &'a str, needs: &'a [String], state: StageState) -> StageView<'a> {
    StageView { name, needs, state }
}

#[test]
fn advance_starts_ready_stages_and_ends_on_success() {
    let none: Vec<String> = vec![];
    let a = vec!["a".to_string()];
    let stages = [
        view("a", &none, StageState::Waiting),
        view("b", &a, StageState::Waiting),
    ];
    let next = advance(&stages, false);
    assert_eq!(next.start, vec!["a"]);
    assert!(next.end.is_none());
    let stages = [
        view("a", &none, StageState::Passed),
        view("b", &a, StageState::Waiting),
    ];
    assert_eq!(advance(&stages, false).start, vec!["b"]);
    let stages = [
        view("a", &none, StageState::Passed),
        view("b", &a, StageState::Passed),
    ];
    assert_eq!(
        advance(&stages, false).end.map(|e| e.state),
        Some(PipelineState::Passed)
    );
}

#[test]
fn a_lab_error_and_a_test_failure_end_differently() {
    let none: Vec<String> = vec![];
    let a = vec!["a".to_string()];
    for (st, want) in [
        (StageState::Error, PipelineState::Error),
        (StageState::Failed, PipelineState::Failed),
        (StageState::TimedOut, PipelineState::Failed),
    ] {
        let stages = [
            view("a", &none, st),
            view("b", &a, StageState::Waiting),
            view("c", &none, StageState::Passed),
        ];
        let next = advance(&stages, false);
        assert_eq!(next.skip, vec!["b"]);
        assert!(next.start.is_empty());
        let end = next.end.unwrap();
        assert_eq!(end.state, want);
        assert_eq!(end.failed_stage.as_deref(), Some("a"));
    }
}

#[test]
fn a_halt_waits_for_active_stages_after_cancelling_them() {
    let none: Vec<String> = vec![];
    let stages = [
        view("a", &none, StageState::Failed),
        view("b", &none, StageState::Running),
    ];
    let next = advance(&stages, false);
    assert_eq!(next.cancel, vec!["b"]);
    assert!(next.end.is_none());
    let stages = [
        view("a", &none, StageState::Queued),
        view("b", &none, StageState::Waiting),
    ];
    let next = advance(&stages, true);
    assert_eq!(next.cancel, vec!["a"]);
    assert_eq!(next.skip, vec!["b"]);
    let stages = [
        view("a", &none, StageState::Cancelled),
        view("b", &none, StageState::Skipped),
    ];
    assert_eq!(
        advance(&stages, true).end.map(|e| e.state),
        Some(PipelineState::Cancelled)
    );
}

#[test]
fn states_round_trip() {
    for s in PipelineState::ALL {
        assert_eq!(s.as_str().parse::<PipelineState>().unwrap(), s);
    }
    assert_eq!(
        "timed_out".parse::<StageState>().unwrap(),
        StageState::TimedOut
    );
    assert!("x".parse::<StageState>().is_err());
}

#[test]
fn the_example_parses() {
    let text = include_str!("../../../../examples/pipelines/kernel-ci.yaml");
    let p = PipelineSpec::parse(text).unwrap_or_else(|e| panic!("kernel-ci.yaml: {e}"));
    assert_eq!(p.stages.len(), 3);
}

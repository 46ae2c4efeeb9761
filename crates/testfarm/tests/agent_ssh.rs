//! An agent managing a remote host over SSH, end to end: a real `sshd` on a loopback port
//! with generated keys, a real server and a real agent process. The host registers with
//! capabilities measured over SSH, a job placed on it runs there, and `--check` names a
//! wrong key precisely.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod agent_support;
mod support;

use std::process::Command;
use std::time::Duration;

use agent_support::*;

#[path = "../../testfarm-agent/tests/sshd/mod.rs"]
mod sshd;

use sshd::{Sshd, free_port};

#[test]
fn a_job_runs_on_an_ssh_host_and_a_wrong_key_is_named() {
    let sshd = Sshd::start();
    let lab = lab("30s", "30s");
    let server = lab.start();
    let http = server.http();
    let t = lab.token.clone();
    let at = agent_token(&http, &t, "gw1");
    // remote2's sshd is not up yet: it must join when it comes up.
    let late_port = free_port();
    let late_entry = format!(
        "\n[[ssh_host]]\nname = \"remote2\"\ndestination = \"root@127.0.0.1\"\nport = {late_port}\n\
         identity_file = \"{d}/id\"\n\
         options = [\"StrictHostKeyChecking=no\", \"UserKnownHostsFile={d}/known_hosts\"]\n",
        d = sshd.dir.path().display()
    );
    let agent = Agent::start_with(
        &server.url,
        &at,
        "gw1",
        "reprobe_interval = \"1s\"\n",
        &(sshd.entry("remote1", "id") + &late_entry),
    );
    let r = wait_registered(&http, &t, "remote1");
    assert!(r["capabilities"]["cpus"].as_u64().unwrap() >= 1, "{r}");
    assert!(
        r["capabilities"]["memory_mb"].as_u64().unwrap() > 100,
        "{r}"
    );
    assert_eq!(r["labels"]["os"], "linux");
    assert_eq!(r["agent"], "gw1");

    let id = submit(
        &http,
        &t,
        "name: t\nrequires: { kind: build-server, resource: remote1 }\nsteps:\n  - shell: |\n      echo \"on $TESTFARM_RESOURCE in $(pwd)\"\n      echo out > r.txt\n  - upload: r.txt\n  - shell: exit 5\n",
    );
    let j = wait_job(&http, &t, &id, Duration::from_secs(90));
    assert_eq!(j["state"], "failed", "{j}\n{}", agent.log());
    assert_eq!(j["steps"][0]["outcome"], "passed", "{j}");
    assert_eq!(j["steps"][1]["outcome"], "passed", "{j}");
    assert_eq!(j["steps"][2]["exit_code"], 5, "{j}");
    let log = log(&http, &t, &id);
    let remote_dir = sshd.dir.path().join("remote-work").join(&id);
    assert!(
        log.contains(&format!("on remote1 in {}", remote_dir.display())),
        "{log}"
    );

    // remote2 comes up, with the same authorized key: the agent registers it.
    let late = Sshd::start_on(late_port);
    std::fs::copy(
        sshd.dir.path().join("authorized_keys"),
        late.dir.path().join("authorized_keys"),
    )
    .unwrap();
    let r2 = wait_registered(&http, &t, "remote2");
    assert_eq!(r2["agent"], "gw1", "{r2}\n{}", agent.log());
    assert!(
        agent.log().contains("connection refused"),
        "the first probe of remote2 should have said why it failed:\n{}",
        agent.log()
    );

    // `--check` with a wrong key: non-zero, and it says authentication failed.
    let cfg = sshd.dir.path().join("check.toml");
    std::fs::write(
        &cfg,
        format!(
            "url = \"http://127.0.0.1:1\"\nname = \"chk\"\nwork_dir = \"{}\"\n{}",
            sshd.dir.path().join("w").display(),
            sshd.entry("remote-bad", "wrong")
        ),
    )
    .unwrap();
    let out = Command::new(support::BIN)
        .args(["agent", "--check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("FAIL  remote-bad: remote-bad: authentication failed"),
        "{text}"
    );
}

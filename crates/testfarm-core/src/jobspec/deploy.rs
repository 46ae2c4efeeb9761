//! `deploy` and `boot`: put a build's images on a QEMU host and start them.
//!
//! ```yaml
//! requires: { kind: qemu-host }
//! steps:
//!   - deploy:
//!       artifacts: { branch: main, latest: true }   # or { build: ID } or { commit: SHA }
//!       cpus: 2
//!       memory: 1G
//!       append: "loglevel=7"
//!   - boot: { expect: "login:", timeout: 2m, retries: 2 }   # no `expect`: the guest agent's hello
//!   - test: { run: "t/*_test.sh", via: guest }
//! ```
//!
//! The VM's size is the job's share of the host: [`super::JobSpec::requirements`] counts it,
//! so the scheduler never places more VMs on a host than its cpus and memory (and the
//! `max_vms_per_host` policy) allow.

use serde::{Deserialize, Serialize};

use super::{ByteSize, JobSpec, Step, Via};
use crate::artifact::ArtifactKind;
pub use crate::duration::HumanDuration;
use crate::resource::ResourceKind;
use crate::size;

/// Which artifacts a deploy step takes: one build, chosen by id, by commit (its newest
/// build), or as the newest build of a branch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default)]
    pub latest: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The kinds to take, each required; empty: the kernel (required) and the build's
    /// initrd and rootfs when it has them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<ArtifactKind>,
}

/// `deploy: { artifacts: {branch: main, latest: true}, cpus: 1, memory: 512M }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployStep {
    pub artifacts: ArtifactQuery,
    /// The VM's cpus; unset: `requires.cpus`, else 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u32>,
    /// The VM's memory; unset: `requires.memory`, else 1G (what the scheduler reserves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Appended to the kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub append: Option<String>,
    /// Forward a loopback port of the host to the guest's port 22 (user-mode network with
    /// a virtio-net card), for images that run sshd; the port is in the job's
    /// `environment.json` and log.
    #[serde(default)]
    pub ssh: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// `boot: { expect: "login:", timeout: 5m, retries: 2 }`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootStep {
    /// Text the console must show for the boot to count (plain text, not a regex); unset:
    /// the boot counts when the guest agent says hello.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Further attempts after a failed boot (a fresh VM and overlay each time).
    #[serde(default)]
    pub retries: u32,
}

/// Most attempts a boot may ask for: more hides a broken image behind hours of retries.
pub const MAX_BOOT_RETRIES: u32 = 10;
/// Most cpus a VM may ask for.
pub const MAX_VM_CPUS: u32 = 256;
/// Least memory a VM boots with.
pub const MIN_VM_MEMORY_MB: u64 = 64;
/// A VM's memory when nothing says (the scheduler's default share).
pub const DEFAULT_VM_MEMORY_MB: u64 = crate::placement::DEFAULT_VM_MEMORY_MB;

/// The size of the VM a deploy step starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmSize {
    pub cpus: u32,
    pub memory_mb: u64,
}

impl DeployStep {
    /// The VM's size: the step's own, else the job's `requires`, else the defaults.
    pub fn vm_size(&self, spec: &JobSpec) -> VmSize {
        let req = spec.requires.as_ref();
        VmSize {
            cpus: self
                .cpus
                .or(req.and_then(|r| r.cpus))
                .unwrap_or(crate::placement::DEFAULT_VM_CPUS),
            memory_mb: self
                .memory
                .or(req.and_then(|r| r.memory))
                .map(|b| size::bytes_to_mib(b.0))
                .unwrap_or(DEFAULT_VM_MEMORY_MB),
        }
    }
}

impl JobSpec {
    /// The job's deploy step, if any (at most one: [`check_vm_steps`]).
    pub fn deploy_step(&self) -> Option<&DeployStep> {
        self.steps.iter().find_map(|s| match s {
            Step::Deploy(d) => Some(d),
            _ => None,
        })
    }
}

/// A field path relative to the step (`.artifacts.build`) and a message.
type Fault = (String, String);

fn check_query(q: &ArtifactQuery) -> Result<(), Fault> {
    let given: Vec<&str> = [
        q.build.as_ref().map(|_| "build"),
        q.commit.as_ref().map(|_| "commit"),
        q.branch.as_ref().map(|_| "branch"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let field = |f: &str| format!(".artifacts.{f}");
    match given.as_slice() {
        [] => {
            return Err((
                ".artifacts".into(),
                "say which build to deploy: `build: ID`, `commit: SHA`, or `branch: NAME` with `latest: true`".into(),
            ));
        }
        [_] => {}
        [_, second, ..] => {
            return Err((
                field(second),
                format!(
                    "give one of build, commit or branch, not {}",
                    given.join(" and ")
                ),
            ));
        }
    }
    for (name, value) in [
        ("build", &q.build),
        ("commit", &q.commit),
        ("branch", &q.branch),
        ("arch", &q.arch),
    ] {
        if let Some(v) = value
            && (v.trim().is_empty() || v.chars().any(char::is_control))
        {
            return Err((
                field(name),
                format!("{name} must be non-empty printable text"),
            ));
        }
    }
    if q.branch.is_some() && !q.latest {
        return Err((
            field("latest"),
            "`branch` deploys the newest build of the branch: write `latest: true` beside it"
                .into(),
        ));
    }
    if q.latest && q.branch.is_none() {
        return Err((
            field("latest"),
            "`latest: true` needs the `branch` whose newest build to take".into(),
        ));
    }
    Ok(())
}

/// A QEMU VM boots a kernel; a board takes whatever its flasher does (firmware, a rootfs
/// image, …), so the kernel rule is for VMs only.
fn check_vm_kinds(q: &ArtifactQuery) -> Result<(), Fault> {
    if !q.kinds.is_empty() && !q.kinds.contains(&ArtifactKind::Kernel) {
        return Err((
            ".artifacts.kinds".into(),
            "a QEMU VM boots a kernel: list `kernel` among the kinds".into(),
        ));
    }
    Ok(())
}

fn check_deploy(d: &DeployStep, on_board: bool) -> Result<(), Fault> {
    check_query(&d.artifacts)?;
    if !on_board {
        check_vm_kinds(&d.artifacts)?;
    }
    if let Some(c) = d.cpus
        && !(1..=MAX_VM_CPUS).contains(&c)
    {
        return Err((".cpus".into(), format!("cpus must be 1 to {MAX_VM_CPUS}")));
    }
    if let Some(m) = d.memory
        && size::bytes_to_mib(m.0) < MIN_VM_MEMORY_MB
    {
        return Err((
            ".memory".into(),
            format!("a VM needs at least {MIN_VM_MEMORY_MB}M of memory"),
        ));
    }
    if let Some(a) = &d.append
        && a.chars().any(char::is_control)
    {
        return Err((
            ".append".into(),
            "the kernel command line is one line".into(),
        ));
    }
    Ok(())
}

fn check_boot(b: &BootStep) -> Result<(), Fault> {
    if let Some(e) = &b.expect
        && e.trim().is_empty()
    {
        return Err((
            ".expect".into(),
            "an empty pattern matches any console: remove `expect` to wait for the guest agent instead".into(),
        ));
    }
    if b.retries > MAX_BOOT_RETRIES {
        return Err((
            ".retries".into(),
            format!("at most {MAX_BOOT_RETRIES} retries (a boot failing that often is broken)"),
        ));
    }
    Ok(())
}

/// The command line of a `shell` or `test` step.
fn run_of(step: &Step) -> Option<&str> {
    match step {
        Step::Shell(s) => Some(&s.run),
        Step::Test(t) => Some(&t.run),
        _ => None,
    }
}

/// A `via: console` step types one command line and learns its exit status from an
/// echoed marker after it; a second line would get its own prompt and the marker only
/// the last line's status, so more than one is refused (join them with `;` or `&&`).
fn check_console_line(run: &str) -> Result<(), String> {
    let lines = run.trim().lines().filter(|l| !l.trim().is_empty()).count();
    if lines > 1 || run.trim().contains('\r') {
        return Err(format!(
            "a `via: console` command is one line, typed at the board's prompt (this has {lines}); join commands with `;` or `&&`, or use one step per command"
        ));
    }
    if run.trim().is_empty() {
        return Err("a `via: console` step needs a command to type".into());
    }
    Ok(())
}

fn via_of(step: &Step) -> Option<Via> {
    match step {
        Step::Shell(s) => Some(s.via),
        Step::Test(t) => Some(t.via),
        _ => None,
    }
}

/// The rules of deploy, boot and `via: guest` across a spec: one deploy, not on a build
/// server, before any boot; a guest command after a boot; none of them in `always` but guest
/// commands (collecting diagnostics from the VM). Returns the full field path.
pub(super) fn check_vm_steps(spec: &JobSpec) -> Result<(), Fault> {
    let kind = spec.requires.as_ref().and_then(|r| r.kind);
    let on_board = kind == Some(ResourceKind::Board);
    let mut deployed = false;
    let mut booted = false;
    for (list, steps) in [("steps", &spec.steps), ("always", &spec.always)] {
        for (i, step) in steps.iter().enumerate() {
            let at = |field: &str| format!("{list}[{i}].{}{field}", step.kind());
            match step {
                Step::Deploy(_) | Step::Boot(_) if list == "always" => {
                    return Err((
                        at(""),
                        format!(
                            "a {} step cannot be in `always` (it runs in `steps`; the VM is removed after `always` whatever happened)",
                            step.kind()
                        ),
                    ));
                }
                Step::Deploy(d) => {
                    check_deploy(d, on_board).map_err(|(f, m)| (at(&f), m))?;
                    if deployed {
                        return Err((
                            at(""),
                            "a job deploys once; add another job for another build".into(),
                        ));
                    }
                    // Boards deploy too (flashing comes with the board drivers); a build
                    // server has nothing to boot.
                    if kind == Some(ResourceKind::BuildServer) {
                        return Err((
                            at(""),
                            "a deploy step runs on a qemu-host or a board, not a build-server: set `requires.kind: qemu-host`".into(),
                        ));
                    }
                    deployed = true;
                }
                Step::Boot(b) => {
                    check_boot(b).map_err(|(f, m)| (at(&f), m))?;
                    // A board is always there to boot (power-cycle, watch its console);
                    // a VM needs what a deploy fetched.
                    if !deployed && !on_board {
                        return Err((
                            at(""),
                            "a boot step starts what a deploy step before it deployed: add a `deploy` step first".into(),
                        ));
                    }
                    booted = true;
                }
                other if via_of(other) == Some(Via::Console) && !on_board => {
                    return Err((
                        at(".via"),
                        "`via: console` types into a board's serial console: set `requires.kind: board`".into(),
                    ));
                }
                other if via_of(other) == Some(Via::Console) => {
                    if let Some(run) = run_of(other) {
                        check_console_line(run).map_err(|m| (at(".run"), m))?;
                    }
                }
                other if via_of(other) == Some(Via::Guest) && !booted => {
                    return Err((
                        at(".via"),
                        "`via: guest` runs in the VM a boot step started: add `deploy` and `boot` steps before it".into(),
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(steps: &str) -> Result<JobSpec, crate::SpecError> {
        JobSpec::parse(&format!(
            "name: vm\nrequires: {{ kind: qemu-host }}\nsteps:\n{steps}"
        ))
    }

    #[test]
    fn a_full_vm_job_parses() {
        let spec = parse(
            "  - deploy: { artifacts: { branch: main, latest: true, kinds: [kernel, initrd] }, cpus: 2, memory: 512M }\n  - boot: { expect: 'login:', timeout: 2m, retries: 2 }\n  - test: { run: 't/*_test.sh', via: guest }\n",
        )
        .unwrap();
        let d = spec.deploy_step().unwrap();
        assert_eq!(
            d.artifacts.kinds,
            vec![ArtifactKind::Kernel, ArtifactKind::Initrd]
        );
        assert_eq!(
            d.vm_size(&spec),
            VmSize {
                cpus: 2,
                memory_mb: 512
            }
        );
        let Step::Boot(b) = &spec.steps[1] else {
            panic!()
        };
        assert_eq!(b.retries, 2);
        // The VM's size is the job's share of the host.
        let req = spec.requirements();
        assert_eq!((req.cpus, req.memory_mb), (Some(2), Some(512)));
    }

    #[test]
    fn vm_size_defaults_to_requires_then_the_scheduler_default() {
        let spec = JobSpec::parse(
            "name: vm\nrequires: { kind: qemu-host, memory: 2G }\nsteps:\n  - deploy: { artifacts: { build: B } }\n",
        )
        .unwrap();
        let d = spec.deploy_step().unwrap();
        assert_eq!(
            d.vm_size(&spec),
            VmSize {
                cpus: 1,
                memory_mb: 2048
            }
        );
        // A bigger VM than `requires` says raises the job's share.
        let spec = JobSpec::parse(
            "name: vm\nrequires: { kind: qemu-host, memory: 256M, cpus: 1 }\nsteps:\n  - deploy: { artifacts: { build: B }, memory: 1G, cpus: 4 }\n",
        )
        .unwrap();
        let req = spec.requirements();
        assert_eq!((req.cpus, req.memory_mb), (Some(4), Some(1024)));
    }

    #[track_caller]
    fn refused(steps: &str, path: &str, words: &str) {
        let e = parse(steps).unwrap_err();
        assert_eq!(e.path, path, "{e}");
        assert!(e.message.contains(words), "{e}");
        assert!(e.line > 0, "{e}");
    }

    #[test]
    fn bad_vm_steps_name_their_field_and_line() {
        refused(
            "  - deploy: { artifacts: {} }\n",
            "steps[0].deploy.artifacts",
            "say which build",
        );
        refused(
            "  - deploy: { artifacts: { build: B, commit: C } }\n",
            "steps[0].deploy.artifacts.commit",
            "not build and commit",
        );
        refused(
            "  - deploy: { artifacts: { branch: main } }\n",
            "steps[0].deploy.artifacts.latest",
            "latest: true",
        );
        refused(
            "  - deploy: { artifacts: { build: B, kinds: [initrd] } }\n",
            "steps[0].deploy.artifacts.kinds",
            "kernel",
        );
        refused(
            "  - deploy: { artifacts: { build: B }, cpus: 0 }\n",
            "steps[0].deploy.cpus",
            "cpus must be",
        );
        refused(
            "  - deploy: { artifacts: { build: B }, memory: 16M }\n",
            "steps[0].deploy.memory",
            "at least 64M",
        );
        refused(
            "  - boot: {}\n",
            "steps[0].boot",
            "add a `deploy` step first",
        );
        refused(
            "  - deploy: { artifacts: { build: B } }\n  - boot: { expect: '' }\n",
            "steps[1].boot.expect",
            "empty pattern",
        );
        refused(
            "  - deploy: { artifacts: { build: B } }\n  - boot: { retries: 11 }\n",
            "steps[1].boot.retries",
            "at most 10",
        );
        refused(
            "  - deploy: { artifacts: { build: B } }\n  - test: { run: t.sh, via: guest }\n",
            "steps[1].test.via",
            "boot",
        );
        refused(
            "  - deploy: { artifacts: { build: B } }\n  - deploy: { artifacts: { build: C } }\n",
            "steps[1].deploy",
            "deploys once",
        );
        let e = JobSpec::parse(
            "name: vm\nrequires: { kind: build-server }\nsteps:\n  - deploy: { artifacts: { build: B } }\n",
        )
        .unwrap_err();
        assert_eq!(e.path, "steps[0].deploy", "{e}");
        assert!(e.message.contains("qemu-host"), "{e}");
        let e = JobSpec::parse(
            "name: vm\nrequires: { kind: qemu-host }\nsteps:\n  - deploy: { artifacts: { build: B } }\n  - boot: {}\nalways:\n  - boot: {}\n",
        )
        .unwrap_err();
        assert_eq!(e.path, "always[0].boot", "{e}");
        // An unknown kind is refused while reading, with the choices.
        let e = parse("  - deploy: { artifacts: { build: B, kinds: [kernal] } }\n").unwrap_err();
        assert!(e.message.contains("kernel"), "{e}");
    }

    #[test]
    fn board_jobs_take_any_kinds_boot_without_deploy_and_use_the_console() {
        let board = |steps: &str| {
            JobSpec::parse(&format!(
                "name: b\nrequires: {{ kind: board }}\nsteps:\n{steps}"
            ))
        };
        board("  - deploy: { artifacts: { build: B, kinds: [firmware] } }\n  - boot: { expect: 'login:' }\n  - test: { run: run-tap 3, via: console }\n")
            .unwrap_or_else(|e| panic!("{e}"));
        board("  - boot: {}\n  - shell: { run: uname -a, via: console }\n")
            .unwrap_or_else(|e| panic!("{e}"));
        refused(
            "  - shell: { run: uname, via: console }\n",
            "steps[0].shell.via",
            "requires.kind: board",
        );
        // One command line per console step, refused at submit with its place.
        let e = board("  - boot: {}\n  - test:\n      via: console\n      run: |\n        uname -a\n        run-tap 3\n")
            .unwrap_err();
        assert_eq!(e.path, "steps[1].test.run", "{e}");
        assert!(
            e.message.contains("one line") && e.message.contains("has 2"),
            "{e}"
        );
        assert_eq!((e.line, e.column), (7, 7), "{e}");
        // A block with one line (its trailing newline) is one line.
        board("  - shell:\n      via: console\n      run: |\n        uname -a\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let e = board("  - shell: { run: '', via: console }\n").unwrap_err();
        assert_eq!(e.path, "steps[0].shell.run", "{e}");
    }

    #[test]
    fn guest_commands_may_collect_diagnostics_in_always() {
        parse(
            "  - deploy: { artifacts: { commit: abc } }\n  - boot: {}\n  - shell: { run: uname -a, via: guest }\nalways:\n  - shell: { run: dmesg, via: guest }\n",
        )
        .unwrap();
    }
}

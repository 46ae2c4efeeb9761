//! How a `test` step runs: as a shell script that runs each matching test script between
//! `TAP_START name` / `TAP_END name exit=N` markers, so the server can split the job's log
//! into one TAP suite per script (see `testfarm_tap::report::Collector`). Kept here so
//! every executor (local, SSH, later boards) runs tests the same way.

use crate::jobspec::{ShellStep, TestStep};

/// Whether `run` names test scripts by a glob (`t/**/*_test.sh`) rather than a command.
pub fn is_glob(run: &str) -> bool {
    let run = run.trim();
    !run.contains(char::is_whitespace) && run.contains(['*', '?', '['])
}

/// Quotes a string for `/bin/sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell script a `test` step runs. It is safe under `sh -e` (how agents run steps):
/// a failing test script is recorded, not fatal to the others.
///
/// A glob is matched with `find -path` (its `*` crosses directories, so `t/**/*_test.sh`
/// finds scripts at any depth), sorted, and each script runs with `sh` unless it is
/// executable. A command runs as one suite named after itself. The script exits 1 when
/// any test script exited non-zero, and 2 when a glob matched nothing (a test step that
/// tests nothing is a mistake, not a pass).
pub fn script(t: &TestStep) -> String {
    let run = t.run.trim();
    if !is_glob(run) {
        return format!(
            "echo {start}\nrc=0\n( {run} ) || rc=$?\necho \"TAP_END {name} exit=$rc\"\nexit $rc\n",
            start = quote(&format!("TAP_START {run}")),
            name = run.replace(['"', '$', '`', '\\'], "_"),
        );
    }
    let pattern = format!("./{}", run.trim_start_matches("./").replace("**/", ""));
    format!(
        r#"rc=0
found=0
for f in $(find . -type f -path {pattern} | LC_ALL=C sort); do
  found=1
  name=${{f#./}}
  echo "TAP_START $name"
  ec=0
  if [ -x "$f" ]; then "$f" || ec=$?; else sh "$f" || ec=$?; fi
  echo "TAP_END $name exit=$ec"
  [ "$ec" -eq 0 ] || rc=1
done
if [ "$found" -eq 0 ]; then
  echo {none} >&2
  exit 2
fi
exit $rc
"#,
        pattern = quote(&pattern),
        none = quote(&format!("no test script matches {run}")),
    )
}

/// The `test` step as the shell step that runs it.
pub fn as_shell(t: &TestStep) -> ShellStep {
    ShellStep {
        run: script(t),
        via: t.via,
        timeout: t.timeout,
        env: t.env.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_commands() {
        assert!(is_glob("t/**/*_test.sh"));
        assert!(!is_glob("make check"));
        assert!(!is_glob("./run-tests"));
        let g = script(&TestStep {
            run: "t/**/*_test.sh".into(),
            ..Default::default()
        });
        assert!(g.contains("-path './t/*_test.sh'"), "{g}");
        let c = script(&TestStep {
            run: "make check".into(),
            ..Default::default()
        });
        assert!(c.starts_with("echo 'TAP_START make check'"), "{c}");
        assert!(c.contains("TAP_END make check exit=$rc"), "{c}");
    }

    #[test]
    fn runs_scripts_between_markers() {
        let dir = std::env::temp_dir().join(format!("tf-test-step-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("t/sub")).unwrap();
        std::fs::write(dir.join("t/a_test.sh"), "echo 1..1; echo ok 1\n").unwrap();
        std::fs::write(
            dir.join("t/sub/b_test.sh"),
            "echo 1..1; echo 'not ok 1'; exit 1\n",
        )
        .unwrap();
        std::fs::write(dir.join("t/helper.sh"), "exit 9\n").unwrap();
        let out = std::process::Command::new("/bin/sh")
            .arg("-ec")
            .arg(script(&TestStep {
                run: "t/**/*_test.sh".into(),
                ..Default::default()
            }))
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            text,
            "TAP_START t/a_test.sh\n1..1\nok 1\nTAP_END t/a_test.sh exit=0\nTAP_START t/sub/b_test.sh\n1..1\nnot ok 1\nTAP_END t/sub/b_test.sh exit=1\n"
        );
        let none = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(script(&TestStep {
                run: "x/*_test.sh".into(),
                ..Default::default()
            }))
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(none.status.code(), Some(2));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

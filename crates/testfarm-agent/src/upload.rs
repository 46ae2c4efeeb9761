//! The `upload` step: files of the job's work directory, chosen by a glob, kept as the
//! job's outputs (`PUT /jobs/{id}/outputs/{name}`).
//!
//! Globs are matched here, against paths relative to the work directory, for local and
//! SSH hosts alike (the remote side only lists files), so a pattern means the same thing
//! everywhere: `*` and `?` within one path segment, `**` for any number of segments.
//! A pattern that matches nothing fails the step: the job did not produce what it promised.

/// Whether `path` (relative, `/`-separated) matches `pattern`.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pat: Vec<&str> = pattern
        .trim_start_matches("./")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let segs: Vec<&str> = path
        .trim_start_matches("./")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match_segments(&pat, &segs)
}

fn match_segments(pat: &[&str], segs: &[&str]) -> bool {
    match pat.split_first() {
        None => segs.is_empty(),
        Some((&"**", rest)) => (0..=segs.len()).any(|i| match_segments(rest, &segs[i..])),
        Some((p, rest)) => match segs.split_first() {
            Some((s, srest)) => {
                match_one(p.as_bytes(), s.as_bytes()) && match_segments(rest, srest)
            }
            None => false,
        },
    }
}

/// `*` and `?` within one segment (a leading `.` must be matched literally, as in sh).
fn match_one(p: &[u8], s: &[u8]) -> bool {
    if s.first() == Some(&b'.') && p.first() != Some(&b'.') {
        return false;
    }
    testfarm_core::wildcard::matches(p, s)
}

/// Regular files under `root`, as sorted relative paths (symlinks are not followed, so an
/// upload cannot leave the work directory).
pub fn list_files(root: &std::path::Path) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            let path = entry.path();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file()
                && let Ok(rel) = path.strip_prefix(root)
            {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The output name of a matched file: the step's `name` when it matched exactly one file,
/// otherwise the relative path flattened into one name the server accepts (letters,
/// digits, `.`, `_`, `-`, no leading dot): `out/sub/a.xml` → `out_sub_a.xml`.
pub fn output_name(step_name: Option<&str>, rel: &str, matches: usize) -> String {
    let raw = match step_name {
        Some(n) if matches == 1 => n,
        _ => rel,
    };
    let mut name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while name.starts_with('.') {
        name.replace_range(..1, "_");
    }
    name.truncate(200);
    name
}

/// Names the agent itself keeps in the work directory, never uploaded by a glob.
pub fn is_internal(rel: &str) -> bool {
    rel.starts_with(".testfarm/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("out/*.xml", "out/a.xml"));
        assert!(!glob_match("out/*.xml", "out/sub/a.xml"));
        assert!(glob_match("out/**/*.xml", "out/sub/deep/a.xml"));
        assert!(glob_match("out/**/*.xml", "out/a.xml"));
        assert!(glob_match("**", "a/b/c"));
        assert!(glob_match("report.html", "report.html"));
        assert!(glob_match("./report.html", "report.html"));
        assert!(glob_match("r?p*.h*", "report.html"));
        assert!(!glob_match("*.log", ".hidden.log"));
        assert!(glob_match(".*.log", ".hidden.log"));
        assert!(!glob_match("a*b", "acbd"));
        assert!(glob_match("a*b*", "acbd"));
    }

    #[test]
    fn output_names_are_flat() {
        assert_eq!(output_name(None, "out/sub/a.xml", 2), "out_sub_a.xml");
        assert_eq!(output_name(Some("r.txt"), "out/c.txt", 1), "r.txt");
        assert_eq!(output_name(Some("r.txt"), "out/c.txt", 2), "out_c.txt");
        assert_eq!(output_name(None, ".hidden dir/x", 2), "_hidden_dir_x");
    }

    #[test]
    fn lists_files_relative_and_sorted() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("out/sub")).unwrap();
        std::fs::write(d.path().join("out/b.txt"), "b").unwrap();
        std::fs::write(d.path().join("out/sub/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("out/link")).unwrap();
        assert_eq!(
            list_files(d.path()).unwrap(),
            vec!["out/b.txt".to_string(), "out/sub/a.txt".to_string()]
        );
    }
}

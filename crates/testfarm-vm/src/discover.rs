//! Finding the test scripts of a tree (`t/**/*_test.sh`), filtering them, and ordering them
//! longest-known-first so the slowest tests do not start last.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Result, VmError};

/// Test scripts under `root` for each of `paths` (directories are walked for `*_test.sh`,
/// files are taken as given), as sorted, de-duplicated paths relative to `root`.
pub fn discover(root: &Path, paths: &[PathBuf]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for p in paths {
        let abs = if p.is_absolute() {
            p.clone()
        } else {
            root.join(p)
        };
        if abs.is_dir() {
            walk(&abs, &mut out)?;
        } else if abs.is_file() {
            out.push(abs);
        } else {
            return Err(VmError::Config(format!(
                "no such test or directory: {}",
                p.display()
            )));
        }
    }
    let mut rel: Vec<String> = out
        .into_iter()
        .map(|p| {
            p.strip_prefix(root)
                .map(|r| r.to_string_lossy().into_owned())
                .map_err(|_| {
                    VmError::Config(format!(
                        "{} is outside the project root {} (the guest only sees the root)",
                        p.display(),
                        root.display()
                    ))
                })
        })
        .collect::<Result<_>>()?;
    rel.sort();
    rel.dedup();
    Ok(rel)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| VmError::io(format!("listing {}", dir.display()), e))?;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with("_test.sh"))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Keeps paths matching any pattern: a glob (`*`, `?`) against the whole path, otherwise a
/// substring. No patterns keeps everything.
pub fn filter(paths: Vec<String>, patterns: &[String]) -> Vec<String> {
    if patterns.is_empty() {
        return paths;
    }
    paths
        .into_iter()
        .filter(|p| {
            patterns.iter().any(|pat| {
                if pat.contains(['*', '?']) {
                    glob_match(pat.as_bytes(), p.as_bytes())
                } else {
                    p.contains(pat.as_str())
                }
            })
        })
        .collect()
}

/// `*` matches any run of characters (slashes included), `?` one character.
pub fn glob_match(pat: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while i < s.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == s[i]) {
            p += 1;
            i += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some(p);
            mark = i;
            p += 1;
        } else if let Some(sp) = star {
            p = sp + 1;
            mark += 1;
            i = mark;
        } else {
            return false;
        }
    }
    while p < pat.len() && pat[p] == b'*' {
        p += 1;
    }
    p == pat.len()
}

/// Unknown durations first (they may be long), then longest first; ties keep path order.
pub fn order_by_history(mut paths: Vec<String>, known: &HashMap<String, Duration>) -> Vec<String> {
    paths.sort_by(|a, b| match (known.get(a), known.get(b)) {
        (None, None) => a.cmp(b),
        (None, Some(_)) => std::cmp::Ordering::Less,
        (Some(_), None) => std::cmp::Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(x).then_with(|| a.cmp(b)),
    });
    paths
}

/// Durations of previous runs, kept per project root in the user's cache.
pub mod history {
    use super::*;

    fn file(root: &Path) -> PathBuf {
        let key: String = root
            .to_string_lossy()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        crate::image::default_cache_dir()
            .with_file_name("durations")
            .join(format!("{key}.json"))
    }

    pub fn load(root: &Path) -> HashMap<String, Duration> {
        let Ok(text) = std::fs::read_to_string(file(root)) else {
            return HashMap::new();
        };
        let map: HashMap<String, u64> = serde_json::from_str(&text).unwrap_or_default();
        map.into_iter()
            .map(|(k, ms)| (k, Duration::from_millis(ms)))
            .collect()
    }

    /// Merges `new` into the stored durations (best effort: a cache).
    pub fn save(root: &Path, new: &[(String, Duration)]) {
        let mut all = load(root);
        all.extend(new.iter().cloned());
        let map: HashMap<&String, u64> = all
            .iter()
            .map(|(k, d)| (k, u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
            .collect();
        let f = file(root);
        if let Some(dir) = f.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(text) = serde_json::to_string(&map) {
            let _ = std::fs::write(f, text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_substrings() {
        assert!(glob_match(b"t/*_test.sh", b"t/01/a_test.sh"));
        assert!(glob_match(b"*sanity*", b"t/01-sanity/x_test.sh"));
        assert!(!glob_match(b"t/?_test.sh", b"t/ab_test.sh"));
        let p = vec!["t/a/pass_test.sh".to_string(), "t/b/fail_test.sh".into()];
        assert_eq!(
            filter(p.clone(), &["fail".into()]),
            vec!["t/b/fail_test.sh"]
        );
        assert_eq!(filter(p, &["*/a/*".into()]), vec!["t/a/pass_test.sh"]);
    }

    #[test]
    fn longest_known_first() {
        let known = HashMap::from([
            ("a".to_string(), Duration::from_secs(1)),
            ("b".to_string(), Duration::from_secs(5)),
        ]);
        let order = order_by_history(vec!["a".into(), "b".into(), "c".into()], &known);
        assert_eq!(order, vec!["c", "b", "a"]);
    }
}

//! Which scripts `prove` runs: `*_test.sh` under directories (recursively, sorted), plus
//! any file named explicitly, narrowed by `--filter`.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// The scripts to run, in a stable order (paths in argument order, each directory's
/// scripts sorted), without duplicates.
pub fn discover(paths: &[PathBuf], filter: Option<&str>) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("{}: no such file or directory", path.display()))?;
        if meta.is_dir() {
            walk(path, &mut found)?;
        } else {
            found.push(path.clone());
        }
    }
    let mut seen = std::collections::HashSet::new();
    found.retain(|p| seen.insert(p.clone()));
    if let Some(pattern) = filter {
        found.retain(|p| matches(pattern, &p.to_string_lossy()));
    }
    Ok(found)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            walk(&path, out)?;
        } else if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().ends_with("_test.sh"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// `--filter`: a plain pattern matches as a substring of the path; one with `*` or `?`
/// is a glob over the whole path (`*` crosses `/`, so `*net*` works like a substring).
pub fn matches(pattern: &str, path: &str) -> bool {
    if !pattern.contains(['*', '?']) {
        return path.contains(pattern);
    }
    testfarm_core::wildcard::matches(pattern.as_bytes(), path.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters() {
        assert!(matches("net", "t/10-net/dns_test.sh"));
        assert!(!matches("disk", "t/10-net/dns_test.sh"));
        assert!(matches("t/*/dns_*", "t/10-net/dns_test.sh"));
        assert!(matches("*dns?test.sh", "t/10-net/dns_test.sh"));
        assert!(!matches("*.pl", "t/10-net/dns_test.sh"));
    }
}

//! The simulated board's power switch: a file in the state directory holding the state
//! and a generation that changes on every switch, so an off-then-on quicker than the board
//! polls is still seen as a power cycle.

use std::path::Path;

use crate::error::{BoardError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PowerFile {
    pub on: bool,
    pub generation: u64,
}

fn path(dir: &Path) -> std::path::PathBuf {
    dir.join("power")
}

/// Missing or unreadable: off (a board nobody switched on is off).
pub fn read(dir: &Path) -> PowerFile {
    let Ok(text) = std::fs::read_to_string(path(dir)) else {
        return PowerFile::default();
    };
    let mut parts = text.split_whitespace();
    let on = parts.next() == Some("on");
    let generation = parts.next().and_then(|g| g.parse().ok()).unwrap_or(0);
    PowerFile { on, generation }
}

/// Switches; switching to the state it is in changes nothing (as a relay).
pub fn switch(dir: &Path, on: bool) -> Result<PowerFile> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BoardError::io(format!("creating {}", dir.display()), e))?;
    let now = read(dir);
    if now.on == on {
        return Ok(now);
    }
    let next = PowerFile {
        on,
        generation: now.generation + 1,
    };
    let tmp = dir.join(format!("power.{}", std::process::id()));
    let text = format!("{} {}\n", if on { "on" } else { "off" }, next.generation);
    std::fs::write(&tmp, text)
        .map_err(|e| BoardError::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path(dir))
        .map_err(|e| BoardError::io(format!("renaming {}", tmp.display()), e))?;
    Ok(next)
}

fn hang_path(dir: &Path) -> std::path::PathBuf {
    dir.join("hang")
}

/// Tells the board to hang from now until its next power change: the file names the
/// power generation it applies to, so a power cycle clears it.
pub fn request_hang(dir: &Path) -> Result<()> {
    let p = read(dir);
    std::fs::write(hang_path(dir), format!("{}\n", p.generation))
        .map_err(|e| BoardError::io(format!("writing {}", hang_path(dir).display()), e))
}

/// Whether a hang was asked for the power generation `generation`.
pub fn hang_requested(dir: &Path, generation: u64) -> bool {
    std::fs::read_to_string(hang_path(dir))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        == Some(generation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switching_counts_generations() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()), PowerFile::default());
        assert_eq!(switch(dir.path(), true).unwrap().generation, 1);
        assert_eq!(switch(dir.path(), true).unwrap().generation, 1);
        assert_eq!(
            switch(dir.path(), false).unwrap(),
            PowerFile {
                on: false,
                generation: 2
            }
        );
        assert!(!hang_requested(dir.path(), 2));
        request_hang(dir.path()).unwrap();
        assert!(hang_requested(dir.path(), 2));
        switch(dir.path(), true).unwrap();
        assert!(!hang_requested(dir.path(), 3), "a power change clears it");
    }
}

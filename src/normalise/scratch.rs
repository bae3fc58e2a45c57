//! The spill's scratch folder in the system temp dir: made, held, and swept of the folders
//! killed runs left there.
//!
//! A run stopped by a signal removes its folder as it stops (`Batches` joins its spill thread
//! when dropped), but a run killed with SIGKILL, or by the out-of-memory killer, cannot: its
//! folder holds up to the whole pull. So every folder holds a lock file, locked (`flock`) by
//! the process using it for as long as it lives — the kernel releases it when the process
//! dies, however it dies — and a new folder is only made after sweeping every
//! `motcua-spill-*` folder whose lock can be taken: its process is gone. A folder is locked
//! before its lock file takes its name, so a folder being made is never swept; one with no
//! lock file at all (a process killed between the two steps) goes after an hour.

use std::fs::File;
use std::path::Path;
use std::time::Duration;

use tracing::warn;

use crate::error::{Doing, Result};

/// The prefix of every scratch folder's name.
const PREFIX: &str = "motcua-spill-";

/// The lock file in a scratch folder, and its name while it is being locked.
const LOCK: &str = ".lock";
const MAKING: &str = ".lock-making";

/// How old a folder without a lock file must be to be swept.
const UNLOCKED_AFTER: Duration = Duration::from_secs(3600);

const ROOM: &str = "is the temp dir full? set TMPDIR to a folder with room for a pull";

/// A scratch folder, held: removed when dropped.
pub struct Scratch {
    dir: tempfile::TempDir,
    /// Locked while this process holds the folder (none where the temp dir cannot lock).
    _lock: Option<File>,
}

impl Scratch {
    /// Sweeps the folders of dead runs from the temp dir, then makes one for this run.
    pub fn new() -> Result<Scratch> {
        let tmp = std::env::temp_dir();
        let swept = sweep(&tmp);
        if swept > 0 {
            warn!(
                folders = swept,
                temp_dir = %tmp.display(),
                "removed scratch folders that killed runs left in the temp dir"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(&tmp)
            .doing(format!(
                "creating a scratch folder in the system temp dir ({ROOM})"
            ))?;
        let lock = match hold(dir.path()) {
            Ok(f) => Some(f),
            Err(e) => {
                // Unlocked, it is swept by others only when an hour old, as a folder a
                // process was killed making.
                let _ = std::fs::remove_file(dir.path().join(MAKING));
                warn!(error = %e, "cannot lock the scratch folder (does the temp dir's file system lock files?)");
                None
            }
        };
        Ok(Scratch { dir, _lock: lock })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Locks a new lock file in `dir`, then gives it its name.
fn hold(dir: &Path) -> std::io::Result<File> {
    let making = dir.join(MAKING);
    let f = File::create(&making)?;
    f.lock()?;
    std::fs::rename(&making, dir.join(LOCK))?;
    Ok(f)
}

/// Removes the scratch folders in `tmp` that no live process holds; returns how many went.
/// A folder that cannot be read or removed is left, with a warning: sweeping is housekeeping,
/// and never stops a run.
pub fn sweep(tmp: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return 0;
    };
    let mut swept = 0;
    for e in entries.flatten() {
        let is_ours = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PREFIX))
            && e.file_type().is_ok_and(|t| t.is_dir());
        if !is_ours || !abandoned(&e.path()) {
            continue;
        }
        match std::fs::remove_dir_all(e.path()) {
            Ok(()) => swept += 1,
            Err(err) => warn!(
                folder = %e.path().display(),
                error = %err,
                "cannot remove a scratch folder a killed run left"
            ),
        }
    }
    swept
}

/// Whether no live process holds the scratch folder `dir`. Its lock, when taken here, stays
/// taken until the folder is removed (the file is closed then).
fn abandoned(dir: &Path) -> bool {
    match File::open(dir.join(LOCK)) {
        Ok(f) => f.try_lock().is_ok(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > UNLOCKED_AFTER),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder held by a live process stays; once its holder is gone (its lock released, as
    /// when a process dies), the next sweep removes it; a fresh folder with no lock file yet
    /// stays; other folders of the temp dir are never touched.
    #[test]
    fn only_folders_no_live_process_holds_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let held = tempfile::Builder::new()
            .prefix(PREFIX)
            .tempdir_in(tmp.path())
            .unwrap();
        let lock = hold(held.path()).unwrap();
        std::fs::write(held.path().join("000000.parquet"), b"rows").unwrap();
        let making = tmp.path().join(format!("{PREFIX}making"));
        std::fs::create_dir(&making).unwrap();
        let other = tmp.path().join("another-tool");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(tmp.path().join(format!("{PREFIX}a-file")), b"x").unwrap();

        assert_eq!(sweep(tmp.path()), 0);
        assert!(held.path().join("000000.parquet").exists());
        drop(lock);
        assert_eq!(sweep(tmp.path()), 1);
        assert!(!held.path().exists());
        assert!(making.exists() && other.exists());
        assert!(tmp.path().join(format!("{PREFIX}a-file")).exists());
    }

    /// A scratch folder is locked while held and removed when dropped.
    #[test]
    fn a_scratch_folder_is_held_then_removed() {
        let s = Scratch::new().unwrap();
        let path = s.path().to_path_buf();
        assert!(path.join(LOCK).exists());
        assert!(!abandoned(&path), "held by this process");
        drop(s);
        assert!(!path.exists());
    }
}

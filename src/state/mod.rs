//! Run state under `_state/`: the incremental cursor ([`cursor`]) and the single-writer lock
//! ([`lock`]). Both files are input like any other: read back, they are checked, and one that
//! is damaged or out of range is a [`StateDamaged`] error naming the file and the way out,
//! never a panic.

pub mod cursor;
pub mod lock;

pub use cursor::{read_cursor, write_cursor, Cursor, CURSOR_PATH};
pub use lock::{hostname, read_lock, Lock, LockInfo, LOCK_PATH};

use crate::error::{Error, Result, StateDamaged};

/// Reads a state file for `status`: its content, or what is wrong with it.
pub async fn describe<T>(
    read: impl std::future::Future<Output = Result<Option<T>>>,
) -> Result<std::result::Result<Option<T>, StateDamaged>> {
    match read.await {
        Ok(v) => Ok(Ok(v)),
        Err(Error::StateDamaged(d)) => Ok(Err(d)),
        Err(e) => Err(e),
    }
}

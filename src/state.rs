//! Run state under `_state/`: the incremental cursor and the single-writer lock.
//!
//! The lock is `_state/lock`, taken with a conditional create (`PutMode::Create`), so of two
//! runs started together exactly one gets it. It names its holder (run id, host, pid, command)
//! and an expiry that the holder pushes forward while it works. A lock past its expiry, or
//! left on this host by a process that no longer exists (a `kill -9`), is taken over, and the
//! takeover is logged. Before it publishes, a run checks that the lock is still its own.

use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::store::Store;

pub const CURSOR_PATH: &str = "_state/cursor.json";
pub const LOCK_PATH: &str = "_state/lock";

/// The incremental cursor: the greatest `NgayCapNhat` staged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cursor {
    /// `yyyyMMddHHmmss`, Vietnam time, as the source writes it.
    pub cursor: String,
    pub cursor_micros: i64,
    pub run_id: String,
    pub written_at: String,
}

pub async fn read_cursor(store: &Store) -> Result<Option<Cursor>> {
    match store.get(CURSOR_PATH).await? {
        Some(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
            format!("{CURSOR_PATH} is damaged: delete it to pull everything again")
        })?)),
        None => Ok(None),
    }
}

pub async fn write_cursor(store: &Store, c: &Cursor) -> Result<()> {
    store
        .publish(CURSOR_PATH, Bytes::from(serde_json::to_vec_pretty(c)?))
        .await
}

/// Who holds the lock, as written in `_state/lock`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LockInfo {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    pub command: String,
    pub started_at: String,
    pub expires_at: String,
}

impl LockInfo {
    fn expired(&self) -> bool {
        DateTime::parse_from_rfc3339(&self.expires_at)
            .map(|t| t < Utc::now())
            .unwrap_or(true)
    }

    /// Left on this host by a process that is gone.
    fn orphaned(&self) -> bool {
        self.host == hostname()
            && self.pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

impl std::fmt::Display for LockInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} ({}) on host {} pid {}, since {}, expires {}",
            self.run_id, self.command, self.host, self.pid, self.started_at, self.expires_at
        )
    }
}

/// Another run holds the lock.
#[derive(Debug, thiserror::Error)]
#[error("another run holds the lock {LOCK_PATH} of this output: {0}; wait for it to finish, or pass --wait to queue behind it")]
pub struct LockBusy(pub LockInfo);

/// Another run took the lock over while this one worked.
#[derive(Debug, thiserror::Error)]
#[error("this run lost the lock {LOCK_PATH} (now {0}); it stopped without publishing further — run again")]
pub struct LockLost(pub String);

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A held lock. Release it with [`Lock::release`]; its heartbeat stops on drop.
pub struct Lock {
    store: Store,
    pub info: LockInfo,
    heartbeat: Option<JoinHandle<()>>,
}

pub async fn read_lock(store: &Store) -> Result<Option<LockInfo>> {
    match store.get(LOCK_PATH).await? {
        None => Ok(None),
        Some(b) => Ok(Some(serde_json::from_slice(&b).unwrap_or(LockInfo {
            run_id: "unreadable".into(),
            host: "?".into(),
            pid: 0,
            command: "?".into(),
            started_at: "?".into(),
            expires_at: "1970-01-01T00:00:00Z".into(),
        }))),
    }
}

impl Lock {
    /// Takes the lock, or says who holds it. With `wait`, polls until it is free.
    pub async fn acquire(
        store: &Store,
        run_id: &str,
        command: &str,
        expiry: Duration,
        wait: bool,
    ) -> Result<Lock> {
        let mut announced = false;
        loop {
            match Self::try_acquire(store, run_id, command, expiry).await? {
                Ok(lock) => return Ok(lock),
                Err(holder) if wait => {
                    if !announced {
                        info!(holder = %holder, "waiting for the lock");
                        announced = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(holder) => return Err(LockBusy(holder).into()),
            }
        }
    }

    async fn try_acquire(
        store: &Store,
        run_id: &str,
        command: &str,
        expiry: Duration,
    ) -> Result<Result<Lock, LockInfo>> {
        let now = Utc::now();
        let info = LockInfo {
            run_id: run_id.into(),
            host: hostname(),
            pid: std::process::id(),
            command: command.into(),
            started_at: rfc3339(now),
            expires_at: rfc3339(now + chrono::Duration::from_std(expiry)?),
        };
        for _ in 0..5 {
            if store
                .create(LOCK_PATH, Bytes::from(serde_json::to_vec_pretty(&info)?))
                .await?
            {
                // Two takeovers of one stale lock can race (delete, create, delete, create):
                // only the run whose lock is there a moment later holds it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                match read_lock(store).await? {
                    Some(now) if now.run_id == info.run_id => {
                        let mut lock = Lock {
                            store: store.clone(),
                            info,
                            heartbeat: None,
                        };
                        lock.start_heartbeat(expiry);
                        return Ok(Ok(lock));
                    }
                    Some(other) => return Ok(Err(other)),
                    None => continue,
                }
            }
            match read_lock(store).await? {
                None => continue, // released in between
                Some(holder) if holder.expired() || holder.orphaned() => {
                    let why = if holder.expired() {
                        "expired"
                    } else {
                        "its process is gone"
                    };
                    warn!(holder = %holder, why, "taking over a stale lock");
                    store.delete(LOCK_PATH).await?;
                }
                Some(holder) => return Ok(Err(holder)),
            }
        }
        anyhow::bail!("could not take {LOCK_PATH}: it keeps changing hands; run again")
    }

    /// Pushes the expiry forward every third of it while the run works.
    fn start_heartbeat(&mut self, expiry: Duration) {
        let store = self.store.clone();
        let mut info = self.info.clone();
        self.heartbeat = Some(tokio::spawn(async move {
            let every = (expiry / 3).max(Duration::from_millis(200));
            loop {
                tokio::time::sleep(every).await;
                match read_lock(&store).await {
                    Ok(Some(now)) if now.run_id == info.run_id => {
                        info.expires_at = rfc3339(
                            Utc::now() + chrono::Duration::from_std(expiry).unwrap_or_default(),
                        );
                        if let Ok(body) = serde_json::to_vec_pretty(&info) {
                            let _ = store.publish(LOCK_PATH, Bytes::from(body)).await;
                        }
                    }
                    _ => return,
                }
            }
        }));
    }

    /// Fails with [`LockLost`] when another run has taken the lock.
    pub async fn ensure_held(&self) -> Result<()> {
        match read_lock(&self.store).await? {
            Some(now) if now.run_id == self.info.run_id => Ok(()),
            Some(other) => Err(LockLost(other.to_string()).into()),
            None => Err(LockLost("nobody".into()).into()),
        }
    }

    /// Removes the lock if it is still this run's.
    pub async fn release(mut self) -> Result<()> {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if let Some(now) = read_lock(&self.store).await? {
            if now.run_id == self.info.run_id {
                self.store.delete(LOCK_PATH).await?;
            }
        }
        Ok(())
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

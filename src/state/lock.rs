//! The single-writer lock `_state/lock`.
//!
//! Taken with a conditional create (`PutMode::Create`), so of two runs started together exactly
//! one gets it. It names its holder (run id, host, pid, command) and an expiry that the
//! holder's heartbeat pushes forward while it works. A lock past its expiry, or left on this
//! host by a process that no longer exists (a `kill -9`), is taken over with a conditional
//! update of the version that was read (ETag on object stores, a compare under a file lock on
//! folders), so of two takers exactly one wins; the takeover is logged. Every renewal is such a
//! conditional update too: a heartbeat that finds the lock changed, or cannot renew it before
//! it would expire, marks the lock lost ([`Lock::lost`]), and the run stops before it
//! publishes anything more. A lock that cannot be read is [`StateDamaged`], never taken over.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Mutex, Notify};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::error::{Doing, Error, LockBusy, LockLost, Result, StateDamaged};
use crate::store::{Store, Version};

pub const LOCK_PATH: &str = "_state/lock";

const LOCK_FIX: &str = "if no motcua run is working on this output, delete the file and run again";

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
    /// A lock read back from storage, checked: both times readable.
    pub fn parse(body: &[u8]) -> Result<LockInfo, StateDamaged> {
        let damaged = |problem: String| StateDamaged {
            path: LOCK_PATH,
            problem,
            fix: LOCK_FIX,
        };
        let l: LockInfo =
            serde_json::from_slice(body).map_err(|e| damaged(format!("it is not a lock ({e})")))?;
        for (name, value) in [("started_at", &l.started_at), ("expires_at", &l.expires_at)] {
            if DateTime::parse_from_rfc3339(value).is_err() {
                return Err(damaged(format!("its {name} {value:?} is not a time")));
            }
        }
        Ok(l)
    }

    fn expired(&self) -> bool {
        DateTime::parse_from_rfc3339(&self.expires_at).map_or(true, |t| t < Utc::now())
    }

    /// Left on this host by a process that is gone.
    fn orphaned(&self) -> bool {
        self.host == hostname()
            && self.pid != std::process::id()
            && !std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    fn body(&self) -> Result<Bytes> {
        let body = serde_json::to_vec_pretty(self).doing("encoding the lock")?;
        Ok(Bytes::from(body))
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

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn expiry_from(now: DateTime<Utc>, expiry: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(expiry)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Reads the lock: `None` when free.
pub async fn read_lock(store: &Store) -> Result<Option<LockInfo>> {
    match store.get(LOCK_PATH).await? {
        None => Ok(None),
        Some(b) => Ok(Some(LockInfo::parse(&b)?)),
    }
}

/// A held lock. Release it with [`Lock::release`]; its heartbeat stops on drop.
pub struct Lock {
    store: Store,
    pub info: LockInfo,
    /// The version of `_state/lock` this run last wrote.
    version: Arc<Mutex<Version>>,
    lost: watch::Receiver<Option<LockLost>>,
    stop: Arc<Notify>,
    heartbeat: Option<JoinHandle<()>>,
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
                Err(holder) => {
                    return Err(LockBusy {
                        run_id: holder.run_id.clone(),
                        holder: holder.to_string(),
                    }
                    .into())
                }
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
            expires_at: rfc3339(expiry_from(now, expiry)),
        };
        for _ in 0..5 {
            if let Some(v) = store.create_versioned(LOCK_PATH, info.body()?).await? {
                return Ok(Ok(Lock::held(store, info, v, expiry)));
            }
            let Some((body, version)) = store.get_versioned(LOCK_PATH).await? else {
                continue; // released in between
            };
            let holder = LockInfo::parse(&body)?;
            if !(holder.expired() || holder.orphaned()) {
                return Ok(Err(holder));
            }
            let why = if holder.expired() {
                "expired"
            } else {
                "its process is gone"
            };
            // Only the version read above is replaced: of two takers, one wins.
            if let Some(v) = store.update_if(LOCK_PATH, &version, info.body()?).await? {
                warn!(holder = %holder, why, "taking over a stale lock");
                return Ok(Ok(Lock::held(store, info, v, expiry)));
            }
        }
        Err(Error::LockLost(LockLost(format!(
            "could not take {LOCK_PATH}: it kept changing hands; run again"
        ))))
    }

    fn held(store: &Store, info: LockInfo, version: Version, expiry: Duration) -> Lock {
        let (tx, lost) = watch::channel(None);
        let mut lock = Lock {
            store: store.clone(),
            info,
            version: Arc::new(Mutex::new(version)),
            lost,
            stop: Arc::new(Notify::new()),
            heartbeat: None,
        };
        lock.heartbeat = Some(tokio::spawn(heartbeat(
            store.clone(),
            lock.info.clone(),
            lock.version.clone(),
            expiry,
            tx,
            lock.stop.clone(),
        )));
        lock
    }

    /// Resolves when the heartbeat finds the lock lost (never, while it is held).
    pub async fn lost(&self) -> LockLost {
        let mut rx = self.lost.clone();
        let lost = match rx.wait_for(|l| l.is_some()).await {
            Ok(l) => l.clone(),
            Err(_) => None,
        };
        match lost {
            Some(l) => l,
            None => std::future::pending().await,
        }
    }

    /// Fails with [`LockLost`] when the heartbeat lost the lock or another run holds it now.
    pub async fn ensure_held(&self) -> Result<()> {
        if let Some(l) = self.lost.borrow().clone() {
            return Err(l.into());
        }
        match read_lock(&self.store).await {
            Ok(Some(now)) if now.run_id == self.info.run_id => Ok(()),
            Ok(Some(other)) => Err(LockLost(format!("now {other}")).into()),
            Ok(None) => Err(LockLost("it was removed".into()).into()),
            Err(e) => Err(LockLost(e.to_string()).into()),
        }
    }

    /// Stops the heartbeat (letting a renewal under way finish), then removes the lock if it
    /// is still the version this run wrote.
    pub async fn release(mut self) -> Result<()> {
        self.stop.notify_one();
        if let Some(h) = self.heartbeat.take() {
            let _ = h.await;
        }
        if self.lost.borrow().is_some() {
            return Ok(());
        }
        let version = self.version.lock().await.clone();
        if !self.store.delete_if(LOCK_PATH, &version).await? {
            warn!("the lock changed hands before this run released it; left as it is");
        }
        Ok(())
    }
}

/// Pushes the expiry forward every third of it, by a conditional update of the version last
/// written. The lock is lost when the update finds another version, or when renewals keep
/// failing until the next one would come too late.
async fn heartbeat(
    store: Store,
    mut info: LockInfo,
    version: Arc<Mutex<Version>>,
    expiry: Duration,
    lost: watch::Sender<Option<LockLost>>,
    stop: Arc<Notify>,
) {
    let every = (expiry / 3).max(Duration::from_millis(200));
    let mut held_until = expiry_from(Utc::now(), expiry);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.notified() => return,
        }
        let now = Utc::now();
        info.expires_at = rfc3339(expiry_from(now, expiry));
        let current = version.lock().await.clone();
        let renewed = match info.body() {
            Ok(body) => store.update_if(LOCK_PATH, &current, body).await,
            Err(e) => Err(e),
        };
        match renewed {
            Ok(Some(v)) => {
                *version.lock().await = v;
                held_until = expiry_from(now, expiry);
            }
            Ok(None) => {
                let holder = match read_lock(&store).await {
                    Ok(Some(h)) => format!("now {h}"),
                    Ok(None) => "it was removed".into(),
                    Err(e) => e.to_string(),
                };
                warn!(holder = %holder, "the lock was taken from this run; stopping");
                let _ = lost.send(Some(LockLost(format!("taken while it worked: {holder}"))));
                return;
            }
            Err(e) => {
                if expiry_from(Utc::now(), every) >= held_until {
                    warn!(error = %e.to_string(), "could not renew the lock before it expires; stopping");
                    let _ = lost.send(Some(LockLost(format!(
                        "could not renew it before it expired: {e}"
                    ))));
                    return;
                }
                warn!(error = %e.to_string(), "could not renew the lock; trying again");
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

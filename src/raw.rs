//! Stage 2: the raw layer. Every response body, exactly as received, gzip-compressed, under
//! `raw/run_id=<run>/<endpoint>/<seq>_<request>.json.gz`. Bodies land in the background while
//! the pull goes on ([`RawLog::land_soon`]); a run waits for all of them ([`RawLog::settle`])
//! before it stages anything or moves the cursor, so a torn or unparsable body is kept too.
//! It holds personal data (restricted) and is enough to rebuild everything without the source.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use flate2::{read::GzDecoder, write::GzEncoder, Compression};

use crate::store::{Store, WrittenFile};

/// Lands the bodies of one run.
pub struct RawLog {
    store: Store,
    run_id: String,
    seq: AtomicU64,
    pub bytes_written: Arc<AtomicU64>,
    files: Arc<std::sync::Mutex<Vec<WrittenFile>>>,
    /// Bodies being compressed and written in the background, at most [`IN_FLIGHT`] at once.
    pending: std::sync::Mutex<Vec<tokio::task::JoinHandle<Result<()>>>>,
    slots: Arc<tokio::sync::Semaphore>,
}

/// Bodies landing at once in the background (each about a megabyte).
const IN_FLIGHT: usize = 4;

impl RawLog {
    pub fn new(store: Store, run_id: &str) -> Self {
        RawLog {
            store,
            run_id: run_id.to_string(),
            seq: AtomicU64::new(0),
            bytes_written: Default::default(),
            files: Default::default(),
            pending: Default::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT)),
        }
    }

    /// The path a body of `endpoint` asked with `query` lands at; `seq` keeps arrival order.
    pub fn path_for(&self, seq: u64, endpoint: &str, query: &[(&str, String)]) -> String {
        let name = endpoint.trim_matches('/').replace('/', "-");
        let mut req = String::new();
        for (k, v) in query {
            req.push('_');
            req.push_str(k);
            req.push('=');
            req.extend(v.chars().map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            }));
        }
        format!("raw/run_id={}/{name}/{seq:06}{req}.json.gz", self.run_id)
    }

    /// Writes `body` compressed; returns its path.
    pub async fn land(
        &self,
        endpoint: &str,
        query: &[(&str, String)],
        body: &[u8],
    ) -> Result<String> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.path_for(seq, endpoint, query);
        let gz = gzip(body)?;
        let bytes = gz.len() as u64;
        self.store
            .publish(&path, Bytes::from(gz))
            .await
            .context("landing a raw response")?;
        self.bytes_written.fetch_add(bytes, Ordering::Relaxed);
        self.files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(WrittenFile {
                path: path.clone(),
                bytes,
                rows: None,
            });
        Ok(path)
    }
}

impl RawLog {
    /// Starts landing `body` in the background (compressed on the blocking pool) and returns
    /// its path at once; [`RawLog::settle`] waits for every body started so. At most
    /// [`IN_FLIGHT`] bodies are in flight: this waits for a slot first.
    pub async fn land_soon(
        &self,
        endpoint: &str,
        query: &[(&str, String)],
        body: Bytes,
    ) -> Result<String> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .context("the raw writer was closed")?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.path_for(seq, endpoint, query);
        let (store, files, written, at) = (
            self.store.clone(),
            self.files.clone(),
            self.bytes_written.clone(),
            path.clone(),
        );
        let task = tokio::spawn(async move {
            let gz = tokio::task::spawn_blocking(move || gzip(&body))
                .await
                .context("compressing a raw response")??;
            let bytes = gz.len() as u64;
            store
                .publish(&at, Bytes::from(gz))
                .await
                .context("landing a raw response")?;
            written.fetch_add(bytes, Ordering::Relaxed);
            files
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(WrittenFile {
                    path: at,
                    bytes,
                    rows: None,
                });
            drop(slot);
            Ok(())
        });
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        Ok(path)
    }

    /// Waits until every body started by [`RawLog::land_soon`] is written; the first error.
    pub async fn settle(&self) -> Result<()> {
        let tasks: Vec<_> =
            std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut first = None;
        for t in tasks {
            let r = t.await.context("a raw writer panicked").and_then(|r| r);
            if let (Err(e), None) = (r, &first) {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The files landed so far, in arrival order.
    pub fn files(&self) -> Vec<WrittenFile> {
        let mut f = self.files.lock().unwrap_or_else(|e| e.into_inner()).clone();
        f.sort_by(|a, b| a.path.cmp(&b.path));
        f
    }
}

pub fn gzip(body: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 6), Compression::fast());
    enc.write_all(body)?;
    Ok(enc.finish()?)
}

pub fn gunzip(gz: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    GzDecoder::new(gz)
        .read_to_end(&mut out)
        .context("a raw file is not valid gzip")?;
    Ok(out)
}

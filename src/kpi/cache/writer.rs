//! The next KPI cache being written ([`CacheWriter`]): the counts carried over, then those of
//! each partition counted, each record a piece of the body, compressed whole when saved.

use std::io::Write;

use bytes::Bytes;
use tracing::warn;

use super::{config, older_path, path, put, END, MAGIC};
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::kpi::partial::Partial;
use crate::store::Store;

/// zstd's level for the cache: a fast one (it is state, rewritten every run; at a million
/// cases level 1 made 2.0 MB and level -3 2.7 MB, for a third less work).
const LEVEL: i32 = -3;

/// A cache file's body, uncompressed until saved, in pieces as made (one buffer grown by
/// doubling copied it over and over, into fresh pages).
pub(super) type Body = Vec<Vec<u8>>;

/// A cache file begun: its fingerprint.
pub(super) fn begin(fingerprint: &str) -> Result<Body> {
    let mut w = vec![];
    put(&mut w, fingerprint.as_bytes())?;
    Ok(vec![w])
}

pub(super) fn record(w: &mut Body, partition: &str, version: &str, kept: Vec<u8>) -> Result<()> {
    let mut head = vec![];
    put(&mut head, partition.as_bytes())?;
    put(&mut head, version.as_bytes())?;
    head.extend_from_slice(&(kept.len() as u64).to_le_bytes());
    w.extend([head, kept]);
    Ok(())
}

/// The next cache being written: the counts carried over, then those of each partition
/// counted, kept uncompressed until saved (so that the compression can wait until the count's
/// threads are done).
pub struct CacheWriter {
    pub(super) periods: Vec<Period>,
    pub(super) files: Vec<Body>,
}

impl CacheWriter {
    /// Keeps the counts of `partition` at `version`.
    pub fn push(&mut self, partition: &str, version: &str, partial: &Partial) -> Result<()> {
        for (i, w) in self.files.iter_mut().enumerate() {
            let kept = bincode::serde::encode_to_vec(partial.kept_ref(i), config())
                .map_err(|e| Error::Internal(format!("encoding the KPI cache: {e}")))?;
            record(w, partition, version, kept)?;
        }
        Ok(())
    }

    /// Writes the periods' files (compressing them on the blocking pool); a failure is a
    /// warning.
    pub async fn save(self, store: &Store) {
        for (w, p) in self.files.into_iter().zip(&self.periods) {
            let written = match crate::parquet::blocking(move || end(w)).await {
                Ok(b) => store.publish(&path(p), Bytes::from(b)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                warn!(file = %path(p), error = %e, "the KPI cache could not be written: the next run counts again");
                continue;
            }
            if let Err(e) = store.delete(&older_path(p)).await {
                warn!(file = %older_path(p), error = %e, "an older KPI cache file could not be removed");
            }
        }
    }
}

/// A cache file ended: its bytes, `MAGIC` then the body as one zstd frame.
pub(super) fn end(w: Body) -> Result<Vec<u8>> {
    let failed = |e: std::io::Error| Error::Internal(format!("compressing the KPI cache: {e}"));
    let mut z = zstd::stream::write::Encoder::new(MAGIC.to_vec(), LEVEL).map_err(failed)?;
    for piece in w.iter().chain([&END.to_le_bytes().to_vec()]) {
        z.write_all(piece).map_err(failed)?;
    }
    z.finish().map_err(failed)
}

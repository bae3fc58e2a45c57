//! The next KPI cache being written ([`CacheWriter`]): the counts carried over, then those of
//! each partition counted. A partition's record is encoded and compressed where it was
//! counted, on the counting thread ([`CacheWriter::records`]), as a zstd frame of its own;
//! the records carried over are compressed together when saved. A file's frames, one after
//! another, read as one zstd stream.

use std::io::Write;

use bytes::Bytes;
use tracing::warn;

use super::{older_path, path, put, END, MAGIC};
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::kpi::partial::Partial;
use crate::store::Store;

/// zstd's level for the cache: a fast one (it is state, rewritten every run; at a million
/// cases level 1 made 2.0 MB, level -3 2.7 MB and level -6 3.1 MB, for less work each).
const LEVEL: i32 = -6;

/// A piece of a cache file's body: bytes to compress when saved, or a zstd frame made already.
pub(super) enum Piece {
    Plain(Vec<u8>),
    Frame(Vec<u8>),
}

/// A cache file's body, in pieces as made (one buffer grown by doubling copied it over and
/// over, into fresh pages).
pub(super) type Body = Vec<Piece>;

/// A cache file begun: its fingerprint.
pub(super) fn begin(fingerprint: &str) -> Result<Body> {
    let mut w = vec![];
    put(&mut w, fingerprint.as_bytes())?;
    Ok(vec![Piece::Plain(w)])
}

/// A record's head: the partition, the version counted, and the length of its counts.
fn head(partition: &str, version: &str, kept: &[u8]) -> Result<Vec<u8>> {
    let mut head = vec![];
    put(&mut head, partition.as_bytes())?;
    put(&mut head, version.as_bytes())?;
    head.extend_from_slice(&(kept.len() as u64).to_le_bytes());
    Ok(head)
}

/// A record carried over (its counts still encoded), compressed when saved.
pub(super) fn record(w: &mut Body, partition: &str, version: &str, kept: Vec<u8>) -> Result<()> {
    let head = head(partition, version, &kept)?;
    w.extend([Piece::Plain(head), Piece::Plain(kept)]);
    Ok(())
}

thread_local! {
    /// This thread's zstd context, made once: a new one for every record (a partition's
    /// period) allocated and zeroed its tables each time.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// `record` as one zstd frame (with its size) at [`LEVEL`].
fn compress(record: &[u8]) -> Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|c| {
        let c = match c {
            Some(c) => c,
            None => c.insert(zstd::bulk::Compressor::new(LEVEL).map_err(compressing)?),
        };
        c.compress(record).map_err(compressing)
    })
}

fn compressing(e: std::io::Error) -> Error {
    Error::Internal(format!("compressing the KPI cache: {e}"))
}

/// Frames of one record per period, made where the partition was counted.
pub struct Framed(Vec<Vec<u8>>);

/// The next cache being written: the counts carried over, then those of each partition
/// counted, kept uncompressed until saved (so that the compression can wait until the count's
/// threads are done).
pub struct CacheWriter {
    pub(super) periods: Vec<Period>,
    pub(super) files: Vec<Body>,
}

impl CacheWriter {
    /// The records of `partition` at `version` for each period of `partial`, each a zstd frame
    /// of its own: made on the thread that counted it, so that the encoding and compressing of
    /// every partition's counts is shared by the counting threads.
    pub fn records(partition: &str, version: &str, partial: &Partial) -> Result<Framed> {
        let mut frames = vec![];
        for i in 0..partial.periods() {
            let kept = partial.kept_bytes(i);
            let mut record = head(partition, version, &kept)?;
            record.extend_from_slice(&kept);
            frames.push(compress(&record)?);
        }
        Ok(Framed(frames))
    }

    /// Keeps a partition's records, framed by [`CacheWriter::records`].
    pub fn push_framed(&mut self, framed: Framed) -> Result<()> {
        if framed.0.len() != self.files.len() {
            return Err(Error::Internal(
                "a partition's KPI cache records are not of this run's periods".into(),
            ));
        }
        for (w, f) in self.files.iter_mut().zip(framed.0) {
            w.push(Piece::Frame(f));
        }
        Ok(())
    }

    /// Keeps the counts of `partition` at `version` (as a run does, in two steps).
    #[cfg(test)]
    pub fn push(&mut self, partition: &str, version: &str, partial: &Partial) -> Result<()> {
        self.push_framed(Self::records(partition, version, partial)?)
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

/// A cache file ended: its bytes, `MAGIC` then the body as zstd frames — the plain pieces
/// between two frames made already compressed into one — which read as one stream.
pub(super) fn end(w: Body) -> Result<Vec<u8>> {
    // Room for it all at once (compressed, the plain pieces take no more than their length and
    // a frame's few bytes): grown by doubling, the file was copied into fresh pages over and
    // over (1.6 k page faults at a million cases, about 800 now).
    let room = w.iter().map(|p| match p {
        Piece::Plain(b) | Piece::Frame(b) => b.len(),
    });
    let mut out = Vec::with_capacity(MAGIC.len() + room.sum::<usize>() + 4096);
    out.extend_from_slice(MAGIC);
    let mut plain: Option<zstd::stream::write::Encoder<'static, Vec<u8>>> = None;
    for piece in w
        .into_iter()
        .chain([Piece::Plain(END.to_le_bytes().to_vec())])
    {
        match piece {
            Piece::Plain(b) => {
                let z = match plain.as_mut() {
                    Some(z) => z,
                    None => plain.insert(
                        zstd::stream::write::Encoder::new(std::mem::take(&mut out), LEVEL)
                            .map_err(compressing)?,
                    ),
                };
                z.write_all(&b).map_err(compressing)?;
            }
            Piece::Frame(f) => {
                if let Some(z) = plain.take() {
                    out = z.finish().map_err(compressing)?;
                }
                out.extend_from_slice(&f);
            }
        }
    }
    match plain {
        Some(z) => z.finish().map_err(compressing),
        None => Ok(out),
    }
}

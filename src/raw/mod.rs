//! Stage 2: the raw layer. Every response body, exactly as received, zstd-compressed, under
//! `raw/run_id=<run>/<endpoint>/<seq>_<request>.json.zst` (runs landed before 2026-12 are
//! gzip, `.json.gz`, and read back alike). Bodies land in the background while
//! the pull goes on ([`RawLog::land`]); a run waits for all of them ([`RawLog::settle`]) before
//! it stages anything or moves the cursor, so a torn or unparsable body is kept too. It holds
//! personal data (restricted) and is enough to rebuild everything without the source:
//! [`replay`] reads it back, [`prune`] drops what is older than the retention.

pub mod prune;
pub mod replay;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use flate2::{read::GzDecoder, write::GzEncoder, Compression};

use crate::error::{Doing, Error, Result};
use crate::store::{Store, WrittenFile};
use crate::wire::Endpoint;

/// Lands the bodies of one run.
pub struct RawLog {
    store: Store,
    run_id: String,
    seq: AtomicU64,
    bytes_written: Arc<AtomicU64>,
    files: Arc<Mutex<Vec<WrittenFile>>>,
    /// Bodies being compressed and written in the background, at most [`IN_FLIGHT`] at once.
    pending: Mutex<Vec<tokio::task::JoinHandle<Result<()>>>>,
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
    pub fn path_for(&self, seq: u64, endpoint: Endpoint, query: &[(&str, String)]) -> String {
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
        format!(
            "raw/run_id={}/{}/{seq:06}{req}.{EXTENSION}",
            self.run_id,
            endpoint.raw_dir()
        )
    }

    /// Starts landing `body` in the background (compressed on the blocking pool) and returns
    /// its path at once; [`RawLog::settle`] waits for every body started so. At most
    /// [`IN_FLIGHT`] bodies are in flight: this waits for a slot first.
    pub async fn land(
        &self,
        endpoint: Endpoint,
        query: &[(&str, String)],
        body: Bytes,
    ) -> Result<String> {
        let slot = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Internal("the raw writer was closed".into()))?;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.path_for(seq, endpoint, query);
        let (store, files, written, at) = (
            self.store.clone(),
            self.files.clone(),
            self.bytes_written.clone(),
            path.clone(),
        );
        let task = tokio::spawn(async move {
            let gz = tokio::task::spawn_blocking(move || compress(&body))
                .await
                .map_err(|_| Error::Internal("a raw compressor panicked".into()))??;
            let bytes = gz.len() as u64;
            store.publish(&at, Bytes::from(gz)).await?;
            written.fetch_add(bytes, Ordering::Relaxed);
            lock(&files).push(WrittenFile {
                path: at,
                bytes,
                rows: None,
            });
            drop(slot);
            Ok(())
        });
        lock(&self.pending).push(task);
        Ok(path)
    }

    /// Waits until every body started by [`RawLog::land`] is written; the first error.
    pub async fn settle(&self) -> Result<()> {
        let tasks: Vec<_> = std::mem::take(&mut *lock(&self.pending));
        let mut first = None;
        for t in tasks {
            let r = t
                .await
                .map_err(|_| Error::Internal("a raw writer panicked".into()))
                .and_then(|r| r);
            if let (Err(e), None) = (r, &first) {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// The files landed so far, in arrival order.
    pub fn files(&self) -> Vec<WrittenFile> {
        let mut f = lock(&self.files).clone();
        f.sort_by(|a, b| a.path.cmp(&b.path));
        f
    }

    /// Compressed bytes landed so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written.load(Ordering::Relaxed)
    }
}

/// A mutex's content, even after a panic elsewhere poisoned it (the lists stay consistent:
/// each change is one push).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The extension of a raw body landed now.
pub const EXTENSION: &str = "json.zst";

/// zstd's level for raw bodies: at its fastest positive level, zstd compresses a page of cases
/// half as fast again as gzip at level 1 (335 against 220 MB/s here), to 8.3 times smaller
/// against 5.2, and reads it back three times as fast.
const ZSTD_LEVEL: i32 = 1;

/// A body compressed as raw bodies land, by this thread's compressor: a fresh one per body
/// (what `zstd::bulk::compress` makes) allocated and cleared its tables for every page.
pub fn compress(body: &[u8]) -> Result<Vec<u8>> {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR
        .with_borrow_mut(|c| {
            let c = match c {
                Some(c) => c,
                None => c.insert(zstd::bulk::Compressor::new(ZSTD_LEVEL)?),
            };
            c.compress(body)
        })
        .doing("compressing a raw response")
}

/// Decompresses the raw file at `path` into `out` (emptied first, its room kept): zstd for
/// `.zst`, gzip for the `.json.gz` of earlier runs.
pub fn decompress_into(path: &str, compressed: &[u8], out: &mut Vec<u8>) -> Result<()> {
    if path.ends_with(".zst") {
        unzstd_into(compressed, out)
    } else {
        gunzip_into(compressed, out)
    }
}

/// Decompresses a zstd frame into `out`, room taken at once from the size its header states
/// (capped: the header is input).
fn unzstd_into(z: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let stated = zstd::zstd_safe::get_frame_content_size(z)
        .ok()
        .flatten()
        .map_or(0, |n| usize::try_from(n).unwrap_or(usize::MAX));
    out.reserve(stated.min(SIZE_HINT_MAX));
    // One frame of the stated size (what `compress` writes) by this thread's decompressor, made
    // once; anything else (no size stated, a size that lies, several frames) streamed.
    thread_local! {
        static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    if stated > 0 && stated <= SIZE_HINT_MAX {
        let whole = DECOMPRESSOR.with_borrow_mut(|d| {
            let d = match d {
                Some(d) => d,
                None => d.insert(zstd::bulk::Decompressor::new().ok()?),
            };
            d.decompress_to_buffer(z, out).ok()
        });
        if whole == Some(stated) {
            return Ok(());
        }
        out.clear();
    }
    zstd::stream::read::Decoder::with_buffer(z)
        .and_then(|mut d| d.read_to_end(out))
        .doing("a raw file is not valid zstd")?;
    Ok(())
}

pub fn gzip(body: &[u8]) -> Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 6), Compression::fast());
    enc.write_all(body).doing("compressing a raw response")?;
    enc.finish().doing("compressing a raw response")
}

pub fn gunzip(gz: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    gunzip_into(gz, &mut out)?;
    Ok(out)
}

/// Room reserved at once from a gzip trailer's size, at most (a larger body grows as read).
const SIZE_HINT_MAX: usize = 64 << 20;

/// Decompresses `gz` into `out`, emptied first and its room kept: a reader that decompresses
/// file after file into one buffer allocates it once. The room is taken at once from the size
/// the gzip trailer states (capped: the trailer is input), not grown by doubling and copying.
pub fn gunzip_into(gz: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    let stated = gz
        .len()
        .checked_sub(4)
        .and_then(|i| gz.get(i..))
        .and_then(|t| <[u8; 4]>::try_from(t).ok())
        .map_or(0, |t| u32::from_le_bytes(t) as usize);
    out.reserve(stated.min(SIZE_HINT_MAX));
    GzDecoder::new(gz)
        .read_to_end(out)
        .doing("a raw file is not valid gzip")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bodies_land_compressed_in_arrival_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "r").unwrap();
        let raw = RawLog::new(store.clone(), "r1");
        let mut paths = vec![];
        for i in 0..10u32 {
            let q = [
                ("page", i.to_string()),
                ("updated_from", "2024 07/01".into()),
            ];
            let body = Bytes::from(format!("{{\"error_code\":\"0\",\"data\":[{i}]}}"));
            paths.push(raw.land(Endpoint::Cases, &q, body).await.unwrap());
        }
        raw.settle().await.unwrap();
        assert_eq!(
            paths[3],
            "raw/run_id=r1/v1-hoso/000003_page=3_updated_from=2024-07-01.json.zst"
        );
        let files = raw.files();
        assert_eq!(
            files.iter().map(|f| f.path.clone()).collect::<Vec<_>>(),
            paths
        );
        assert_eq!(
            raw.bytes_written(),
            files.iter().map(|f| f.bytes).sum::<u64>()
        );
        let landed = store.get(&paths[7]).await.unwrap().unwrap();
        let mut back = b"left over".to_vec();
        decompress_into(&paths[7], &landed, &mut back).unwrap();
        assert_eq!(back, br#"{"error_code":"0","data":[7]}"#);
        assert!(decompress_into(&paths[7], b"not zstd", &mut back).is_err());
        // A body landed by an earlier motcua, gzip: read back by its extension.
        let old = gzip(br#"{"data":[7]}"#).unwrap();
        decompress_into("raw/run_id=r0/v1-hoso/000007.json.gz", &old, &mut back).unwrap();
        assert_eq!(back, br#"{"data":[7]}"#);
        assert!(decompress_into("x.json.gz", &landed, &mut back).is_err());
        assert!(gunzip(b"not gzip").is_err());
        // Into a buffer used before: emptied, then the body alone; a trailer that states
        // more than the body holds reserves room, nothing more.
        let mut buf = b"left over".to_vec();
        gunzip_into(&old, &mut buf).unwrap();
        assert_eq!(buf, br#"{"data":[7]}"#);
        let mut lying = gzip(b"short").unwrap().to_vec();
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(
            gunzip_into(&lying, &mut buf).is_err(),
            "a wrong stated size fails the check"
        );
    }

    /// Every shape of zstd file reads back whole: one frame of a stated size (this thread's
    /// decompressor, again and again), no size stated, two frames, and a frame whose stated
    /// size lies; a torn frame is an error, never a short body.
    #[test]
    fn zstd_files_of_every_shape_read_back() {
        let body: Vec<u8> = (0..300_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut out = b"left over".to_vec();
        for _ in 0..3 {
            let z = compress(&body).unwrap();
            unzstd_into(&z, &mut out).unwrap();
            assert_eq!(out, body);
        }
        let mut streamed = zstd::stream::write::Encoder::new(vec![], 1).unwrap();
        streamed.write_all(&body).unwrap();
        let streamed = streamed.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&streamed).ok(),
            Some(None)
        );
        unzstd_into(&streamed, &mut out).unwrap();
        assert_eq!(out, body);
        let mut two = compress(&body[..1000]).unwrap();
        two.extend(compress(&body[1000..]).unwrap());
        unzstd_into(&two, &mut out).unwrap();
        assert_eq!(out, body, "two frames: both read");
        // The size its header states (four bytes after the descriptor, and the window byte of
        // a frame that is not one segment) made smaller, then larger, than the body: an error.
        let z = compress(&body).unwrap();
        let fhd = z[4];
        assert_eq!(fhd >> 6, 2, "a four-byte content size");
        let at = 5 + usize::from(fhd & 0x20 == 0);
        for stated in [body.len() as u32 / 2, body.len() as u32 + 7, u32::MAX] {
            let mut lying = z.clone();
            lying[at..at + 4].copy_from_slice(&stated.to_le_bytes());
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(&lying).ok(),
                Some(Some(u64::from(stated)))
            );
            assert!(unzstd_into(&lying, &mut out).is_err(), "stated {stated}");
        }
        let mut lying = z.clone();
        lying.truncate(z.len() / 2);
        assert!(
            unzstd_into(&lying, &mut out).is_err(),
            "a torn frame is an error"
        );
    }
}

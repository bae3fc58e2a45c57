//! Spilling: normalised records on their way to staging are handed over in batches of
//! [`BATCH_RECORDS`], split by staging bucket, and written as LZ4 Parquet files to a scratch
//! folder in the system temp dir (never under the output root), by a thread of their own while
//! normalising goes on. Staging then reads one bucket at a time, so memory holds a batch or a
//! bucket, not the pull.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

use polars::prelude::*;

use super::{Normaliser, PiiKey, Reject, Stats};
use crate::error::{Doing, Error, Result};
use crate::stage::schema::{by_bucket, empty_staging};

/// Records per batch.
pub const BATCH_RECORDS: usize = 100_000;

/// The spilled records, by bucket.
pub struct Spill {
    dir: tempfile::TempDir,
    files: BTreeMap<u32, Vec<PathBuf>>,
    batches: usize,
}

const ROOM: &str = "is the temp dir full? set TMPDIR to a folder with room for a pull";

impl Spill {
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("motcua-spill-")
            .tempdir()
            .doing(format!(
                "creating a scratch folder in the system temp dir ({ROOM})"
            ))?;
        Ok(Spill {
            dir,
            files: BTreeMap::new(),
            batches: 0,
        })
    }

    /// Splits a batch by bucket and writes each part.
    pub fn add(&mut self, cases: DataFrame) -> Result<()> {
        if cases.height() == 0 {
            return Ok(());
        }
        let n = self.batches;
        self.batches += 1;
        for (bucket, mut part) in by_bucket(&cases)? {
            let path = self.dir.path().join(format!("{bucket:02}-{n:06}.parquet"));
            let what = || format!("writing {} ({ROOM})", path.display());
            let file = std::fs::File::create(&path).doing_with(what)?;
            ParquetWriter::new(file)
                .with_compression(ParquetCompression::Lz4Raw)
                .finish(&mut part)
                .doing_with(what)?;
            self.files.entry(bucket).or_default().push(path);
        }
        Ok(())
    }

    /// The buckets that received records.
    pub fn buckets(&self) -> Vec<u32> {
        self.files.keys().copied().collect()
    }

    /// Every record spilled to `bucket`, with `_order`.
    pub fn read(&self, bucket: u32) -> Result<DataFrame> {
        let mut frames = vec![];
        for path in self.files.get(&bucket).into_iter().flatten() {
            let what = || format!("reading back {}", path.display());
            let file = std::fs::File::open(path).doing_with(what)?;
            frames.push(ParquetReader::new(file).finish().doing_with(what)?.lazy());
        }
        if frames.is_empty() {
            let mut df = empty_staging()?;
            df.with_column(Column::new_empty("_order".into(), &DataType::Int64))?;
            return Ok(df);
        }
        Ok(concat(frames, UnionArgs::default())?.collect()?)
    }
}

/// A [`Normaliser`] whose records go to a [`Spill`] in batches, written by a thread of its own.
pub struct Batches {
    normaliser: Normaliser,
    tx: Option<SyncSender<DataFrame>>,
    writer: Option<JoinHandle<Result<Spill>>>,
}

/// What normalising a pull or a replay produced: the spilled records, the rejects, the counts.
pub struct Spilled {
    pub spill: Spill,
    pub rejects: Vec<Reject>,
    pub stats: Stats,
}

impl Batches {
    pub fn new(key: PiiKey, run_id: &str) -> Result<Self> {
        let mut spill = Spill::new()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<DataFrame>(1);
        let writer = std::thread::Builder::new()
            .name("motcua-spill".into())
            .spawn(move || {
                for batch in rx {
                    spill.add(batch)?;
                }
                Ok(spill)
            })
            .doing("starting the spill thread")?;
        Ok(Batches {
            normaliser: Normaliser::new(key, run_id),
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// Normalises a usable `/v1/hoso` body (see [`Normaliser::add_body`]).
    pub fn add_body(&mut self, raw_path: &str, body: &[u8]) -> Result<()> {
        self.normaliser.add_body(raw_path, body);
        self.flush_full()
    }

    /// Appends a page normalised elsewhere (in arrival order).
    pub fn absorb(&mut self, other: Normaliser) -> Result<()> {
        self.normaliser.absorb(other);
        self.flush_full()
    }

    fn flush_full(&mut self) -> Result<()> {
        if self.normaliser.pending() >= BATCH_RECORDS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let frame = self.normaliser.take_frame()?;
        let sent = self.tx.as_ref().map(|tx| tx.send(frame));
        if !matches!(sent, Some(Ok(()))) {
            // The writer stopped: its error says why.
            self.tx = None;
            return match self.writer.take().map(|w| w.join()) {
                Some(Ok(Err(e))) => Err(e),
                _ => Err(Error::Internal("the spill thread stopped".into())),
            };
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<Spilled> {
        self.flush()?;
        drop(self.tx.take());
        let spill = match self.writer.take().map(|w| w.join()) {
            Some(Ok(r)) => r?,
            _ => return Err(Error::Internal("the spill thread panicked".into())),
        };
        let (rejects, stats) = self.normaliser.into_rejects();
        Ok(Spilled {
            spill,
            rejects,
            stats,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records spilled in several batches come back per bucket, each exactly once, with their
    /// arrival order; the scratch folder goes with the spill.
    #[test]
    fn batches_spill_by_bucket_and_read_back_whole() {
        let mut b = Batches::new(PiiKey::new(b"k"), "r").unwrap();
        let page = 30_000;
        let pages = BATCH_RECORDS / page + 2;
        for p in 0..pages {
            let mut body = String::from(r#"{"error_code":"0","data":["#);
            for i in 0..page {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&format!(
                    r#"{{"MaHoSo":"C{p}-{i}","MaDonVi":"X","TrangThaiHoSo":"4","NgayTiepNhan":"20240701080000","NgayCapNhat":"20240701090000"}}"#
                ));
            }
            body.push_str("]}");
            b.add_body("raw/p", body.as_bytes()).unwrap();
        }
        let spilled = b.finish().unwrap();
        let n = pages * page;
        assert_eq!(spilled.stats.valid, n as u64);
        let dir = spilled.spill.dir.path().to_path_buf();
        assert_eq!(
            spilled.spill.batches, 2,
            "a batch once past {BATCH_RECORDS}, then the rest"
        );
        let mut seen = 0;
        let mut orders = vec![];
        for bucket in spilled.spill.buckets() {
            let df = spilled.spill.read(bucket).unwrap();
            seen += df.height();
            orders.extend(df.column("_order").unwrap().i64().unwrap().iter().flatten());
        }
        assert_eq!(seen, n);
        orders.sort();
        assert_eq!(orders, (1..=n as i64).collect::<Vec<_>>());
        assert_eq!(spilled.spill.read(99).unwrap().height(), 0);
        drop(spilled);
        assert!(!dir.exists(), "the scratch folder is removed");
    }
}

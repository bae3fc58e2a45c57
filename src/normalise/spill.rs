//! Spilling: normalised records on their way to staging are handed over in batches of
//! [`BATCH_RECORDS`], split by staging partition, and appended as a row group to that
//! partition's LZ4 Parquet file in a scratch folder in the system temp dir (never under the
//! output root), by a thread of their own while normalising goes on. Staging then reads one
//! partition at a time — its key columns whole, its rows a row group at a time — so memory
//! holds a batch or a row group, never the pull.

use std::collections::{BTreeMap, HashMap};
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

use polars::prelude::*;

use super::{Normaliser, PiiKey, Reject, Stats};
use crate::error::{Doing, Error, Result};
use crate::parquet::{Compression, ParquetFile, RowGroupWriter};
use crate::stage::layout::Partition;
use crate::stage::schema::{by_partition, spill_schema};

/// Records per batch.
pub const BATCH_RECORDS: usize = 50_000;

/// Partition files open for appending at once, at most; past it, the least recently appended
/// is ended and the partition's next rows start a file of their own.
const OPEN_FILES: usize = 128;

/// Row groups a spill file takes before it is ended and the partition's next rows start
/// another: a file's row-group metadata stays in memory until it is ended, and a pull of ten
/// million records writes a row group per partition per batch.
const FILE_GROUPS: usize = 16;

/// The spilled records, by partition.
pub struct Spill {
    dir: super::scratch::Scratch,
    /// Ended files, per partition, in the order written.
    files: BTreeMap<Partition, Vec<PathBuf>>,
    open: HashMap<Partition, Open>,
    schema: Schema,
    batches: usize,
    files_made: usize,
}

struct Open {
    writer: RowGroupWriter<BufWriter<std::fs::File>>,
    path: PathBuf,
    last_batch: usize,
    groups: usize,
}

const ROOM: &str = "is the temp dir full? set TMPDIR to a folder with room for a pull";

impl Spill {
    pub fn new() -> Result<Self> {
        let dir = super::scratch::Scratch::new()?;
        Ok(Spill {
            dir,
            files: BTreeMap::new(),
            open: HashMap::new(),
            schema: spill_schema(),
            batches: 0,
            files_made: 0,
        })
    }

    /// Splits a batch (staging columns and `_order`) by partition and appends each part.
    pub fn add(&mut self, cases: DataFrame) -> Result<()> {
        if cases.height() == 0 {
            return Ok(());
        }
        self.batches += 1;
        for (partition, part) in by_partition(&cases)? {
            self.append(partition, part)?;
        }
        Ok(())
    }

    fn append(&mut self, partition: Partition, part: DataFrame) -> Result<()> {
        if !self.open.contains_key(&partition) {
            if self.open.len() >= OPEN_FILES {
                self.end_least_recent()?;
            }
            let path = self
                .dir
                .path()
                .join(format!("{:06}.parquet", self.files_made));
            self.files_made += 1;
            let file = std::fs::File::create(&path)
                .doing_with(|| format!("creating {} ({ROOM})", path.display()))?;
            let writer = RowGroupWriter::new(
                BufWriter::new(file),
                &self.schema,
                usize::MAX,
                Compression::Lz4,
            )?;
            let batch = self.batches;
            self.open.insert(
                partition,
                Open {
                    writer,
                    path,
                    last_batch: batch,
                    groups: 0,
                },
            );
        }
        let batch = self.batches;
        let names: Vec<PlSmallStr> = self.schema.iter_names().cloned().collect();
        let part = part.select(names)?;
        let Some(open) = self.open.get_mut(&partition) else {
            return Err(Error::Internal("a spill file vanished".into()));
        };
        open.last_batch = batch;
        open.groups += 1;
        open.writer.push(part)?;
        open.writer
            .flush()
            .map_err(|e| e.doing(format!("writing {} ({ROOM})", open.path.display())))?;
        if open.groups >= FILE_GROUPS {
            self.end(partition)?;
        }
        Ok(())
    }

    fn end_least_recent(&mut self) -> Result<()> {
        let oldest = self
            .open
            .iter()
            .min_by_key(|(p, o)| (o.last_batch, **p))
            .map(|(p, _)| *p);
        match oldest {
            Some(p) => self.end(p),
            None => Ok(()),
        }
    }

    fn end(&mut self, partition: Partition) -> Result<()> {
        let Some(open) = self.open.remove(&partition) else {
            return Ok(());
        };
        let what = || format!("writing {} ({ROOM})", open.path.display());
        let sink = open.writer.finish().map_err(|e| e.doing(what()))?;
        sink.into_inner()
            .map_err(|e| e.into_error())
            .doing_with(what)?;
        self.files.entry(partition).or_default().push(open.path);
        Ok(())
    }

    /// Ends every file: the spill can be read.
    pub fn seal(&mut self) -> Result<()> {
        let open: Vec<Partition> = self.open.keys().copied().collect();
        for p in open {
            self.end(p)?;
        }
        Ok(())
    }

    /// The partitions that received records, in order.
    pub fn partitions(&self) -> Vec<Partition> {
        let mut all: Vec<Partition> = self.files.keys().chain(self.open.keys()).copied().collect();
        all.sort();
        all.dedup();
        all
    }

    /// The files of `partition` (after [`Spill::seal`]), oldest first.
    pub fn files(&self, partition: &Partition) -> Result<Vec<ParquetFile>> {
        if self.open.contains_key(partition) {
            return Err(Error::Internal("a spill read before it was sealed".into()));
        }
        self.files
            .get(partition)
            .into_iter()
            .flatten()
            .map(|p| ParquetFile::open_path(p))
            .collect()
    }

    /// The bytes of the files of `partition` (after [`Spill::seal`]).
    pub fn bytes(&self, partition: &Partition) -> u64 {
        self.files
            .get(partition)
            .into_iter()
            .flatten()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Every record spilled to `partition`, whole, with `_order` (for tests and small spills).
    pub fn read(&self, partition: &Partition) -> Result<DataFrame> {
        let mut out = DataFrame::empty_with_schema(&self.schema);
        for f in self.files(partition)? {
            out.vstack_mut_owned(f.read(None, (0, f.rows()))?)?;
        }
        Ok(out)
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
                crate::memory::release_thread();
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
        if self.normaliser.pending() == 0 {
            // A batch begins: room for all of it (and a page of the pull's size) at once.
            self.normaliser.reserve(BATCH_RECORDS + 1024);
        }
        self.normaliser.add_body(raw_path, body);
        self.flush_full()
    }

    /// Normalises a usable `/v1/hoso` body whose records were read already (see
    /// [`Normaliser::add_read`]).
    pub fn add_read(
        &mut self,
        raw_path: &str,
        records: Option<crate::wire::record::Records>,
        body: &[u8],
    ) -> Result<()> {
        if self.normaliser.pending() == 0 {
            self.normaliser.reserve(BATCH_RECORDS + 1024);
        }
        self.normaliser.add_read(raw_path, records, body);
        self.flush_full()
    }

    /// Appends a page normalised elsewhere (in arrival order).
    pub fn absorb(&mut self, other: Normaliser) -> Result<()> {
        if self.normaliser.pending() == 0 {
            // A batch begins: room for all of it (and the page that ends it) at once.
            self.normaliser.reserve(BATCH_RECORDS + other.pending());
        }
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
            return match self.stop() {
                Some(Ok(Err(e))) => Err(e),
                _ => Err(Error::Internal("the spill thread stopped".into())),
            };
        }
        Ok(())
    }

    /// Ends the spill thread and waits for it: a run stopped part way (a signal, an error)
    /// removes its scratch folder before it exits.
    fn stop(&mut self) -> Option<std::thread::Result<Result<Spill>>> {
        drop(self.tx.take());
        self.writer.take().map(|w| w.join())
    }

    pub fn finish(mut self) -> Result<Spilled> {
        self.flush()?;
        let mut spill = match self.stop() {
            Some(Ok(r)) => r?,
            _ => return Err(Error::Internal("the spill thread panicked".into())),
        };
        spill.seal()?;
        let (rejects, stats) = self.normaliser.take_rejects();
        Ok(Spilled {
            spill,
            rejects,
            stats,
        })
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // Its spill (and scratch folder) goes with the thread's result.
        drop(self.stop());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records spilled in several batches come back per partition, each exactly once, with their
    /// arrival order; the scratch folder goes with the spill.
    #[test]
    fn batches_spill_by_partition_and_read_back_whole() {
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
        for p in spilled.spill.partitions() {
            let df = spilled.spill.read(&p).unwrap();
            seen += df.height();
            orders.extend(df.column("_order").unwrap().i64().unwrap().iter().flatten());
        }
        assert_eq!(seen, n);
        orders.sort();
        assert_eq!(orders, (1..=n as i64).collect::<Vec<_>>());
        let none = Partition::Undated { bucket: 99 };
        assert_eq!(spilled.spill.read(&none).unwrap().height(), 0);
        drop(spilled);
        assert!(!dir.exists(), "the scratch folder is removed");
    }

    /// A partition that takes more batches than a file holds row groups continues in another
    /// file, and reads back every row once.
    #[test]
    fn a_long_pull_ends_full_spill_files_and_reads_them_all_back() {
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
        let body = r#"{"error_code":"0","data":[{"MaHoSo":"000.00.01.H57-240702-0001","MaDonVi":"X","TrangThaiHoSo":"4","NgayTiepNhan":"20240702080000","NgayCapNhat":"20240702090000"}]}"#;
        n.add_body("raw/p", body.as_bytes());
        let frame = n.take_frame().unwrap();
        let mut spill = Spill::new().unwrap();
        let batches = FILE_GROUPS + 4;
        for _ in 0..batches {
            spill.add(frame.clone()).unwrap();
        }
        spill.seal().unwrap();
        let [p] = spill.partitions()[..] else {
            panic!("one partition: {:?}", spill.partitions());
        };
        assert_eq!(
            spill.files(&p).unwrap().len(),
            2,
            "{FILE_GROUPS} row groups, then the rest"
        );
        assert_eq!(spill.read(&p).unwrap().height(), batches);
    }
}

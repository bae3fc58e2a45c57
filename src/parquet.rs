//! Parquet as readers need it (`outputs.md`), and polars off the async workers.
//!
//! Notes (polars 0.55.2): files are written by the lazy sink at the oldest compat level, so
//! strings are `large_string`, never `string_view`; one data page per column chunk, because
//! with several pages polars writes a wrong `null_count` for dictionary-encoded columns and
//! DuckDB then miscounts `count(col)`.

use std::io::Cursor;

use bytes::Bytes;
use polars::prelude::*;
use polars_io::prelude::{FileMetadataRef, ParquetReader, SerReader};

use crate::error::{Doing, Error, Result};
use crate::store::{Store, WrittenFile};

mod arrays;
mod leaves;
mod pages;
mod stats;

pub use arrays::Strings;
pub use leaves::{Leaf, LeafValues};

/// Rows per row group: large enough for scans, small enough for readers' memory.
pub const ROW_GROUP_ROWS: usize = 65_536;
/// Far above any column chunk we write, so each chunk is one page (see the module notes).
const DATA_PAGE_BYTES: usize = 1 << 30;

/// How frames are encoded as Parquet. Cheap to clone.
///
/// polars runs its own executors and may block on them, so every polars call of the async
/// stages goes through [`blocking`], on tokio's blocking pool, never on an async worker.
#[derive(Clone, Debug)]
pub struct ParquetEncoder {
    /// Rows per row group.
    pub row_group_rows: usize,
}

/// Runs polars (or other CPU-bound) work on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| Error::Internal("a worker thread panicked".into()))?
}

impl ParquetEncoder {
    pub fn new() -> Result<Self> {
        Ok(ParquetEncoder {
            row_group_rows: ROW_GROUP_ROWS,
        })
    }

    /// The Parquet bytes of `df`: zstd, statistics, row groups of [`ROW_GROUP_ROWS`], one
    /// page per column chunk, strings as `large_string` (the oldest compat level).
    pub fn encode(&self, df: DataFrame) -> Result<Vec<u8>> {
        let mut w = self.writer(df.schema())?;
        w.push(df)?;
        w.finish()
    }

    /// A writer of one file of `schema` in memory, fed a frame at a time.
    pub fn writer(&self, schema: &Schema) -> Result<RowGroupWriter<Vec<u8>>> {
        self.writer_of_groups(schema, self.row_group_rows, 0)
    }

    /// As [`ParquetEncoder::writer`], in row groups of `rows`, the file's bytes given room for
    /// `room` at once (a file of 30 MB grown by doubling held 48 MB while it copied).
    pub fn writer_of_groups(
        &self,
        schema: &Schema,
        rows: usize,
        room: usize,
    ) -> Result<RowGroupWriter<Vec<u8>>> {
        RowGroupWriter::new(Vec::with_capacity(room), schema, rows, Compression::Zstd)
    }
}

/// One Parquet file written a row group at a time, in memory: frames pushed are buffered until
/// a row group is full, so a file of any size is written holding one row group of rows.
///
/// It drives polars-parquet's writer itself: polars' eager writer declares `string_view`,
/// which common readers cannot filter, and its lazy sink needs the streaming engine.
pub struct RowGroupWriter<W: std::io::Write> {
    writer: polars_parquet::write::FileWriter<W>,
    options: polars_parquet::write::WriteOptions,
    schema: Schema,
    encodings: Vec<Vec<polars_parquet::write::Encoding>>,
    row_group_rows: usize,
    pending: Option<DataFrame>,
    rows: u64,
}

/// How the pages of a file are compressed: zstd (level 1) for what readers get, LZ4 for scratch
/// files.
#[derive(Debug, Clone, Copy)]
pub enum Compression {
    Zstd,
    Lz4,
}

impl<W: std::io::Write> RowGroupWriter<W> {
    /// A file of `schema` written to `sink`, in row groups of `row_group_rows`.
    pub fn new(
        sink: W,
        schema: &Schema,
        row_group_rows: usize,
        compression: Compression,
    ) -> Result<Self> {
        use polars_parquet::write::{get_dtype_encoding, Encoding, FileWriter};
        let arrow = schema.to_arrow(CompatLevel::oldest());
        // Scratch files are written once and read once: plain pages, without the dictionary
        // (whose cardinality estimate alone was 2 % of a replay).
        let scratch = |e: Encoding| match (compression, e) {
            (Compression::Lz4, Encoding::RleDictionary) => Encoding::Plain,
            _ => e,
        };
        let encodings = arrow
            .iter_values()
            .map(|f| {
                get_dtype_encoding(&f.dtype)
                    .into_iter()
                    .map(scratch)
                    .collect()
            })
            .collect();
        let options = write_options(compression);
        Ok(RowGroupWriter {
            writer: FileWriter::try_new(sink, arrow, options).doing("starting a Parquet file")?,
            options,
            schema: schema.clone(),
            encodings,
            row_group_rows: row_group_rows.max(1),
            pending: None,
            rows: 0,
        })
    }

    /// Appends the rows of `df`, whose columns must be the file's, in order.
    pub fn push(&mut self, df: DataFrame) -> Result<()> {
        if df.schema().as_ref() != &self.schema {
            return Err(Error::Internal(format!(
                "a frame of another schema pushed to a Parquet file: {:?} against {:?}",
                df.schema(),
                self.schema
            )));
        }
        self.rows += df.height() as u64;
        let mut all = match self.pending.take() {
            Some(mut p) => {
                p.vstack_mut_owned(df)?;
                p
            }
            None => df,
        };
        while all.height() >= self.row_group_rows {
            let rest = all.slice(self.row_group_rows as i64, usize::MAX);
            self.write_group(all.slice(0, self.row_group_rows))?;
            all = rest;
        }
        self.pending = (all.height() > 0).then_some(all);
        Ok(())
    }

    /// Writes the rows pushed and not yet written as a row group of their own, now.
    pub fn flush(&mut self) -> Result<()> {
        match self.pending.take() {
            Some(rest) => self.write_group(rest),
            None => Ok(()),
        }
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Ends the file; the sink.
    pub fn finish(mut self) -> Result<W> {
        self.flush()?;
        self.writer.end(None).doing("ending a Parquet file")?;
        Ok(self.writer.into_inner())
    }

    fn write_group(&mut self, mut df: DataFrame) -> Result<()> {
        use polars_parquet::read::ParquetError;
        use polars_parquet::write::{
            array_to_columns, Compressor, DynIter, DynStreamingIterator, FallibleStreamingIterator,
        };
        df.rechunk_mut();
        let options = self.options;
        let fields = self.writer.parquet_schema().fields().to_vec();
        for batch in df.iter_chunks(CompatLevel::oldest(), false) {
            let rows = batch.len() as u64;
            let mut columns = Vec::with_capacity(fields.len());
            for ((array, field), encoding) in batch
                .into_arrays()
                .into_iter()
                .zip(&fields)
                .zip(&self.encodings)
            {
                for pages in array_to_columns(array, field.clone(), options, encoding)? {
                    let pages = DynIter::new(
                        pages
                            .into_iter()
                            .map(|p| p.map_err(|e| ParquetError::OutOfSpec(e.to_string()))),
                    );
                    let compressed = Compressor::new(pages, options.compression, vec![])
                        .map_err(|e| PolarsError::ComputeError(e.to_string().into()));
                    columns.push(Ok(DynStreamingIterator::new(compressed)));
                }
            }
            self.writer
                .write(rows, DynIter::new(columns.into_iter()))
                .doing("encoding a Parquet row group")?;
        }
        Ok(())
    }
}

/// Statistics (not in scratch files, which no reader prunes by), and pages as large as a
/// column chunk (one page each: see the notes).
///
/// zstd at level 1, not the default 3: staging is written every night and by every replay, and
/// level 3's compression was a sixth of a replay's merge; level 1 writes it ~10 % faster for
/// ~5 % more bytes (73.4 → 77.2 MB at a million cases), and reads as fast.
fn write_options(compression: Compression) -> polars_parquet::write::WriteOptions {
    use polars_parquet::write::{
        CompressionOptions, StatisticsOptions, Version, WriteOptions, ZstdLevel,
    };
    let none = StatisticsOptions {
        min_value: false,
        max_value: false,
        distinct_count: false,
        null_count: false,
        binary_statistics_truncate_length: None,
    };
    WriteOptions {
        statistics: match compression {
            Compression::Zstd => StatisticsOptions::default(),
            Compression::Lz4 => none,
        },
        version: Version::V1,
        compression: match compression {
            Compression::Zstd => CompressionOptions::Zstd(ZstdLevel::try_new(1).ok()),
            Compression::Lz4 => CompressionOptions::Lz4Raw,
        },
        data_page_size: Some(DATA_PAGE_BYTES),
    }
}

/// A Parquet file (in memory, or a local scratch file), read a few row groups at a time.
pub struct ParquetFile {
    source: Source,
    metadata: FileMetadataRef,
    /// The arrow schema, read from the footer when first asked for.
    arrow: std::sync::OnceLock<polars_arrow::datatypes::ArrowSchema>,
}

enum Source {
    Bytes(Bytes),
    Path(std::path::PathBuf),
}

impl ParquetFile {
    /// Reads the footer of `bytes`.
    pub fn open(bytes: Bytes) -> Result<Self> {
        Self::with_footer(Source::Bytes(bytes))
    }

    /// Reads the footer of the local file `path`.
    pub fn open_path(path: &std::path::Path) -> Result<Self> {
        Self::with_footer(Source::Path(path.to_path_buf()))
    }

    fn with_footer(source: Source) -> Result<Self> {
        let metadata = match &source {
            Source::Bytes(b) => ParquetReader::new(Cursor::new(b.clone()))
                .get_metadata()
                .cloned(),
            Source::Path(p) => {
                let f = std::fs::File::open(p).doing_with(|| format!("opening {}", p.display()))?;
                ParquetReader::new(f).get_metadata().cloned()
            }
        }
        .doing("reading a Parquet footer")?;
        Ok(ParquetFile {
            source,
            metadata,
            arrow: Default::default(),
        })
    }

    /// Rows in the file.
    pub fn rows(&self) -> usize {
        self.metadata.num_rows
    }

    /// The column names, from the footer.
    pub fn columns(&self) -> Vec<String> {
        self.metadata
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect()
    }

    /// Rows per row group, in file order.
    pub fn row_group_rows(&self) -> Vec<usize> {
        self.metadata
            .row_groups
            .iter()
            .map(|rg| rg.num_rows())
            .collect()
    }

    /// Row ranges `(offset, len)` of whole row groups, each up to `rows` rows (a row group
    /// larger than that is a range of its own).
    pub fn ranges(&self, rows: usize) -> Vec<(usize, usize)> {
        let mut out: Vec<(usize, usize)> = vec![];
        let mut at = 0;
        for rg in &self.metadata.row_groups {
            let n = rg.num_rows();
            match out.last_mut() {
                Some((_, len)) if *len + n <= rows => *len += n,
                _ => out.push((at, n)),
            }
            at += n;
        }
        out
    }

    /// Rows `offset .. offset + len` of `columns` (every column when `None`).
    pub fn read(&self, columns: Option<&[&str]>, slice: (usize, usize)) -> Result<DataFrame> {
        self.check_pages(columns, slice)?;
        let columns = columns.map(|c| c.iter().map(|c| c.to_string()).collect());
        match &self.source {
            Source::Bytes(b) => contained("reading Parquet", || {
                self.reader(ParquetReader::new(Cursor::new(b.clone())), columns, slice)
            }),
            Source::Path(p) => {
                let f = std::fs::File::open(p).doing_with(|| format!("opening {}", p.display()))?;
                contained("reading Parquet", || {
                    self.reader(ParquetReader::new(f), columns, slice)
                })
            }
        }
    }

    fn reader<R: polars_io::mmap::MmapBytesReader>(
        &self,
        mut r: ParquetReader<R>,
        columns: Option<Vec<String>>,
        slice: (usize, usize),
    ) -> PolarsResult<DataFrame> {
        r.set_metadata(self.metadata.clone());
        r.with_columns(columns).with_slice(Some(slice)).finish()
    }
}

/// Runs polars' Parquet decoding `f`: some damaged pages make its decoders panic (an
/// `unwrap` on a page's encoding, a bit width out of range), which is then an error like any
/// other damage, `what` being done.
pub(crate) fn contained<T>(what: &str, f: impl FnOnce() -> PolarsResult<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.doing(what),
        Err(_) => Err(Error::Internal(format!(
            "{what}: the file is damaged (its decoder failed)"
        ))),
    }
}

/// Reads Parquet bytes into a frame.
pub fn decode(bytes: Bytes) -> Result<DataFrame> {
    let f = ParquetFile::open(bytes.clone())?;
    f.check_pages(None, (0, f.rows()))?;
    contained("reading Parquet", || {
        ParquetReader::new(Cursor::new(bytes)).finish()
    })
}

/// The column names of Parquet bytes, from the footer alone.
pub fn columns_of(bytes: &Bytes) -> Result<Vec<String>> {
    let schema = ParquetReader::new(Cursor::new(bytes.clone()))
        .schema()
        .doing("reading a Parquet footer")?;
    Ok(schema.iter_names().map(|n| n.to_string()).collect())
}

/// Reads only `columns` of Parquet bytes into a frame.
pub fn decode_columns(bytes: Bytes, columns: &[&str]) -> Result<DataFrame> {
    let f = ParquetFile::open(bytes.clone())?;
    f.check_pages(Some(columns), (0, f.rows()))?;
    contained("reading Parquet", || {
        ParquetReader::new(Cursor::new(bytes))
            .with_columns(Some(columns.iter().map(|c| c.to_string()).collect()))
            .finish()
    })
}

/// Writes `df` as Parquet at `path`.
pub async fn write_table(
    store: &Store,
    enc: &ParquetEncoder,
    path: &str,
    df: DataFrame,
) -> Result<WrittenFile> {
    let rows = df.height() as u64;
    let e = enc.clone();
    let bytes = blocking(move || e.encode(df)).await?;
    let len = bytes.len() as u64;
    store.publish(path, Bytes::from(bytes)).await?;
    Ok(WrittenFile {
        path: path.to_string(),
        bytes: len,
        rows: Some(rows),
    })
}

/// A `Timestamp(microsecond, UTC)` column from epoch microseconds. (polars 0.55 drops the time
/// zone when casting a null-free `Int64` column to a zoned `Datetime`, so build it directly.)
pub fn utc_micros(name: &str, values: Vec<Option<i64>>) -> Column {
    Int64Chunked::from_iter_options(name.into(), values.into_iter())
        .into_datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
        .into_column()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encoded and decoded, a frame comes back equal; instants keep their zone.
    #[test]
    fn frames_round_trip_through_parquet() {
        let mut df = df!("a" => [Some("x"), None, Some("z")], "n" => [1i64, 2, 3]).unwrap();
        df.with_column(utc_micros("t", vec![Some(0), None, Some(1_000_000)]))
            .unwrap();
        let enc = ParquetEncoder::new().unwrap();
        let bytes = enc.encode(df.clone()).unwrap();
        let back = decode(Bytes::from(bytes.clone())).unwrap();
        assert!(back.equals_missing(&df), "{back}");
        assert_eq!(
            back.column("t").unwrap().dtype(),
            &DataType::Datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
        );
        let one = decode_columns(Bytes::from(bytes), &["n"]).unwrap();
        assert_eq!(one.get_column_names(), ["n"]);
        assert!(decode(Bytes::from_static(b"not parquet")).is_err());
    }
}

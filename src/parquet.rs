//! Parquet as readers need it (`outputs.md`), and polars off the async workers.
//!
//! Notes (polars 0.55.2): files are written by the lazy sink at the oldest compat level, so
//! strings are `large_string`, never `string_view`; one data page per column chunk, because
//! with several pages polars writes a wrong `null_count` for dictionary-encoded columns and
//! DuckDB then miscounts `count(col)`.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use polars::prelude::*;

use crate::error::{Doing, Error, Result};
use crate::store::{Store, WrittenFile};

/// Rows per row group: large enough for scans, small enough for readers' memory.
pub const ROW_GROUP_ROWS: usize = 262_144;
/// Far above any column chunk we write, so each chunk is one page (see the module notes).
const DATA_PAGE_BYTES: usize = 1 << 30;

/// Encodes frames as Parquet through a scratch folder outside the output root. Cheap to clone.
///
/// polars runs its own executors and may block on them, so every polars call of the async
/// stages goes through [`blocking`], on tokio's blocking pool, never on an async worker.
#[derive(Clone)]
pub struct ParquetEncoder(Arc<EncoderInner>);

struct EncoderInner {
    dir: tempfile::TempDir,
    seq: AtomicU64,
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
        let dir = tempfile::Builder::new().prefix("motcua-").tempdir().doing(
            "creating a scratch folder in the system temp dir (set TMPDIR to a writable folder)",
        )?;
        Ok(ParquetEncoder(Arc::new(EncoderInner {
            dir,
            seq: AtomicU64::new(0),
        })))
    }

    /// The Parquet bytes of `df`.
    pub fn encode(&self, df: DataFrame) -> Result<Vec<u8>> {
        let n = self.0.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.0.dir.path().join(format!("{n:06}.parquet"));
        let opts = ParquetWriteOptions {
            compression: ParquetCompression::Zstd(None),
            statistics: StatisticsOptions::default(),
            row_group_size: Some(ROW_GROUP_ROWS),
            data_page_size: Some(DATA_PAGE_BYTES),
            key_value_metadata: None,
            arrow_schema: None,
            compat_level: None,
        };
        let Some(target) = path.to_str() else {
            return Err(Error::Usage(format!(
                "the temp dir {} is not a UTF-8 path: set TMPDIR to one that is",
                path.display()
            )));
        };
        let target = SinkTarget::Path(PlRefPath::from(target));
        df.lazy()
            .sink(
                SinkDestination::File { target },
                FileWriteFormat::Parquet(Arc::new(opts)),
                UnifiedSinkArgs::default(),
            )?
            .collect()
            .doing("encoding Parquet")?;
        let bytes = std::fs::read(&path).doing("reading back encoded Parquet")?;
        std::fs::remove_file(&path).doing("removing encoded Parquet")?;
        Ok(bytes)
    }
}

/// Reads Parquet bytes into a frame.
pub fn decode(bytes: Bytes) -> Result<DataFrame> {
    ParquetReader::new(Cursor::new(bytes))
        .finish()
        .doing("reading Parquet")
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
    ParquetReader::new(Cursor::new(bytes))
        .with_columns(Some(columns.iter().map(|c| c.to_string()).collect()))
        .finish()
        .doing("reading Parquet")
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

//! Parquet as readers need it (`outputs.md`), and polars off the async workers.
//!
//! Notes (polars 0.55.2): files are written by the lazy sink at the oldest compat level, so
//! strings are `large_string`, never `string_view`; one data page per column chunk, because
//! with several pages polars writes a wrong `null_count` for dictionary-encoded columns and
//! DuckDB then miscounts `count(col)`.

use std::io::Cursor;

use bytes::Bytes;
use polars::prelude::*;
use polars_io::prelude::{ParquetReader, SerReader};

use crate::error::{Doing, Error, Result};
use crate::store::{Store, WrittenFile};

/// Rows per row group: large enough for scans, small enough for readers' memory.
pub const ROW_GROUP_ROWS: usize = 262_144;
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
        encode(df, self.row_group_rows).doing("encoding Parquet")
    }
}

/// polars-parquet's writer, driven a row group at a time (polars' own eager writer declares
/// `string_view`, which common readers cannot filter; its lazy sink needs the streaming engine).
fn encode(mut df: DataFrame, row_group_rows: usize) -> PolarsResult<Vec<u8>> {
    use polars_parquet::write::{
        array_to_columns, get_dtype_encoding, CompressionOptions, Compressor, DynIter,
        DynStreamingIterator, FallibleStreamingIterator, FileWriter, StatisticsOptions, Version,
        WriteOptions,
    };
    df.rechunk_mut();
    let schema = df.schema().to_arrow(CompatLevel::oldest());
    let options = WriteOptions {
        statistics: StatisticsOptions::default(),
        version: Version::V1,
        compression: CompressionOptions::Zstd(None),
        data_page_size: Some(DATA_PAGE_BYTES),
    };
    let encodings: Vec<_> = schema
        .iter_values()
        .map(|f| get_dtype_encoding(&f.dtype))
        .collect();
    let mut writer = FileWriter::try_new(Vec::new(), schema, options)?;
    let fields = writer.parquet_schema().fields().to_vec();
    let mut offset = 0;
    while offset < df.height() {
        let mut part = df.slice(offset as i64, row_group_rows.max(1));
        offset += part.height();
        part.rechunk_mut();
        for batch in part.iter_chunks(CompatLevel::oldest(), false) {
            let rows = batch.len() as u64;
            let mut columns = Vec::with_capacity(fields.len());
            for ((array, field), encoding) in
                batch.into_arrays().into_iter().zip(&fields).zip(&encodings)
            {
                for pages in array_to_columns(array, field.clone(), options, encoding)? {
                    let pages = DynIter::new(pages.into_iter().map(|p| {
                        p.map_err(|e| polars_parquet::read::ParquetError::OutOfSpec(e.to_string()))
                    }));
                    let compressed = Compressor::new(pages, options.compression, vec![])
                        .map_err(|e| PolarsError::ComputeError(e.to_string().into()));
                    columns.push(Ok(DynStreamingIterator::new(compressed)));
                }
            }
            writer.write(rows, DynIter::new(columns.into_iter()))?;
        }
    }
    writer.end(None)?;
    Ok(writer.into_inner())
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

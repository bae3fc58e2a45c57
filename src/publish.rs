//! Stage 5: publish. Parquet for readers (DuckDB, Spark, Trino, pyarrow), written the way
//! `outputs.md` demands, each partition replaced by one write through [`Store::publish`];
//! and the run record `_runs/<run_id>.json`, written last by every run.
//!
//! Parquet notes (polars 0.55.2): files are written by the lazy sink at the oldest compat level,
//! so strings are `large_string`, never `string_view`; one data page per column chunk, because
//! with several pages polars writes a wrong `null_count` for dictionary-encoded columns and
//! DuckDB then miscounts `count(col)`.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use polars::prelude::*;

use crate::kpi::KpiTables;
use crate::normalise::Reject;
use crate::store::Store;

/// Rows per row group: large enough for scans, small enough for readers' memory.
pub const ROW_GROUP_ROWS: usize = 262_144;
/// Far above any column chunk we write, so each chunk is one page (see the module notes).
const DATA_PAGE_BYTES: usize = 1 << 30;

pub use crate::store::WrittenFile;

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
        .context("a worker thread panicked")?
}

impl ParquetEncoder {
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("motcua-")
            .tempdir()
            .context("creating a scratch folder in the system temp dir")?;
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
        let target = SinkTarget::Path(PlRefPath::from(
            path.to_str().context("temp path is not UTF-8")?,
        ));
        df.lazy()
            .sink(
                SinkDestination::File { target },
                FileWriteFormat::Parquet(Arc::new(opts)),
                UnifiedSinkArgs::default(),
            )?
            .collect()
            .map_err(anyhow::Error::from)
            .context("encoding Parquet")?;
        let bytes = std::fs::read(&path)?;
        std::fs::remove_file(&path)?;
        Ok(bytes)
    }
}

/// Reads Parquet bytes into a frame.
pub fn decode(bytes: Bytes) -> Result<DataFrame> {
    Ok(ParquetReader::new(Cursor::new(bytes)).finish()?)
}

/// Reads only `columns` of Parquet bytes into a frame.
pub fn decode_columns(bytes: Bytes, columns: &[&str]) -> Result<DataFrame> {
    Ok(ParquetReader::new(Cursor::new(bytes))
        .with_columns(Some(columns.iter().map(|c| c.to_string()).collect()))
        .finish()?)
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

/// The three KPI partitions of one period.
pub async fn kpi_tables(
    store: &Store,
    enc: &ParquetEncoder,
    t: &KpiTables,
) -> Result<Vec<WrittenFile>> {
    let id = t.period.id.to_string();
    let mut out = vec![];
    for (table, df) in [
        ("cases_by_agency", &t.by_agency),
        ("cases_by_level", &t.by_level),
        ("catalog_by_level", &t.catalog),
    ] {
        let path = format!("kpi/{table}/period={id}/part-0.parquet");
        out.push(write_table(store, enc, &path, df.clone()).await?);
    }
    out.push(report(store, t).await?);
    Ok(out)
}

/// The period's report for people, `reports/period=<id>/index.html`.
pub async fn report(store: &Store, t: &KpiTables) -> Result<WrittenFile> {
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let tables = t.clone();
    let html = blocking(move || crate::report::html(&tables, &tables.run_id, &generated)).await?;
    let path = format!("reports/period={}/index.html", t.period.id);
    let len = html.len() as u64;
    store.publish(&path, Bytes::from(html)).await?;
    Ok(WrittenFile {
        path,
        bytes: len,
        rows: None,
    })
}

/// The rejects of a run as a frame (no personal data: codes, reasons, dates and raw locations).
pub fn rejects_frame(rejects: &[Reject], run_id: &str) -> Result<DataFrame> {
    let df = DataFrame::new(
        rejects.len(),
        vec![
            Column::new(
                "record_key".into(),
                rejects
                    .iter()
                    .map(|r| r.record_key.clone())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "reason".into(),
                rejects.iter().map(|r| r.reason).collect::<Vec<_>>(),
            ),
            Column::new(
                "detail".into(),
                rejects.iter().map(|r| r.detail.clone()).collect::<Vec<_>>(),
            ),
            crate::normalise::utc_micros(
                "updated_at",
                rejects.iter().map(|r| r.updated_at).collect(),
            ),
            Column::new(
                "raw_path".into(),
                rejects
                    .iter()
                    .map(|r| r.raw_path.clone())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "raw_index".into(),
                rejects.iter().map(|r| r.raw_index).collect::<Vec<_>>(),
            ),
            Column::new("run_id".into(), vec![run_id; rejects.len()]),
        ],
    )?;
    Ok(df)
}

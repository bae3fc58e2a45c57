//! Reading the staging table for the KPIs: every bucket once, only [`super::INPUT_COLUMNS`],
//! a couple at a time, small buckets counted together, and the counts summed.

use futures::StreamExt;
use polars::prelude::DataFrame;
use tokio::task::JoinHandle;

use std::sync::Arc;

use super::attribution::Agencies;
use super::partial::{partial, Accumulator, Partial, Totals};
use super::INPUT_COLUMNS;
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::parquet::{blocking, columns_of, decode_columns};
use crate::stage::schema::transfers_column;
use crate::store::Store;

/// Buckets read and counted at once (at most; `concurrency` may ask for fewer): one decodes
/// while another is counted.
const AT_ONCE: usize = 2;

/// Cases counted in one polars plan, at most (plus one bucket): small buckets are batched.
const BATCH_ROWS: usize = 300_000;

/// One staging bucket, with only the columns the KPIs read.
async fn read_bucket(store: &Store, path: String) -> Result<DataFrame> {
    let b = store.get(&path).await?.ok_or_else(|| {
        Error::Internal(format!(
            "{path} vanished while reading staging (another writer?)"
        ))
    })?;
    blocking(move || {
        let unreadable = |e: Error| {
            e.doing(format!(
                "{path} is not readable Parquet: run `motcua replay --all` to rebuild staging from raw"
            ))
        };
        let present = columns_of(&b).map_err(unreadable)?;
        let wanted: Vec<&str> = INPUT_COLUMNS.iter().copied().filter(|c| present.iter().any(|p| p == c)).collect();
        let mut df = decode_columns(b, &wanted).map_err(unreadable)?;
        if !present.iter().any(|p| p == "transfers") {
            // Staged by a motcua that kept no transfers: none to follow.
            df.with_column(transfers_column(&[], &vec![0; df.height()])?)?;
        }
        Ok(df)
    })
    .await
}

/// Every staging bucket counted for every one of `periods` and summed, `concurrency` buckets
/// at a time; `bar` advances a bucket at a time.
pub async fn count(
    store: &Store,
    periods: &[Period],
    agencies: Arc<Agencies>,
    concurrency: usize,
    bar: &indicatif::ProgressBar,
) -> Result<Totals> {
    let mut paths = vec![];
    for (path, _) in store.list("cases").await? {
        if path.ends_with("/part-0.parquet") {
            paths.push(path);
        }
    }
    bar.inc_length(paths.len() as u64);
    let mut decoded = futures::stream::iter(paths)
        .map(|path| read_bucket(store, path))
        .buffer_unordered(concurrency.clamp(1, AT_ONCE));
    // Small buckets are counted together (each polars plan has a fixed cost), up to
    // BATCH_ROWS cases at a time; a count runs while the next buckets are read.
    let mut acc = Accumulator::new(periods);
    let mut batch: Vec<DataFrame> = vec![];
    let mut rows = 0usize;
    let mut counting: Option<JoinHandle<Result<Partial>>> = None;
    loop {
        let next = decoded.next().await.transpose()?;
        let end = next.is_none();
        if let Some(df) = next {
            rows += df.height();
            batch.push(df);
            bar.inc(1);
        }
        if rows >= BATCH_ROWS || (end && !batch.is_empty()) {
            rows = 0;
            if let Some(c) = counting.take() {
                acc.add(joined(c).await?);
            }
            let (frames, periods) = (std::mem::take(&mut batch), periods.to_vec());
            let agencies = agencies.clone();
            counting = Some(tokio::task::spawn_blocking(move || {
                partial(&stacked(frames)?, &periods, &agencies)
            }));
        }
        if end {
            break;
        }
    }
    if let Some(c) = counting.take() {
        acc.add(joined(c).await?);
    }
    blocking(move || acc.total()).await
}

async fn joined(c: JoinHandle<Result<Partial>>) -> Result<Partial> {
    c.await
        .map_err(|_| Error::Internal("a counting thread panicked".into()))?
}

/// Frames of one schema, one under another.
fn stacked(frames: Vec<DataFrame>) -> Result<DataFrame> {
    let mut frames = frames.into_iter();
    let Some(mut df) = frames.next() else {
        return Err(Error::Internal("a counting batch holds no bucket".into()));
    };
    for f in frames {
        df.vstack_mut_owned(f)?;
    }
    Ok(df)
}

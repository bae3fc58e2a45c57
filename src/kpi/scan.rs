//! Reading the staging table for the KPIs: every partition once, only
//! [`super::INPUT_COLUMNS`], a few row groups at a time (so memory holds a slice, never a whole
//! partition), slices counted together up to [`BATCH_ROWS`] cases, and the counts summed. One
//! task reads and decodes while the previous batch is counted.

use polars::prelude::DataFrame;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use std::sync::Arc;

use super::attribution::Agencies;
use super::partial::{partial, Accumulator, Partial, Totals};
use super::INPUT_COLUMNS;
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::parquet::{blocking, ParquetFile, ROW_GROUP_ROWS};
use crate::stage::schema::transfers_column;
use crate::stage::Partition;
use crate::store::Store;

/// Cases counted in one polars plan, at most (plus one slice): each plan has a fixed cost, and
/// memory holds two batches (one counted, one gathered).
const BATCH_ROWS: usize = 196_608;

/// The staging partitions' files, in path order.
pub async fn partitions(store: &Store) -> Result<Vec<String>> {
    Ok(store
        .list("cases")
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| Partition::from_path(p).is_some())
        .collect())
}

/// Sends every slice of every partition, with only the columns the KPIs read, down `tx`.
async fn read_all(
    store: Store,
    paths: Vec<String>,
    tx: mpsc::Sender<Result<DataFrame>>,
    bar: indicatif::ProgressBar,
) {
    for path in paths {
        let b = match store.get(&path).await {
            Ok(Some(b)) => b,
            Ok(None) => {
                let e = Error::Internal(format!(
                    "{path} vanished while reading staging (another writer?)"
                ));
                let _ = tx.send(Err(e)).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let (p, t) = (path.clone(), tx.clone());
        let sent = blocking(move || {
            let unreadable = |e: Error| {
                e.doing(format!(
                    "{p} is not readable Parquet: run `motcua replay --all` to rebuild staging from raw"
                ))
            };
            let f = ParquetFile::open(b).map_err(unreadable)?;
            let present = f.columns();
            let wanted: Vec<&str> = INPUT_COLUMNS.iter().copied().filter(|c| present.iter().any(|p| p == c)).collect();
            for range in f.ranges(ROW_GROUP_ROWS) {
                let mut df = f.read(Some(&wanted), range).map_err(unreadable)?;
                if !present.iter().any(|p| p == "transfers") {
                    // Staged by a motcua that kept no transfers: none to follow.
                    df.with_column(transfers_column(&[], &vec![0; df.height()])?)?;
                }
                if t.blocking_send(Ok(df)).is_err() {
                    break;
                }
            }
            Ok(())
        })
        .await;
        if let Err(e) = sent {
            let _ = tx.send(Err(e)).await;
            return;
        }
        bar.inc(1);
    }
}

/// Every staging partition counted for every one of `periods` and summed; `bar` advances a
/// partition at a time.
pub async fn count(
    store: &Store,
    periods: &[Period],
    agencies: Arc<Agencies>,
    bar: &indicatif::ProgressBar,
) -> Result<Totals> {
    let paths = partitions(store).await?;
    bar.inc_length(paths.len() as u64);
    let (tx, mut rx) = mpsc::channel(2);
    let reader = tokio::spawn(read_all(store.clone(), paths, tx, bar.clone()));
    let mut acc = Accumulator::new(periods);
    let mut batch: Vec<DataFrame> = vec![];
    let mut rows = 0usize;
    let mut counting: Option<JoinHandle<Result<Partial>>> = None;
    loop {
        let next = rx.recv().await.transpose()?;
        let end = next.is_none();
        if let Some(df) = next {
            rows += df.height();
            batch.push(df);
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
    reader
        .await
        .map_err(|_| Error::Internal("the staging reader panicked".into()))?;
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

//! Reading the staging table for the KPIs: each partition asked for, once, only
//! [`super::INPUT_COLUMNS`], a row group at a time (so memory holds a slice, never a whole
//! partition), slices counted on two threads as the next is decoded, and the counts of a
//! partition summed.

use polars::prelude::DataFrame;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use std::collections::VecDeque;
use std::sync::Arc;

use super::attribution::Agencies;
use super::partial::{partial, Partial};
use super::INPUT_COLUMNS;
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::parquet::{blocking, ParquetFile, ROW_GROUP_ROWS};
use crate::stage::schema::transfers_column;
use crate::stage::Partition;
use crate::store::Store;

/// Rows decoded and counted at once, at most (whole row groups; a larger one alone).
const SLICE_ROWS: usize = ROW_GROUP_ROWS;

/// The staging partitions' files with their versions, in path order.
pub async fn partitions(store: &Store) -> Result<Vec<(String, String)>> {
    Ok(store
        .list_versions("cases")
        .await?
        .into_iter()
        .filter(|(p, _)| Partition::from_path(p).is_some())
        .collect())
}

/// One slice read, and whether it is its partition's last.
struct Slice {
    path: String,
    df: DataFrame,
    last: bool,
}

/// Sends every slice of every partition of `paths`, with only the columns the KPIs read,
/// down `tx`.
async fn read_all(store: Store, paths: Vec<String>, tx: mpsc::Sender<Result<Slice>>) {
    for path in paths {
        let b = match store.get_mapped(&path).await {
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
            let ranges = f.ranges(SLICE_ROWS);
            let n = ranges.len();
            for (k, range) in ranges.into_iter().enumerate() {
                let mut df = f.read(Some(&wanted), range).map_err(unreadable)?;
                if !present.iter().any(|p| p == "transfers") {
                    // Staged by a motcua that kept no transfers: none to follow.
                    df.with_column(transfers_column(&[], &vec![0; df.height()])?)?;
                }
                if t.blocking_send(Ok(Slice { path: p.clone(), df, last: k + 1 == n })).is_err() {
                    break;
                }
            }
            if n == 0 {
                let df = DataFrame::empty();
                let _ = t.blocking_send(Ok(Slice { path: p.clone(), df, last: true }));
            }
            Ok(())
        })
        .await;
        if let Err(e) = sent {
            let _ = tx.send(Err(e)).await;
            return;
        }
    }
}

/// Slices counted at once, each on a blocking thread of its own, while the next is decoded.
const COUNTING: usize = 2;

/// The partial counts, for every one of `periods`, of each partition of `paths`, handed to
/// `done` as each partition completes: one task reads and decodes while up to [`COUNTING`]
/// slices before are counted, their counts taken in the order they were read. `bar` advances
/// a partition at a time.
pub async fn count(
    store: &Store,
    paths: Vec<String>,
    periods: &[Period],
    agencies: Arc<Agencies>,
    bar: &indicatif::ProgressBar,
    mut done: impl FnMut(String, Partial) -> Result<()>,
) -> Result<()> {
    let (tx, mut rx) = mpsc::channel(1);
    let reader = tokio::spawn(read_all(store.clone(), paths, tx));
    let n = periods.len();
    let mut current = Partial::new(n);
    let mut counting: VecDeque<JoinHandle<Result<Counted>>> = VecDeque::new();
    while let Some(slice) = rx.recv().await.transpose()? {
        if counting.len() == COUNTING {
            if let Some(c) = counting.pop_front() {
                absorb(joined(c).await?, &mut current, &mut done, bar)?;
            }
        }
        let (periods, agencies) = (periods.to_vec(), agencies.clone());
        counting.push_back(tokio::task::spawn_blocking(move || {
            let p = match slice.df.height() {
                0 => Partial::new(periods.len()),
                _ => partial(&slice.df, &periods, &agencies)?,
            };
            Ok((p, slice.last.then_some(slice.path)))
        }));
    }
    while let Some(c) = counting.pop_front() {
        absorb(joined(c).await?, &mut current, &mut done, bar)?;
    }
    reader
        .await
        .map_err(|_| Error::Internal("the staging reader panicked".into()))?;
    Ok(())
}

/// A slice's counts, and its partition's path when it was the partition's last.
type Counted = (Partial, Option<String>);

/// Adds a slice's counts to its partition's; a partition's last slice completes it.
fn absorb(
    (p, last): (Partial, Option<String>),
    current: &mut Partial,
    done: &mut impl FnMut(String, Partial) -> Result<()>,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    current.add(&p);
    if let Some(path) = last {
        let n = p.periods();
        done(path, std::mem::replace(current, Partial::new(n)))?;
        bar.inc(1);
    }
    Ok(())
}

async fn joined<T>(c: JoinHandle<Result<T>>) -> Result<T> {
    c.await
        .map_err(|_| Error::Internal("a counting thread panicked".into()))?
}

//! Reading the staging table for the KPIs: each partition asked for, once, only
//! [`super::INPUT_COLUMNS`], a row group at a time (so memory holds a slice, never a whole
//! partition), slices counted on three threads as the next are decoded, and the counts of a
//! partition summed.
//!
//! A row group whose statistics show every case dated only after the periods' last day
//! ([`rules::COUNTING_DATES`] each null or later) counts in no period: of it only who holds
//! each case is read (agency, field, their names, hand-overs), the rest counted as unknown,
//! which [`rules::COUNTING_DATES`] shows is the same count. A backfill of a past quarter so
//! decodes a fraction of the province's later history. Hand-overs (a nested column, slow to
//! decode) are read only of row groups whose statistics show some.

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use std::collections::VecDeque;
use std::sync::Arc;

use super::attribution::Agencies;
use super::columns::Decoded;
use super::partial::Partial;
use crate::domain::period::Period;
use crate::domain::rules::{self, Bounds};
use crate::error::{Error, Result};
use crate::parquet::{blocking, ParquetFile};
use crate::stage::Partition;
use crate::store::Store;

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
    cases: Option<Decoded>,
    last: bool,
}

/// What is read of a row group: all the columns counted or only who holds each case, and the
/// hand-overs or not (the row group has none).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Kind {
    counted: bool,
    handed_over: bool,
}

/// What to read of row group `rg` of `f`, for periods ending on `last` at the latest: a row
/// group with every case dated after it counts in no period ([`rules::COUNTING_DATES`]); one
/// whose hand-overs have no giving agency or no date at all has none the count follows
/// (`attribution`: a hand-over counts with both).
fn kind(f: &ParquetFile, rg: usize, last: Option<i32>) -> Kind {
    let after = |day| {
        rules::COUNTING_DATES
            .iter()
            .all(|c| f.all_null_or_after(rg, c, day))
    };
    Kind {
        counted: !last.is_some_and(after),
        handed_over: !(f.leaf_without_values(rg, "transfers", "from_agency")
            || f.leaf_without_values(rg, "transfers", "transferred_on")),
    }
}

/// Sends every slice of every partition of `paths`, with only the columns the KPIs read,
/// down `tx`; of a row group dated only after `last` (the periods' last day), only
/// [`HOLDER_COLUMNS`].
async fn read_all(
    store: Store,
    paths: Vec<String>,
    last: Option<i32>,
    tx: mpsc::Sender<Result<Slice>>,
) {
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
            let n = f.row_group_rows().len();
            for rg in 0..n {
                let k = kind(&f, rg, last);
                let cases = Decoded::of_group(&f, rg, k.counted, k.handed_over).map_err(unreadable)?;
                let slice = Slice { path: p.clone(), cases: Some(cases), last: rg + 1 == n };
                if t.blocking_send(Ok(slice)).is_err() {
                    break;
                }
            }
            if n == 0 {
                let _ = t.blocking_send(Ok(Slice { path: p.clone(), cases: None, last: true }));
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

/// Slices counted at once, each on a blocking thread of its own, while the next are decoded;
/// and slices decoded ahead. With slices of one row group, three and three took 5 % less time
/// than two and one at ten million cases (four and four no less), for 10–15 MiB.
const COUNTING: usize = 3;
const READ_AHEAD: usize = 3;

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
    let (tx, mut rx) = mpsc::channel(READ_AHEAD);
    let last = periods.iter().map(|p| Bounds::of(p).l).max();
    let reader = tokio::spawn(read_all(store.clone(), paths, last, tx));
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
            let mut p = Partial::new(periods.len());
            if let Some(cases) = &slice.cases {
                p.count_decoded(cases, &periods, &agencies)?;
            }
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
    let n = p.periods();
    if current.is_empty() {
        // A partition's first slice is its counts so far: taken, not added.
        *current = p;
    } else {
        current.add(&p);
    }
    if let Some(path) = last {
        done(path, std::mem::replace(current, Partial::new(n)))?;
        bar.inc(1);
    }
    Ok(())
}

async fn joined<T>(c: JoinHandle<Result<T>>) -> Result<T> {
    c.await
        .map_err(|_| Error::Internal("a counting thread panicked".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::period::{Convention, PeriodId};
    use crate::normalise::{Normaliser, PiiKey};
    use crate::parquet::ParquetEncoder;

    /// A partition whose later row groups hold only cases dated after the periods: those row
    /// groups are read with who holds each case alone, and the counts, names and cases held
    /// are exactly those of counting every column of every case.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn row_groups_dated_after_the_periods_count_as_when_read_whole() {
        let d = crate::demo::generator::generate(7, 0.03);
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
        n.add_records("raw/x", &d.cases);
        let mut cases = n
            .finish()
            .unwrap()
            .cases
            .sort(["submitted_date"], Default::default())
            .unwrap();
        // Hand-overs on every 700th case (some row groups have some, most none), one with no
        // receiving agency, dated in and after the periods.
        let mut counts = vec![0u32; cases.height()];
        let mut handed = vec![];
        for (k, c) in counts.iter_mut().enumerate().step_by(700) {
            *c = 1;
            let to = (k % 1400 != 0).then(|| "000.00.01.H57".to_string());
            let day = if k % 2100 == 0 {
                "2024-08-01"
            } else {
                "2025-03-01"
            };
            let d: chrono::NaiveDate = day.parse().unwrap();
            let at = d.and_hms_opt(3, 0, 0).unwrap().and_utc().timestamp_micros();
            handed.push(crate::stage::schema::StagedTransfer {
                from: "000.00.99.H57".into(),
                to,
                at,
            });
        }
        cases
            .with_column(crate::stage::schema::transfers_column(&handed, &counts).unwrap())
            .unwrap();
        let periods: Vec<Period> = ["2024-Q2", "2024-Q3"]
            .map(|p| p.parse::<PeriodId>().unwrap().resolve(Convention::Decree09))
            .to_vec();
        let enc = ParquetEncoder {
            row_group_rows: 300,
        };
        let bytes = enc.encode(cases.clone()).unwrap();
        let file = ParquetFile::open(bytes.clone().into()).unwrap();
        let last = periods.iter().map(|p| Bounds::of(p).l).max();
        let groups = file.row_group_rows().len();
        let kinds: Vec<Kind> = (0..groups).map(|rg| kind(&file, rg, last)).collect();
        let after = kinds.iter().filter(|k| !k.counted).count();
        let with = kinds.iter().filter(|k| k.handed_over).count();
        assert!(
            after > 0 && after < groups,
            "{after} of {groups} row groups after"
        );
        assert!(
            with > 0 && with < groups,
            "{with} of {groups} row groups handed over"
        );
        assert!(
            kinds.iter().any(|k| !k.counted && k.handed_over),
            "no row group after the periods with hand-overs"
        );

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let path = "cases/case_month=2024-07/bucket=0/part-0.parquet".to_string();
        store.publish(&path, bytes.into()).await.unwrap();
        let agencies = Arc::new(Agencies::default());
        let mut got = None;
        let bar = indicatif::ProgressBar::hidden();
        count(
            &store,
            vec![path.clone()],
            &periods,
            agencies.clone(),
            &bar,
            |p, c| {
                assert_eq!(p, path);
                got = Some(c);
                Ok(())
            },
        )
        .await
        .unwrap();
        let frames = |p: Partial| format!("{:?}", p.total(&periods).unwrap().frames());
        let whole = crate::kpi::partial::partial(&cases, &periods, &agencies).unwrap();
        assert_eq!(frames(got.unwrap()), frames(whole));
    }
}

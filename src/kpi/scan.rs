//! Reading the staging table for the KPIs: each partition asked for, once, counted on one of
//! two threads kept for the count, into a partial used before ([`Spare`]), a row group at a
//! time — decoded straight to arrow (`parquet::arrays`: strings by their dictionary keys) and
//! counted while in cache, so memory holds a row group per thread, never a whole partition —
//! and handed on in path order.
//!
//! A row group whose statistics show every case dated only after the periods' last day
//! ([`rules::COUNTING_DATES`] each null or later) counts in no period: of it only who holds
//! each case is read (agency, field, their names, hand-overs), the rest counted as unknown,
//! which [`rules::COUNTING_DATES`] shows is the same count. A backfill of a past quarter so
//! decodes a fraction of the province's later history. Hand-overs (a nested column, read
//! from its leaves: `parquet/leaves.rs`) are read only of row groups whose statistics show some.

use tokio::task::JoinSet;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::attribution::Agencies;
use super::columns::Decoded;
use super::partial::Partial;
use crate::domain::period::Period;
use crate::domain::rules::{self, Bounds};
use crate::error::{Error, Result};
use crate::parquet::ParquetFile;
use crate::pipeline::workers::Workers;
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

/// The counts of one staging partition, the file `bytes` at `path`: a row group at a time,
/// each decoded and counted in turn on this thread (so memory holds one row group, and the
/// decoded columns are counted while in cache). Of a row group dated only after `last` (the
/// periods' last day), only who holds each case is decoded.
fn count_partition(
    path: &str,
    bytes: bytes::Bytes,
    periods: &[Period],
    agencies: &Agencies,
    last: Option<i32>,
    spare: &Spare,
) -> Result<Partial> {
    let unreadable = |e: Error| {
        e.doing(format!(
            "{path} is not readable Parquet: run `motcua replay --all` to rebuild staging from raw"
        ))
    };
    let f = ParquetFile::open(bytes).map_err(unreadable)?;
    let mut partial = spare.take(periods.len());
    for rg in 0..f.row_group_rows().len() {
        let k = kind(&f, rg, last);
        let cases = Decoded::of_group(&f, rg, k.counted, k.handed_over).map_err(unreadable)?;
        partial.count_decoded(&cases, periods, agencies)?;
    }
    Ok(partial)
}

/// Partials summed, handed back to count the next partitions into ([`Partial::clear`]), so
/// that a partition's counts do not grow from empty in fresh memory each time.
#[derive(Clone, Default)]
pub struct Spare(Arc<Mutex<Vec<Partial>>>);

impl Spare {
    /// Partials kept at most: as many as are counted and handed on at once.
    const KEPT: usize = COUNTING + AHEAD;

    /// An empty partial for `periods` periods: a spare one cleared, or a new one.
    fn take(&self, periods: usize) -> Partial {
        let spare = self.0.lock().ok().and_then(|mut s| s.pop());
        match spare {
            Some(mut p) if p.periods() == periods => {
                p.clear();
                p
            }
            _ => Partial::new(periods),
        }
    }

    /// Keeps `p`, summed, for a partition still to count.
    pub fn give(&self, p: Partial) {
        if let Ok(mut s) = self.0.lock() {
            if s.len() < Self::KEPT {
                s.push(p);
            }
        }
    }
}

/// Partitions counted at once, each on a thread of its own ([`Workers`]: the same two threads
/// for every partition, so that each reuses the memory the ones before freed; taken in turn by
/// four or five of tokio's blocking threads, the count made 23.6 k page faults a run at a
/// million cases, 19.2 k on its own two). On two cores (beside the thread summing them and
/// writing the next KPI cache) two were 3–4 % faster than three, side by side, at one and ten
/// million cases.
const COUNTING: usize = 2;

/// Partitions counted but not yet handed on, at most, while an earlier one is still being
/// counted: memory holds a few partitions' counts at most.
const AHEAD: usize = 8;

/// The partial counts, for every one of `periods`, of each partition of `paths`, handed to
/// `done` in the order of `paths` (`done` should be quick: it holds up the next partition)
/// with what `then` made of them on the thread that counted them.
/// Up to [`COUNTING`] partitions are read and counted at once, each task reading its file and
/// counting it, and a new one starts as soon as any ends: handing on, reading and counting in
/// turn on this one task left a counting thread idle for 45 % of a cold count at one million
/// cases. `bar` advances a partition at a time. Partials are taken from `spare` when it has
/// some (`done` may hand them back to it once summed).
#[allow(clippy::too_many_arguments)]
pub async fn count<E: Send + 'static>(
    store: &Store,
    paths: Vec<String>,
    periods: &[Period],
    agencies: Arc<Agencies>,
    spare: &Spare,
    bar: &indicatif::ProgressBar,
    then: impl Fn(&str, &Partial) -> E + Send + Sync + 'static,
    mut done: impl FnMut(String, Partial, E) -> Result<()>,
) -> Result<()> {
    let last = periods.iter().map(|p| Bounds::of(p).l).max();
    let then = Arc::new(then);
    let workers = Arc::new(Workers::new("count", COUNTING)?);
    let mut counting: JoinSet<Result<(usize, String, Partial, E)>> = JoinSet::new();
    // Counted, by their place in `paths`, until every one before is handed on.
    let mut counted: BTreeMap<usize, (String, Partial, E)> = BTreeMap::new();
    let mut next = 0;
    let mut one_ends = async |counting: &mut JoinSet<_>,
                              counted: &mut BTreeMap<usize, (String, Partial, E)>,
                              next: &mut usize|
           -> Result<()> {
        if let Some(c) = counting.join_next().await {
            let (k, path, p, e) =
                c.map_err(|_| Error::Internal("a counting thread panicked".into()))??;
            counted.insert(k, (path, p, e));
        }
        while let Some((path, p, e)) = counted.remove(next) {
            done(path, p, e)?;
            bar.inc(1);
            *next += 1;
        }
        Ok(())
    };
    for (k, path) in paths.into_iter().enumerate() {
        while counting.len() == COUNTING || k >= next + AHEAD {
            one_ends(&mut counting, &mut counted, &mut next).await?;
        }
        let (store, periods, agencies) = (store.clone(), periods.to_vec(), agencies.clone());
        let (then, workers, spare) = (then.clone(), workers.clone(), spare.clone());
        counting.spawn(async move {
            let Some(bytes) = store.get_mapped(&path).await? else {
                return Err(Error::Internal(format!(
                    "{path} vanished while reading staging (another writer?)"
                )));
            };
            workers
                .run(move || {
                    let p = count_partition(&path, bytes, &periods, &agencies, last, &spare)?;
                    let e = then(&path, &p);
                    Ok((k, path, p, e))
                })
                .await
        });
    }
    while !counting.is_empty() {
        one_ends(&mut counting, &mut counted, &mut next).await?;
    }
    // The threads end (each handing its free memory back) beside what follows, not before it.
    drop(counting);
    if let Some(w) = Arc::into_inner(workers) {
        tokio::task::spawn_blocking(move || drop(w));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::period::{Convention, PeriodId};
    use crate::normalise::{Normaliser, PiiKey};
    use crate::parquet::ParquetEncoder;

    /// A partial handed back is taken again, cleared; one of other periods is not; no more
    /// than [`Spare::KEPT`] are kept.
    #[test]
    fn spare_partials_are_taken_cleared() {
        let spare = Spare::default();
        assert!(spare.take(2).is_empty());
        let mut p = Partial::new(2);
        p.id(Some("000.00.01.H57"));
        assert!(!p.is_empty());
        spare.give(p);
        let again = spare.take(2);
        assert!(again.is_empty() && again.periods() == 2);
        spare.give(Partial::new(3));
        assert_eq!(spare.take(2).periods(), 2);
        for _ in 0..Spare::KEPT + 5 {
            spare.give(Partial::new(1));
        }
        assert_eq!(spare.0.lock().unwrap().len(), Spare::KEPT);
    }

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
            &Spare::default(),
            &bar,
            |_, _| (),
            |p, c, ()| {
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

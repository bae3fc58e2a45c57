//! Stage 5: the KPIs of every period of a run, from the staging table.
//!
//! Every measure is a count of cases, so a period's counts over the staging table are the sums
//! of its counts over each partition: [`scan`] reads each partition once, a row group at a
//! time and only [`INPUT_COLUMNS`]; [`partial`] counts each case for every period with
//! [`crate::domain::rules::counted`], under its agency on its attribution date
//! ([`attribution`]), and sums; [`cache`] keeps each partition's counts, so that only the
//! partitions whose file changed are read again, and [`sums`] their total, so that staging
//! unchanged is not even summed again. [`tables`] then builds each period's
//! `cases_by_agency` (every measure per agency × field), `cases_by_level` (those rows summed
//! per level and for `all`, so the two tables always roll up exactly), `catalog_by_level`, and
//! the restated tables ([`restate`]). The identities of `kpi.md` are checked on every row of
//! the case tables ([`identities`]).

pub mod attribution;
pub mod cache;
mod columns;
pub mod identities;
pub mod partial;
pub mod restate;
pub mod scan;
pub mod sums;
pub mod tables;

use serde::{Deserialize, Serialize};

pub use attribution::Agencies;
use cache::Framed;
pub use identities::{check_identities, IdentityCheck};
pub use partial::{partial, Partial, Totals};
use polars::prelude::DataFrame;

use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::normalise::Procedure;

/// The three KPI tables of one period.
#[derive(Clone)]
pub struct KpiTables {
    pub period: Period,
    /// The run that computed them.
    pub run_id: String,
    pub by_agency: DataFrame,
    pub by_level: DataFrame,
    pub catalog: DataFrame,
    /// The case tables restated to the structure of a target date.
    pub restated: restate::Restated,
    pub identities: Vec<IdentityCheck>,
}

impl KpiTables {
    pub fn identities_hold(&self) -> bool {
        self.identities.iter().all(|c| c.failures == 0)
    }
}

/// The staging columns the KPIs read; a slice is decoded with these alone.
pub const INPUT_COLUMNS: [&str; 16] = [
    "agency_code",
    "agency_name_text",
    "procedure_code",
    "field_code",
    "field_name",
    "channel",
    "status",
    "supplement_requests",
    "paid_online",
    "digitized",
    "submitted_date",
    "accepted_date",
    "refused_date",
    "end_date",
    "due_date",
    "transfers",
];

/// What the tables of a period are stamped with, and the date they are restated to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamp {
    pub run_id: String,
    /// Epoch microseconds.
    pub computed_at: i64,
    /// Restated tables follow main successors to the agencies existing on this day.
    pub restate_to: chrono::NaiveDate,
}

/// How the staging partitions were counted for a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counted {
    pub partitions: u64,
    /// Counted from their files (new or changed since their counts were cached).
    pub counted: u64,
    /// Whose counts came from the cache.
    pub cached: u64,
}

/// The next KPI cache and sums being written after a count, beside the building and publishing
/// of the tables: the count's threads are done then, and a core is free. Best effort, as
/// writing them always was (a failure is a warning); wait for it with [`Saving::done`] before
/// the run ends.
pub struct Saving(Option<tokio::task::JoinHandle<()>>);

impl Saving {
    /// Waits until the cache and sums are written (or failed to be).
    pub async fn done(self) {
        if let Some(h) = self.0 {
            if h.await.is_err() {
                tracing::warn!("writing the KPI cache stopped: the next run counts again");
            }
        }
    }
}

/// Every staging partition counted for every one of `periods` and summed: the partitions whose
/// file is the one the cache counted are not read again ([`cache`]), and staging exactly as
/// last summed is not summed again ([`sums`]). The next cache and sums are written by the
/// [`Saving`] returned.
pub async fn count_staging(
    store: &crate::store::Store,
    periods: &[Period],
    agencies: std::sync::Arc<Agencies>,
    bar: &indicatif::ProgressBar,
) -> Result<(Totals, Counted, Saving)> {
    let listing = scan::partitions(store).await?;
    bar.inc_length(listing.len() as u64);
    let n = listing.len() as u64;
    if let Some(total) = sums::load(store, periods, &agencies, &listing).await {
        tracing::debug!(
            partitions = n,
            "staging as summed: every count from the KPI sums"
        );
        bar.inc(n);
        let periods = periods.to_vec();
        let totals = crate::parquet::blocking(move || total.total(&periods)).await?;
        let counted = Counted {
            partitions: n,
            counted: 0,
            cached: n,
        };
        return Ok((totals, counted, Saving(None)));
    }
    let cache = cache::Cache::load(store, periods, &agencies).await;
    let kept = cache.usable(&listing);
    let mut total = Partial::new(periods.len());
    let kept = match cache.add_to(&mut total, &kept) {
        Ok(()) => kept,
        Err(e) => {
            tracing::warn!(error = %e, "the KPI cache cannot be read: counting again");
            total = Partial::new(periods.len());
            Default::default()
        }
    };
    bar.inc(kept.len() as u64);
    let todo: Vec<String> = listing
        .iter()
        .filter(|(p, _)| !kept.contains(p))
        .map(|(p, _)| p.clone())
        .collect();
    let counted = Counted {
        partitions: listing.len() as u64,
        counted: todo.len() as u64,
        cached: kept.len() as u64,
    };
    let versions: std::sync::Arc<std::collections::BTreeMap<String, String>> =
        std::sync::Arc::new(listing.iter().cloned().collect());
    crate::memory::keep_freed_while_counting();
    // Each partition's counts are encoded for the next cache on the thread that counted them,
    // then added to the total and kept in the next cache on a thread of their own, beside the
    // counting (the counting's hand-on stays quick).
    let (to_sum, counted_ones) = std::sync::mpsc::channel::<(Partial, Option<Result<Framed>>)>();
    let mut next = NextCache {
        cache,
        kept,
        writer: None,
        broken: false,
    };
    let spare = scan::Spare::default();
    let given = spare.clone();
    let summing = tokio::task::spawn_blocking(move || {
        for (p, framed) in counted_ones {
            total.add(&p);
            given.give(p);
            if let Some(f) = framed {
                next.push(f);
            }
        }
        (next, total)
    });
    // A partition listed has a version; one without is not kept in the cache.
    let frame = move |path: &str, p: &Partial| {
        let version = versions.get(path)?;
        Some(cache::CacheWriter::records(path, version, p))
    };
    let counting = scan::count(
        store,
        todo,
        periods,
        agencies.clone(),
        &spare,
        bar,
        frame,
        |_, p, framed| {
            to_sum
                .send((p, framed))
                .map_err(|_| Error::Internal("the thread summing the counts stopped".into()))
        },
    )
    .await;
    drop(to_sum);
    let summed = summing.await;
    crate::memory::return_freed();
    counting?;
    let (next, total) =
        summed.map_err(|_| Error::Internal("the thread summing the counts panicked".into()))?;
    let sums = sums::prepare(periods, &agencies, &listing, &total);
    let to = store.clone();
    let saving = Saving(Some(tokio::spawn(async move {
        next.save(&to).await;
        sums::write(&to, sums).await;
    })));
    let periods = periods.to_vec();
    let totals = crate::parquet::blocking(move || total.total(&periods)).await?;
    Ok((totals, counted, saving))
}

/// The next KPI cache, begun when a partition is counted (or at the end, if partitions went).
struct NextCache {
    cache: cache::Cache,
    kept: std::collections::BTreeSet<String>,
    writer: Option<cache::CacheWriter>,
    broken: bool,
}

impl NextCache {
    fn begin(&mut self) {
        if self.writer.is_none() && !self.broken {
            match self.cache.writer(&self.kept) {
                Ok(w) => self.writer = Some(w),
                Err(e) => self.fail(e),
            }
        }
    }

    fn fail(&mut self, e: crate::error::Error) {
        tracing::warn!(error = %e, "the KPI cache cannot be written: the next run counts again");
        (self.writer, self.broken) = (None, true);
    }

    /// Keeps a partition's records, or gives the cache up if they could not be made.
    fn push(&mut self, framed: Result<Framed>) {
        if self.broken {
            return;
        }
        self.begin();
        let pushed = framed.and_then(|f| match self.writer.as_mut() {
            Some(w) => w.push_framed(f),
            None => Ok(()),
        });
        if let Err(e) = pushed {
            self.fail(e);
        }
    }

    async fn save(mut self, store: &crate::store::Store) {
        if self.cache.stale(&self.kept) {
            self.begin();
        }
        if let Some(w) = self.writer {
            w.save(store).await;
        }
    }
}

/// Computes the three tables of `period` from the staging `cases` (all of it in one frame).
pub fn compute(
    cases: &DataFrame,
    agencies: &Agencies,
    catalog: &[Procedure],
    period: &Period,
    stamp: &Stamp,
) -> Result<KpiTables> {
    partial(cases, &[*period], agencies)?
        .total(&[*period])?
        .tables(0, agencies, catalog, stamp)
}

/// Tables of one Decree 09 quarter from a few records, for tests.
#[cfg(test)]
pub(crate) fn tables_of(records: &[serde_json::Value], cap: i32) -> KpiTables {
    use crate::domain::period::{Convention, PeriodId};
    use crate::normalise::{Normaliser, PiiKey};
    let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
    n.add_records("raw/x", records);
    let cases = n.finish().unwrap().cases;
    let agencies = Agencies::new(crate::domain::agency::Catalog::new(vec![
        crate::normalise::Agency {
            code: "X".into(),
            cap: Some(cap),
            ..Default::default()
        },
    ]))
    .unwrap();
    let period = "2024-Q3"
        .parse::<PeriodId>()
        .unwrap()
        .resolve(Convention::Decree09);
    let stamp = Stamp {
        run_id: "r".into(),
        computed_at: 0,
        restate_to: "2026-01-01".parse().unwrap(),
    };
    compute(&cases, &agencies, &[], &period, &stamp).unwrap()
}

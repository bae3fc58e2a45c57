//! Steps 5 and 6 of a run: count the staging table for every period at once, build each
//! period's tables and check every identity — if one breaks, nothing is published — then
//! publish the periods, a bounded number at once; a period that fails is recorded and the
//! others still go out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use futures::StreamExt;
use tracing::{info, warn};

use super::record::{OutsideValidity, RunRecord};
use crate::domain::period::Period;
use crate::error::{Error, IdentityBroken, PeriodsFailed, Result};
use crate::kpi::{self, Agencies, KpiTables, Stamp, Totals};
use crate::normalise::Procedure;
use crate::parquet::{blocking, ParquetEncoder};
use crate::publish;
use crate::state::Lock;
use crate::store::{Store, WrittenFile};
use chrono::NaiveDate;

/// What the KPIs need beside the staging table: the agencies with their history, the
/// procedures, and the day restated figures take their structure from.
pub struct Catalogs {
    pub agencies: Arc<Agencies>,
    pub procedures: Procedures,
    pub restate_to: NaiveDate,
}

/// The procedures catalog: read, or still being read on a task of its own (`--from-staging`
/// reads it from raw while staging is counted: the count needs only the agencies).
pub enum Procedures {
    Read(Arc<Vec<Procedure>>),
    Reading(tokio::task::JoinHandle<Result<Vec<Procedure>>>),
}

impl Procedures {
    /// The catalog, waited for if it is still being read.
    async fn get(&mut self) -> Result<Arc<Vec<Procedure>>> {
        let read =
            match std::mem::replace(self, Procedures::Read(Arc::default())) {
                Procedures::Read(p) => p,
                Procedures::Reading(h) => Arc::new(h.await.map_err(|_| {
                    Error::Internal("reading the procedures catalog stopped".into())
                })??),
            };
        *self = Procedures::Read(read.clone());
        Ok(read)
    }
}

/// How many periods are published at once.
pub struct Publishing<'a> {
    pub store: &'a Store,
    pub enc: &'a ParquetEncoder,
    pub lock: &'a Lock,
    pub concurrency: usize,
}

/// Computes and publishes `periods`; their tables, in the order asked.
pub async fn compute_and_publish(
    out: &Publishing<'_>,
    record: &mut RunRecord,
    catalogs: &mut Catalogs,
    periods: &[Period],
) -> Result<Vec<KpiTables>> {
    let computing = Instant::now();
    let bar = crate::progress::bar(
        Some(periods.len() as u64),
        "steps",
        "computing and publishing periods",
    );
    let (totals, saving) = count(out, record, catalogs, periods, &bar).await?;
    let published = match catalogs.procedures.get().await {
        Ok(procedures) => {
            let p = (totals, procedures);
            publish(out, record, catalogs, periods, p, &bar, computing).await
        }
        Err(e) => Err(e),
    };
    // The next KPI cache was written beside the tables (`kpi::Saving`): done before the run
    // ends, whatever became of the tables.
    saving.done().await;
    published
}

/// Builds the periods' tables from `totals`, checks them, and publishes them; their tables,
/// in the order asked.
async fn publish(
    out: &Publishing<'_>,
    record: &mut RunRecord,
    catalogs: &Catalogs,
    periods: &[Period],
    (totals, procedures): (Totals, Arc<Vec<Procedure>>),
    bar: &indicatif::ProgressBar,
    computing: Instant,
) -> Result<Vec<KpiTables>> {
    crate::memory::keep_freed_while_publishing();
    let stamp = Stamp {
        run_id: record.run_id.clone(),
        computed_at: Utc::now().timestamp_micros(),
        restate_to: catalogs.restate_to,
    };
    let (mut tables, mut failed) =
        tables(Arc::new(totals), catalogs, procedures, periods, stamp).await?;
    note_broken_chains(record, &tables);
    check(record, &tables)?;
    record
        .timings_secs
        .insert("compute".into(), computing.elapsed().as_secs_f64());
    let publishing = Instant::now();
    out.lock.ensure_held().await?;
    let dim = publish::dim::agencies(out.store, out.enc, &catalogs.agencies.catalog).await?;
    record.files.push(dim);
    let published = publish_all(out, &tables, bar).await;
    bar.finish_and_clear();
    note_published(record, published, &mut failed);
    record
        .timings_secs
        .insert("publish".into(), publishing.elapsed().as_secs_f64());
    if !failed.is_empty() {
        return Err(PeriodsFailed {
            failed: failed.into_keys().collect(),
            total: periods.len(),
            run_id: record.run_id.clone(),
        }
        .into());
    }
    let order: BTreeMap<String, usize> = periods
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.to_string(), i))
        .collect();
    tables.sort_by_key(|t| order.get(&t.period.id.to_string()).copied());
    Ok(tables)
}

/// The staging table counted for every period, and what the counts say of the agencies; the
/// next KPI cache being written.
async fn count(
    out: &Publishing<'_>,
    record: &mut RunRecord,
    catalogs: &Catalogs,
    periods: &[Period],
    bar: &indicatif::ProgressBar,
) -> Result<(Totals, kpi::Saving)> {
    let agencies = catalogs.agencies.clone();
    let (totals, counted, saving) = kpi::count_staging(out.store, periods, agencies, bar).await?;
    record.counts.kpi_partitions_counted = counted.counted;
    record.counts.kpi_partitions_cached = counted.cached;
    let noted = (|| {
        record.counts.cases_in_staging = totals.cases()?;
        note_unknown_agencies(record, totals.cases_per_agency()?, &catalogs.agencies);
        note_outside_validity(record, &totals, periods)
    })();
    match noted {
        Ok(()) => Ok((totals, saving)),
        Err(e) => {
            saving.done().await;
            Err(e)
        }
    }
}

/// Every period's tables from the summed counts (on the blocking pool); a period whose tables
/// cannot be built is a failure of its own.
async fn tables(
    totals: Arc<Totals>,
    catalogs: &Catalogs,
    procedures: Arc<Vec<Procedure>>,
    periods: &[Period],
    stamp: Stamp,
) -> Result<(Vec<KpiTables>, BTreeMap<String, String>)> {
    let agencies = catalogs.agencies.clone();
    let ids: Vec<String> = periods.iter().map(|p| p.id.to_string()).collect();
    let computed = blocking(move || {
        Ok((0..ids.len())
            .map(|i| totals.tables(i, &agencies, &procedures, &stamp))
            .collect::<Vec<_>>())
    })
    .await?;
    let mut tables = vec![];
    let mut failed = BTreeMap::new();
    for (p, r) in periods.iter().zip(computed) {
        match r {
            Ok(t) => tables.push(t),
            Err(e) => {
                failed.insert(p.id.to_string(), e.to_string());
            }
        }
    }
    Ok((tables, failed))
}

/// Records every identity check; the first broken one fails the run before anything is
/// published.
fn check(record: &mut RunRecord, tables: &[KpiTables]) -> Result<()> {
    for t in tables {
        record.identity_checks.extend(t.identities.iter().cloned());
    }
    let broken = record.identity_checks.iter().find(|c| c.failures > 0);
    record.identities_hold = Some(broken.is_none());
    match broken {
        None => Ok(()),
        Some(b) => Err(Error::IdentityBroken(IdentityBroken {
            period: b.period.clone(),
            table: b.table.clone(),
            identity: b.identity.clone(),
            failures: b.failures,
            rows: b.rows,
        })),
    }
}

/// Publishes every period's partitions, `concurrency` periods at once.
async fn publish_all(
    out: &Publishing<'_>,
    tables: &[KpiTables],
    bar: &indicatif::ProgressBar,
) -> Vec<(String, Result<Vec<WrittenFile>>)> {
    futures::stream::iter(tables.iter())
        .map(|t| {
            let bar = bar.clone();
            async move {
                let r = publish::kpi_tables(out.store, out.enc, t).await;
                bar.inc(1);
                (t.period.id.to_string(), r)
            }
        })
        .buffer_unordered(out.concurrency)
        .collect()
        .await
}

/// Records which periods were published, and why the others were not.
fn note_published(
    record: &mut RunRecord,
    published: Vec<(String, Result<Vec<WrittenFile>>)>,
    failed: &mut BTreeMap<String, String>,
) {
    for (id, r) in published {
        match r {
            Ok(files) => {
                record.files.extend(files);
                record.published(&id);
                info!(period = %id, "published");
            }
            Err(e) => {
                warn!(period = %id, error = %e, "period not published");
                failed.insert(id, e.to_string());
            }
        }
    }
    for (id, e) in failed.iter() {
        record.failed(id, e.clone());
    }
}

/// Records the agencies of staged cases that `/v1/donvi` does not know (counted at level
/// `unknown`), and warns of them.
fn note_unknown_agencies(
    record: &mut RunRecord,
    per_agency: BTreeMap<String, u64>,
    agencies: &Agencies,
) {
    let known: BTreeSet<&str> = agencies
        .catalog
        .all()
        .iter()
        .map(|a| a.code.as_str())
        .collect();
    let unknown: BTreeMap<String, u64> = per_agency
        .into_iter()
        .filter(|(code, _)| !known.contains(code.as_str()))
        .collect();
    if !unknown.is_empty() {
        warn!(agencies = ?unknown.keys().collect::<Vec<_>>(), "cases of agencies missing from /v1/donvi are counted at level unknown");
    }
    record.counts.cases_at_unknown_agencies = unknown.values().sum();
    record.counts.unknown_agencies = unknown.into_keys().collect();
}

/// Records, per period and agency, the cases counted under an agency on a day outside its
/// validity (counted as usual: the dates of real systems are not exact).
fn note_outside_validity(
    record: &mut RunRecord,
    totals: &Totals,
    periods: &[Period],
) -> Result<()> {
    for (i, p) in periods.iter().enumerate() {
        for (agency_code, cases) in totals.outside_validity(i)? {
            record.agencies_outside_validity.push(OutsideValidity {
                period: p.id.to_string(),
                agency_code,
                cases,
            });
        }
    }
    if !record.agencies_outside_validity.is_empty() {
        let cases: u64 = record
            .agencies_outside_validity
            .iter()
            .map(|o| o.cases)
            .sum();
        warn!(cases, "cases counted under an agency on a day outside its validity (HieuLucTu … HieuLucDen): counted as usual; see agencies_outside_validity in the run record");
    }
    Ok(())
}

/// Records the agencies whose chain of successors breaks before the restating date.
fn note_broken_chains(record: &mut RunRecord, tables: &[KpiTables]) {
    let broken: BTreeSet<String> = tables
        .iter()
        .flat_map(|t| t.restated.broken_chains.iter().cloned())
        .collect();
    if !broken.is_empty() {
        warn!(agencies = ?broken, "agencies whose successors end before the restating date: restated figures keep them");
    }
    record.restate_broken_chains = broken.into_iter().collect();
}

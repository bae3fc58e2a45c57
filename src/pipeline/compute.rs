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

use super::record::RunRecord;
use crate::domain::period::Period;
use crate::error::{Error, IdentityBroken, PeriodsFailed, Result};
use crate::kpi::{self, KpiTables, Stamp, Totals};
use crate::normalise::{Agency, Procedure};
use crate::parquet::{blocking, ParquetEncoder};
use crate::publish;
use crate::state::Lock;
use crate::store::{Store, WrittenFile};

/// What the KPIs need beside the staging table.
pub struct Catalogs {
    pub agencies: Arc<Vec<Agency>>,
    pub procedures: Arc<Vec<Procedure>>,
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
    catalogs: &Catalogs,
    periods: &[Period],
) -> Result<Vec<KpiTables>> {
    let computing = Instant::now();
    let bar = crate::progress::bar(
        Some(periods.len() as u64),
        "steps",
        "computing and publishing periods",
    );
    let totals = kpi::scan::count(out.store, periods, out.concurrency, &bar).await?;
    record.counts.cases_in_staging = totals.cases()?;
    note_unknown_agencies(record, totals.cases_per_agency()?, &catalogs.agencies);
    let stamp = Stamp {
        run_id: record.run_id.clone(),
        computed_at: Utc::now().timestamp_micros(),
    };
    let (mut tables, mut failed) = tables(Arc::new(totals), catalogs, periods, stamp).await?;
    check(record, &tables)?;
    record
        .timings_secs
        .insert("compute".into(), computing.elapsed().as_secs_f64());
    let publishing = Instant::now();
    out.lock.ensure_held().await?;
    let published = publish_all(out, &tables, &bar).await;
    bar.finish_and_clear();
    note_published(record, published, &mut failed);
    record
        .timings_secs
        .insert("publish".into(), publishing.elapsed().as_secs_f64());
    for (id, e) in &failed {
        record.failed(id, e.clone());
    }
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

/// Every period's tables from the summed counts (on the blocking pool); a period whose tables
/// cannot be built is a failure of its own.
async fn tables(
    totals: Arc<Totals>,
    catalogs: &Catalogs,
    periods: &[Period],
    stamp: Stamp,
) -> Result<(Vec<KpiTables>, BTreeMap<String, String>)> {
    let (agencies, procedures) = (catalogs.agencies.clone(), catalogs.procedures.clone());
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
    agencies: &[Agency],
) {
    let known: BTreeSet<&str> = agencies.iter().map(|a| a.code.as_str()).collect();
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

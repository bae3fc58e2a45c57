//! The orchestration of one run: source → raw → normalise → KPI → publish, then the run record.
//!
//! 1. read the cursor (`_state/cursor.json`); pull agencies, catalog and the cases changed since
//!    the cursor minus the lookback (everything on the first run), landing every body in `raw/`;
//! 2. normalise, reject (`quality/rejects/run_id=…`), and upsert the staging buckets `cases/`;
//! 3. move the cursor — only now that the data is safely staged;
//! 4. compute every requested period and check the identities of `kpi.md` on every row; if one
//!    breaks, the run fails and publishes no KPI at all;
//! 5. publish the KPI partitions, each one file replaced by one write;
//! 6. write the run record `_runs/<run_id>.json`, whatever happened.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use polars::prelude::*;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::Settings;
use crate::kpi::{self, IdentityCheck, KpiTables};
use crate::normalise::{self, source_timestamp, Normaliser};
use crate::period::PeriodId;
use crate::publish::{self, ParquetEncoder, WrittenFile};
use crate::raw::RawLog;
use crate::source::{PullStats, Source};
use crate::store::Store;

/// The state file that holds the incremental cursor.
pub const CURSOR_PATH: &str = "_state/cursor.json";

/// A run failed because a KPI identity broke; nothing was published.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdentityBroken(pub String);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cursor {
    /// Greatest `NgayCapNhat` staged, `yyyyMMddHHmmss` Vietnam time.
    pub cursor: String,
    pub cursor_micros: i64,
    pub run_id: String,
    pub written_at: String,
}

/// Counts of the run record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub requests: u64,
    pub retries: u64,
    pub pages: u64,
    pub records_pulled: u64,
    pub bytes_pulled: u64,
    pub raw_bytes_written: u64,
    pub valid_records: u64,
    pub duplicates_dropped: u64,
    pub records_rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub cases_in_staging: u64,
    pub staging_buckets_written: u64,
    pub agencies: u64,
    pub procedures: u64,
    pub unknown_agencies: Vec<String>,
    pub cases_at_unknown_agencies: u64,
}

/// The run record `_runs/<run_id>.json` (see `outputs.md`).
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub command: String,
    pub output: String,
    pub period_convention: String,
    pub periods: Vec<PeriodRecord>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_secs: f64,
    pub outcome: String,
    pub error: Option<String>,
    pub cursor_before: Option<String>,
    pub pulled_from: Option<String>,
    pub cursor_after: Option<String>,
    pub counts: Counts,
    pub identity_checks: Vec<IdentityCheck>,
    pub identities_hold: Option<bool>,
    pub files: Vec<WrittenFile>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeriodRecord {
    pub id: String,
    pub start: String,
    pub end: String,
    pub published: bool,
}

/// What a successful run leaves for the caller to show.
pub struct Outcome {
    pub record: RunRecord,
    pub tables: Vec<KpiTables>,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn new_run_id() -> String {
    format!(
        "{}-{:04x}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u16>()
    )
}

/// The default periods of `run`: the current quarter to date and the previous one.
pub fn default_periods(settings: &Settings) -> Vec<PeriodId> {
    let today = Utc::now()
        .with_timezone(&chrono_tz::Asia::Ho_Chi_Minh)
        .date_naive();
    let q = PeriodId::quarter_containing(today, settings.convention);
    vec![q.previous(), q]
}

/// Runs the pipeline for `periods` and writes the run record, successful or not.
pub async fn execute(settings: &Settings, command: &str, periods: &[PeriodId]) -> Result<Outcome> {
    let run_id = new_run_id();
    let store = Store::open(&settings.output, &run_id)?;
    let started = Instant::now();
    let mut record = RunRecord {
        run_id: run_id.clone(),
        pipeline: settings.name.clone(),
        command: command.to_string(),
        output: settings.output.clone(),
        period_convention: settings.convention.to_string(),
        periods: periods
            .iter()
            .map(|p| {
                let r = p.resolve(settings.convention);
                PeriodRecord {
                    id: p.to_string(),
                    start: r.start.to_string(),
                    end: r.end.to_string(),
                    published: false,
                }
            })
            .collect(),
        started_at: now(),
        ended_at: None,
        duration_secs: 0.0,
        outcome: "running".into(),
        error: None,
        cursor_before: None,
        pulled_from: None,
        cursor_after: None,
        counts: Counts::default(),
        identity_checks: vec![],
        identities_hold: None,
        files: vec![],
    };
    info!(run_id = %run_id, output = %settings.output, periods = ?periods.iter().map(|p| p.to_string()).collect::<Vec<_>>(), "run started");
    let result = pipeline(settings, &store, &mut record, periods).await;
    record.ended_at = Some(now());
    record.duration_secs = started.elapsed().as_secs_f64();
    match &result {
        Ok(_) => record.outcome = "succeeded".into(),
        Err(e) => {
            record.outcome = "failed".into();
            record.error = Some(format!("{e:#}"));
        }
    }
    let body = serde_json::to_vec_pretty(&record)?;
    let written = store
        .publish(&format!("_runs/{run_id}.json"), Bytes::from(body))
        .await;
    if let Err(e) = store.clean_staging().await {
        warn!(error = %format!("{e:#}"), "could not remove this run's staging folder");
    }
    let c = &record.counts;
    info!(
        run_id = %run_id,
        outcome = %record.outcome,
        records_pulled = c.records_pulled,
        rejected = c.records_rejected,
        periods_published = record.periods.iter().filter(|p| p.published).count(),
        duration_secs = format!("{:.1}", record.duration_secs),
        "run finished"
    );
    let tables = result?;
    written.context("writing the run record")?;
    Ok(Outcome { record, tables })
}

async fn pipeline(
    settings: &Settings,
    store: &Store,
    record: &mut RunRecord,
    periods: &[PeriodId],
) -> Result<Vec<KpiTables>> {
    let run_id = record.run_id.clone();
    // 1. pull
    let cursor: Option<Cursor> = match store.get(CURSOR_PATH).await? {
        Some(b) => Some(serde_json::from_slice(&b).with_context(|| {
            format!("{CURSOR_PATH} is damaged: delete it to pull everything again")
        })?),
        None => None,
    };
    record.cursor_before = cursor.as_ref().map(|c| c.cursor.clone());
    let since = cursor
        .as_ref()
        .map(|c| c.cursor_micros - settings.lookback.as_micros() as i64);
    record.pulled_from = since.map(source_timestamp);
    let raw = RawLog::new(store.clone(), &run_id);
    let mut source = Source::new(settings.source.clone(), settings.token.expose())?;
    let (agencies, skipped_a) = normalise::agencies(&source.list(&raw, "/v1/donvi").await?);
    let (catalog, skipped_p) = normalise::procedures(&source.list(&raw, "/v1/tthc").await?);
    if skipped_a + skipped_p > 0 {
        warn!(
            agencies = skipped_a,
            procedures = skipped_p,
            "catalog entries without a code or repeated were skipped"
        );
    }
    record.counts.agencies = agencies.len() as u64;
    record.counts.procedures = catalog.len() as u64;
    info!(agencies = agencies.len(), procedures = catalog.len(), from = ?record.pulled_from, "pulling cases");
    let mut normaliser = Normaliser::new(settings.pii_key.clone(), &run_id);
    let pulled = Instant::now();
    let result = source
        .pull_cases(&raw, since, |path, data| normaliser.add_records(path, data))
        .await;
    fill_pull_counts(&mut record.counts, &source.stats, &raw);
    record.files.extend(raw.files());
    result?;
    let secs = pulled.elapsed().as_secs_f64();
    info!(
        pages = source.stats.pages,
        records = source.stats.records,
        retries = source.stats.retries,
        secs = format!("{secs:.1}"),
        per_second = (source.stats.records as f64 / secs.max(1e-3)) as u64,
        "pull done"
    );

    // 2. normalise, reject, upsert staging
    let normalised = normaliser.finish()?;
    let c = &mut record.counts;
    c.valid_records = normalised.stats.valid;
    c.records_rejected = normalised.stats.rejected;
    c.rejected_by_reason = normalised.stats.rejected_by_reason.clone();
    let distinct = normalised.cases.column("case_id")?.n_unique()? as u64;
    c.duplicates_dropped = normalised.cases.height() as u64 - distinct;
    if c.records_rejected > 0 {
        warn!(rejected = c.records_rejected, by_reason = ?c.rejected_by_reason, "records rejected; see quality/rejects/run_id={run_id}/");
    }
    let enc = ParquetEncoder::new()?;
    let rejects = publish::rejects_frame(&normalised.rejects, &run_id)?;
    let f = publish::write_table(
        store,
        &enc,
        &format!("quality/rejects/run_id={run_id}/part-0.parquet"),
        rejects,
    )
    .await?;
    record.files.push(f);
    for (bucket, new) in normalise::by_bucket(&normalised.cases)? {
        let path = format!("cases/bucket={bucket:02}/part-0.parquet");
        let old = match store.get(&path).await? {
            Some(b) => Some(
                publish::decode(b).with_context(|| format!("{path} is not readable Parquet"))?,
            ),
            None => None,
        };
        let merged = normalise::upsert(old, new)?;
        record
            .files
            .push(publish::write_table(store, &enc, &path, merged).await?);
        record.counts.staging_buckets_written += 1;
    }

    // 3. the cursor moves only now that the data is staged
    if let Some(after) = source.stats.cursor_after_micros {
        if cursor.as_ref().is_none_or(|c| after > c.cursor_micros) {
            let next = Cursor {
                cursor: source_timestamp(after),
                cursor_micros: after,
                run_id: run_id.clone(),
                written_at: now(),
            };
            store
                .publish(CURSOR_PATH, Bytes::from(serde_json::to_vec_pretty(&next)?))
                .await?;
        }
    }
    record.cursor_after = source
        .stats
        .cursor_after
        .clone()
        .max(record.cursor_before.clone());

    // 4. KPIs for every period, identities checked before anything is published
    let staged = load_staging(store, &settings.pii_key).await?;
    record.counts.cases_in_staging = staged.height() as u64;
    let known: BTreeSet<&str> = agencies.iter().map(|a| a.code.as_str()).collect();
    let codes = staged.column("agency_code")?.str()?;
    let mut unknown: BTreeMap<String, u64> = BTreeMap::new();
    for code in codes.iter().flatten() {
        if !known.contains(code) {
            *unknown.entry(code.to_string()).or_default() += 1;
        }
    }
    if !unknown.is_empty() {
        warn!(agencies = ?unknown.keys().collect::<Vec<_>>(), "cases of agencies missing from /v1/donvi are counted at level unknown");
    }
    record.counts.cases_at_unknown_agencies = unknown.values().sum();
    record.counts.unknown_agencies = unknown.into_keys().collect();
    let computed_at = Utc::now().timestamp_micros();
    let mut tables = vec![];
    for p in periods {
        let period = p.resolve(settings.convention);
        let t = kpi::compute(&staged, &agencies, &catalog, &period, &run_id, computed_at)?;
        record.identity_checks.extend(t.identities.iter().cloned());
        tables.push(t);
    }
    let broken: Vec<&IdentityCheck> = record
        .identity_checks
        .iter()
        .filter(|c| c.failures > 0)
        .collect();
    record.identities_hold = Some(broken.is_empty());
    if let Some(b) = broken.first() {
        return Err(IdentityBroken(format!(
            "identity broken in {} {} on {} of {} rows: {}; nothing was published — this is a bug in motcua, please report it with the run record",
            b.period, b.table, b.failures, b.rows, b.identity
        ))
        .into());
    }

    // 5. publish
    for (t, pr) in tables.iter().zip(record.periods.iter_mut()) {
        let files = publish::kpi_tables(store, &enc, t).await?;
        record.files.extend(files);
        pr.published = true;
        info!(period = %t.period.id, "published");
    }
    Ok(tables)
}

fn fill_pull_counts(c: &mut Counts, s: &PullStats, raw: &RawLog) {
    c.requests = s.requests;
    c.retries = s.retries;
    c.pages = s.pages;
    c.records_pulled = s.records;
    c.bytes_pulled = s.bytes;
    c.raw_bytes_written = raw.bytes_written.load(std::sync::atomic::Ordering::Relaxed);
}

/// Reads every staging bucket into one frame.
pub async fn load_staging(store: &Store, key: &normalise::PiiKey) -> Result<DataFrame> {
    let mut frames = vec![];
    for (path, _) in store.list("cases").await? {
        if path.ends_with("/part-0.parquet") {
            let b = store
                .get(&path)
                .await?
                .with_context(|| format!("{path} vanished while reading staging"))?;
            frames.push(
                publish::decode(b)
                    .with_context(|| format!("{path} is not readable Parquet"))?
                    .lazy(),
            );
        }
    }
    if frames.is_empty() {
        let empty = Normaliser::new(key.clone(), "").finish()?.cases;
        return Ok(empty.drop("_order")?);
    }
    Ok(concat(frames, UnionArgs::default())?.collect()?)
}

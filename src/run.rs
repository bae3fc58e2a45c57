//! The orchestration of one run: source → raw → normalise → KPI → publish, then the run record.
//!
//! 1. take the single-writer lock `_state/lock` (or wait for it, or exit naming its holder);
//! 2. read the cursor; pull agencies, catalog and the cases changed since the cursor minus the
//!    lookback (everything on the first run or with `--full-refresh`), landing every body in
//!    `raw/` — or, for `replay`, read those bodies back from `raw/` instead of the source;
//! 3. normalise, reject (`quality/rejects/run_id=…`), and upsert the staging buckets `cases/`;
//! 4. move the cursor — only now that the data is safely staged;
//! 5. compute every period (a bounded number at once) and check the identities of `kpi.md` on
//!    every row; if one breaks, the run fails and publishes no KPI at all;
//! 6. publish the periods, each partition one file replaced by one write; a period that fails
//!    is recorded and the others still go out;
//! 7. prune raw older than the retention; write the run record `_runs/<run_id>.json`, whatever
//!    happened; release the lock — on Ctrl-C and SIGTERM too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use polars::prelude::DataFrame;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::Settings;
use crate::kpi::{self, IdentityCheck, KpiTables};
use crate::normalise::{self, source_timestamp, Agency, Batches, Normaliser, Procedure, Spilled};
use crate::period::{self, Convention, Period, PeriodId};
use crate::progress;
use crate::publish::{self, ParquetEncoder, WrittenFile};
use crate::raw::{self, RawLog};
use crate::source::{self, PullStats, Source, Window};
use crate::state::{self, Cursor, Lock};
use crate::store::Store;

/// What a run does.
#[derive(Debug, Clone)]
pub enum Command {
    /// Pull, stage, publish `periods`.
    Run {
        periods: Vec<PeriodId>,
        full_refresh: bool,
    },
    /// Pull, stage, publish every period from `from` to `to`; with `resume`, only those the
    /// last backfill of that range did not publish, or whose files are missing.
    Backfill {
        from: PeriodId,
        to: PeriodId,
        resume: bool,
        full_refresh: bool,
    },
    /// Rebuild staging from `raw/` alone (runs up to `run_id`, or all), then publish `periods`
    /// (default: those the replayed run published; with all runs, every published period).
    Replay {
        run_id: Option<String>,
        periods: Vec<PeriodId>,
    },
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Run { .. } => "run",
            Command::Backfill { .. } => "backfill",
            Command::Replay { .. } => "replay",
        }
    }
}

/// How a run behaves around others and the terminal.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Wait for the lock instead of exiting when another run holds it.
    pub wait: bool,
    /// `run` and `backfill` publish from staging as it stands, without pulling.
    pub from_staging: bool,
}

/// A run failed because a KPI identity broke; nothing was published.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IdentityBroken(pub String);

/// Some periods could not be published; the others were.
#[derive(Debug, thiserror::Error)]
#[error("{} of {} periods were not published ({}): see the run record _runs/{run_id}.json, fix the cause, then rerun with `backfill --resume` (or run those periods again)", failed.len(), total, failed.join(", "))]
pub struct PeriodsFailed {
    pub failed: Vec<String>,
    pub total: usize,
    pub run_id: String,
}

/// The run was stopped by a signal.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped by {0}; what was published before stays, the lock is released; run again to finish"
)]
pub struct Interrupted(pub &'static str);

/// Counts of the run record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub retries: u64,
    pub pages: u64,
    pub records_pulled: u64,
    pub bytes_pulled: u64,
    pub raw_bytes_written: u64,
    pub raw_files_replayed: u64,
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
    pub raw_runs_pruned: u64,
    /// Records pulled with `NgayCapNhat` at or after the pull's upper bound (`pull_bound`):
    /// staged and counted, but they never move the cursor.
    #[serde(default)]
    pub records_after_bound: u64,
    /// Of those, records stamped later than the moment they were pulled (plus the clock-skew
    /// allowance): a clock error at the source.
    #[serde(default)]
    pub future_stamped_records: u64,
    /// The most distant of those stamps, `yyyyMMddHHmmss` Vietnam time.
    #[serde(default)]
    pub future_stamp_max: Option<String>,
}

/// The run record `_runs/<run_id>.json` (see `outputs.md`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub command: String,
    /// `from..to` of a backfill.
    #[serde(default)]
    pub range: Option<String>,
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
    /// The pull's fixed upper bound (`updated_to`): the run's start minus the clock-skew
    /// allowance. The cursor never passes it.
    #[serde(default)]
    pub pull_bound: Option<String>,
    pub cursor_after: Option<String>,
    pub counts: Counts,
    pub identity_checks: Vec<IdentityCheck>,
    pub identities_hold: Option<bool>,
    pub files: Vec<WrittenFile>,
    /// Seconds spent in each stage: `pull` (or `replay_raw`, with normalising), `stage`,
    /// `compute` (staging read and counted, every period's tables built), `publish`.
    #[serde(default)]
    pub timings_secs: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeriodRecord {
    pub id: String,
    /// The convention it was computed under (the run's, unless a replay republished a
    /// period under the convention it was first published with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convention: Option<Convention>,
    pub start: String,
    pub end: String,
    pub published: bool,
    #[serde(default)]
    pub error: Option<String>,
}

/// What a successful run leaves for the caller to show.
pub struct Outcome {
    pub record: RunRecord,
    pub tables: Vec<KpiTables>,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The default periods of `run`: the current quarter to date and the previous one, so that a
/// case changed after its quarter was published reaches that quarter at the next run.
pub fn default_periods(settings: &Settings) -> Vec<PeriodId> {
    let today = Utc::now()
        .with_timezone(&chrono_tz::Asia::Ho_Chi_Minh)
        .date_naive();
    let q = PeriodId::quarter_containing(today, settings.convention);
    vec![q.previous(), q]
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops a run cleanly");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Runs `command` under the lock and writes the run record, whatever happens.
pub async fn execute(settings: &Settings, command: &Command, opts: Options) -> Result<Outcome> {
    let run_id = crate::run_id::new();
    let store = Store::open(&settings.output, &run_id)?;
    let started = Instant::now();
    let mut record = RunRecord {
        run_id: run_id.clone(),
        pipeline: settings.name.clone(),
        command: command.name().into(),
        range: match command {
            Command::Backfill { from, to, .. } => Some(format!("{from}..{to}")),
            _ => None,
        },
        output: settings.output.clone(),
        period_convention: settings.convention.to_string(),
        periods: vec![],
        started_at: now(),
        ended_at: None,
        duration_secs: 0.0,
        outcome: "running".into(),
        error: None,
        cursor_before: None,
        pulled_from: None,
        pull_bound: None,
        cursor_after: None,
        counts: Counts::default(),
        identity_checks: vec![],
        identities_hold: None,
        files: vec![],
        timings_secs: BTreeMap::new(),
    };
    info!(run_id = %run_id, command = command.name(), output = %settings.output, "run started");
    let result = locked(settings, &store, &mut record, command, opts).await;
    finish(&store, &mut record, started, &result).await;
    let tables = result?;
    Ok(Outcome { record, tables })
}

/// Takes the lock, runs the pipeline, and releases the lock on every way out: success,
/// failure, Ctrl-C and SIGTERM (a signal stops the waiting or the pipeline, then the lock
/// is released here before the run record is written).
async fn locked(
    settings: &Settings,
    store: &Store,
    record: &mut RunRecord,
    command: &Command,
    opts: Options,
) -> Result<Vec<KpiTables>> {
    let run_id = record.run_id.clone();
    let lock = tokio::select! {
        l = Lock::acquire(store, &run_id, command.name(), settings.lock_expiry, opts.wait) => l?,
        s = shutdown_signal() => return Err(Interrupted(s).into()),
    };
    let result = tokio::select! {
        r = async {
            let stale = store.clean_stale_staging().await?;
            if stale > 0 {
                warn!(files = stale, "removed staging files a killed run left behind");
            }
            pipeline(settings, store, record, command, &lock, opts.from_staging).await
        } => r,
        s = shutdown_signal() => Err(Interrupted(s).into()),
        // The heartbeat found the lock taken or could not renew it: stop before publishing.
        lost = lock.lost() => Err(lost.into()),
    };
    if let Err(e) = lock.release().await {
        warn!(error = %format!("{e:#}"), "could not release the lock; the next run takes it over when it expires");
    }
    result
}

/// Records the outcome, writes the run record and the summary line, cleans this run's staging.
async fn finish(
    store: &Store,
    record: &mut RunRecord,
    started: Instant,
    result: &Result<Vec<KpiTables>>,
) {
    record.ended_at = Some(now());
    record.duration_secs = started.elapsed().as_secs_f64();
    match result {
        Ok(_) => record.outcome = "succeeded".into(),
        Err(e) => {
            let partial = e.downcast_ref::<PeriodsFailed>().is_some()
                && record.periods.iter().any(|p| p.published);
            record.outcome = if partial { "partial" } else { "failed" }.into();
            record.error = Some(format!("{e:#}"));
        }
    }
    // A run refused at the lock leaves no record: it did nothing, and the holder's record stands.
    let refused = matches!(result, Err(e) if e.downcast_ref::<state::LockBusy>().is_some());
    if !refused {
        match serde_json::to_vec_pretty(&record) {
            Ok(body) => {
                if let Err(e) = store
                    .publish(&format!("_runs/{}.json", record.run_id), Bytes::from(body))
                    .await
                {
                    warn!(error = %format!("{e:#}"), "could not write the run record");
                }
            }
            Err(e) => warn!(error = %e, "could not encode the run record"),
        }
    }
    if let Err(e) = store.clean_staging().await {
        warn!(error = %format!("{e:#}"), "could not remove this run's staging folder");
    }
    let c = &record.counts;
    info!(
        run_id = %record.run_id,
        outcome = %record.outcome,
        records_pulled = c.records_pulled,
        rejected = c.records_rejected,
        future_stamped = c.future_stamped_records,
        future_stamp_max = c.future_stamp_max.as_deref().unwrap_or(""),
        periods_published = record.periods.iter().filter(|p| p.published).count(),
        duration_secs = format!("{:.1}", record.duration_secs),
        "run finished"
    );
}

/// The catalogs the KPIs need beside the staging table.
struct Staged {
    agencies: Arc<Vec<Agency>>,
    catalog: Arc<Vec<Procedure>>,
}

async fn pipeline(
    settings: &Settings,
    store: &Store,
    record: &mut RunRecord,
    command: &Command,
    lock: &Lock,
    from_staging: bool,
) -> Result<Vec<KpiTables>> {
    let enc = ParquetEncoder::new()?;
    let mut clock = Instant::now();
    let mut lap = |record: &mut RunRecord, stage: &str| {
        record
            .timings_secs
            .insert(stage.into(), clock.elapsed().as_secs_f64());
        clock = Instant::now();
    };
    let replay = matches!(command, Command::Replay { .. });
    // Which periods to publish is known before any work: a replay with nothing to publish
    // says so before it reads raw/.
    let periods = periods_of(settings, store, command).await?;
    let (agencies, catalog) = if from_staging && !replay {
        let cursor = match state::read_cursor(store).await {
            Ok(c) => c.map(|c| c.cursor),
            Err(e) => {
                warn!(error = %format!("{e:#}"), "the cursor is unreadable; publishing from staging does not need it");
                None
            }
        };
        record.cursor_before = cursor.clone();
        record.cursor_after = cursor;
        info!("publishing from staging as it stands: no pull");
        catalogs_from_raw(settings, store).await?
    } else {
        let (agencies, catalog, normalised, cursor) = match command {
            Command::Replay { run_id, .. } => {
                let (a, c, n) = from_raw(settings, store, record, run_id.as_deref()).await?;
                (a, c, n, None)
            }
            Command::Run { full_refresh, .. } | Command::Backfill { full_refresh, .. } => {
                pull(settings, store, record, *full_refresh).await?
            }
        };
        lap(record, if replay { "replay_raw" } else { "pull" });
        lock.ensure_held().await?;
        stage(store, &enc, record, normalised, replay).await?;
        lap(record, "stage");
        if let Command::Run { full_refresh, .. } | Command::Backfill { full_refresh, .. } = command
        {
            move_cursor(store, record, cursor.as_ref(), *full_refresh).await?;
        }
        (agencies, catalog)
    };
    record.periods = periods
        .iter()
        .map(|p| PeriodRecord {
            id: p.id.to_string(),
            convention: Some(p.convention),
            start: p.start.to_string(),
            end: p.end.to_string(),
            published: false,
            error: None,
        })
        .collect();
    let staged = Staged {
        agencies: Arc::new(agencies),
        catalog: Arc::new(catalog),
    };
    let tables =
        compute_and_publish(settings, store, &enc, record, lock, &staged, &periods).await?;
    if let Some(keep) = settings.raw_retention {
        record.counts.raw_runs_pruned = prune_raw(store, keep, &record.run_id).await?;
    }
    Ok(tables)
}

/// Step 2: pull agencies, catalog and changed cases; every body lands in `raw/` first.
///
/// The cases come in two windows: from the cursor minus the lookback up to the pull's fixed
/// upper bound (the run's start minus the clock-skew allowance), which alone moves the cursor;
/// then the tail past the bound, pulled and counted but never moving the cursor (a record
/// stamped in the future by a clock error at the source stays in the tail, and the run record
/// names how many and the most distant stamp).
async fn pull(
    settings: &Settings,
    store: &Store,
    record: &mut RunRecord,
    full_refresh: bool,
) -> Result<(Vec<Agency>, Vec<Procedure>, Spilled, Option<Cursor>)> {
    let run_id = record.run_id.clone();
    let skew = settings.clock_skew.as_micros() as i64;
    let started =
        crate::run_id::started_at(&run_id).unwrap_or_else(|| Utc::now().timestamp_micros());
    // Whole seconds, as the source's timestamps are.
    let bound = (started - skew).div_euclid(1_000_000) * 1_000_000;
    record.pull_bound = Some(source_timestamp(bound));
    let cursor = match state::read_cursor(store).await {
        Err(e) if full_refresh => {
            warn!(error = %format!("{e:#}"), "the cursor is unreadable; --full-refresh pulls everything and rewrites it");
            None
        }
        r => r?,
    };
    if let (Some(c), false) = (&cursor, full_refresh) {
        c.check_before(bound)?;
    }
    record.cursor_before = cursor.as_ref().map(|c| c.cursor.clone());
    let since = match (&cursor, full_refresh) {
        (Some(c), false) => Some(
            c.cursor_micros
                .saturating_sub(settings.lookback.as_micros() as i64),
        ),
        _ => None,
    };
    record.pulled_from = since.map(source_timestamp);
    let raw = RawLog::new(store.clone(), &run_id);
    let mut source = Source::new(settings.source.clone(), settings.token.expose())?;
    source.set_bound(bound);
    let listed = async {
        let a = source.list(&raw, "/v1/donvi").await?;
        let p = source.list(&raw, "/v1/tthc").await?;
        Ok::<_, source::SourceError>((a, p))
    }
    .await;
    if listed.is_err() {
        // What landed is listed in the run record, even on the way out.
        let _ = raw.settle().await;
        fill_pull_counts(&mut record.counts, &source.stats, &raw);
        record.files.extend(raw.files());
    }
    let (agencies, catalog) = listed?;
    let (agencies, skipped_a) = normalise::agencies(&agencies);
    let (catalog, skipped_p) = normalise::procedures(&catalog);
    if skipped_a + skipped_p > 0 {
        warn!(
            agencies = skipped_a,
            procedures = skipped_p,
            "catalog entries without a code, or repeated, were skipped"
        );
    }
    info!(agencies = agencies.len(), procedures = catalog.len(), from = ?record.pulled_from, to = ?record.pull_bound, "pulling cases");
    // Pages are normalised on a thread of their own while the next ones are fetched, and
    // their bodies land in raw/ in the background; both are waited for before anything else.
    let (pages, inbox) = std::sync::mpsc::sync_channel::<source::Page>(4);
    let mut batches = Batches::new(settings.pii_key.clone(), &run_id)?;
    let normalising = std::thread::Builder::new()
        .name("motcua-normalise".into())
        .spawn(move || -> Result<Spilled> {
            for page in inbox {
                batches.add_body(&page.raw_path, &page.body)?;
            }
            batches.finish()
        })
        .context("starting the normalising thread")?;
    let pulled = Instant::now();
    source.progress = progress::bar(None, "records", "pulling cases");
    let result = async {
        // A send fails only when the normaliser stopped; its error is reported below.
        let main = Window {
            from: since,
            to: Some(bound),
        };
        source
            .pull_cases(&raw, main, |page| {
                let _ = pages.send(page);
            })
            .await?;
        let tail = Window {
            from: Some(bound),
            to: None,
        };
        source
            .pull_cases(&raw, tail, |page| {
                let _ = pages.send(page);
            })
            .await
    }
    .await;
    drop(pages);
    source.progress.finish_and_clear();
    let landed = raw.settle().await;
    let normalised = publish::blocking(move || match normalising.join() {
        Ok(r) => r,
        Err(_) => anyhow::bail!("the normalising thread panicked"),
    })
    .await;
    fill_pull_counts(&mut record.counts, &source.stats, &raw);
    record.files.extend(raw.files());
    result?;
    landed?;
    let spilled = normalised.context("normalising the pulled records")?;
    let secs = pulled.elapsed().as_secs_f64();
    info!(
        pages = source.stats.pages,
        records = source.stats.records,
        retries = source.stats.retries,
        secs = format!("{secs:.1}"),
        per_second = (source.stats.records as f64 / secs.max(1e-3)) as u64,
        "pull done"
    );
    note_beyond_bound(record, &source.stats, bound, skew);
    record.cursor_after = source.stats.cursor_after.clone();
    record.counts.agencies = agencies.len() as u64;
    record.counts.procedures = catalog.len() as u64;
    Ok((agencies, catalog, spilled, cursor))
}

/// Counts the records pulled past the bound, and warns of those stamped in the future.
fn note_beyond_bound(record: &mut RunRecord, stats: &PullStats, bound: i64, skew: i64) {
    let c = &mut record.counts;
    c.records_after_bound = stats.beyond_bound.len() as u64;
    let now = Utc::now().timestamp_micros();
    let future: Vec<i64> = stats
        .beyond_bound
        .iter()
        .map(|(_, t)| *t)
        .filter(|t| *t > now.saturating_add(skew))
        .collect();
    c.future_stamped_records = future.len() as u64;
    c.future_stamp_max = future.iter().max().map(|t| source_timestamp(*t));
    if let Some(max) = &c.future_stamp_max {
        warn!(
            records = c.future_stamped_records,
            latest = %max,
            cursor_bound = %source_timestamp(bound),
            "records stamped in the future (a clock error at the source): staged and counted, but the cursor stays before the pull's bound; ask the case system's operators to correct NgayCapNhat"
        );
    } else if c.records_after_bound > 0 {
        info!(
            records = c.records_after_bound,
            "records changed since the run started: staged and counted; the next run reads them again"
        );
    }
}

/// Step 2 for `replay`: the same bodies, read back from `raw/` in arrival order.
async fn from_raw(
    settings: &Settings,
    store: &Store,
    record: &mut RunRecord,
    upto: Option<&str>,
) -> Result<(Vec<Agency>, Vec<Procedure>, Spilled)> {
    let runs = raw_runs(store).await?;
    if let Some(id) = upto {
        if !runs.iter().any(|r| r == id) {
            anyhow::bail!("no raw responses for run {id} under raw/: `motcua status` lists the runs (raw may have been pruned by raw_retention)");
        }
    }
    let runs: Vec<String> = runs
        .into_iter()
        .filter(|r| upto.is_none_or(|u| r.as_str() <= u))
        .collect();
    if runs.is_empty() {
        anyhow::bail!("raw/ holds no responses to replay: run `motcua run` first");
    }
    let mut jobs: Vec<(String, String)> = vec![];
    for run in &runs {
        let mut files = store.list(&format!("raw/run_id={run}")).await?;
        // Arrival order: the sequence number that starts every file name.
        files.sort_by_key(|(p, _)| p.rsplit('/').next().unwrap_or("").to_string());
        jobs.extend(files.into_iter().map(|(p, _)| (run.clone(), p)));
    }
    info!(
        runs = runs.len(),
        files = jobs.len(),
        "replaying raw responses"
    );
    let bar = progress::bar(Some(jobs.len() as u64), "files", "replaying raw responses");
    let mut batches = Batches::new(settings.pii_key.clone(), &record.run_id)?;
    let mut agencies = None;
    let mut catalog = None;
    // Files are read and normalised a few at a time on the blocking pool, then taken in order.
    let mut read = futures::stream::iter(jobs)
        .map(|(run, path)| {
            let key = settings.pii_key.clone();
            async move {
                let gz = store
                    .get(&path)
                    .await?
                    .with_context(|| format!("{path} vanished during replay"))?;
                publish::blocking(move || read_raw(&key, &run, &path, &gz)).await
            }
        })
        .buffered(4);
    while let Some(file) = read.next().await {
        bar.inc(1);
        match file? {
            RawFile::Unusable => continue,
            RawFile::Agencies(a) => agencies = Some(a),
            RawFile::Catalog(c) => catalog = Some(c),
            RawFile::Cases(n) => {
                record.counts.records_pulled += n.stats.records;
                batches.absorb(*n)?;
            }
            RawFile::Other => {}
        }
        record.counts.raw_files_replayed += 1;
    }
    bar.finish_and_clear();
    let agencies = agencies.context("the replayed runs hold no /v1/donvi response")?;
    let catalog = catalog.context("the replayed runs hold no /v1/tthc response")?;
    record.counts.agencies = agencies.len() as u64;
    record.counts.procedures = catalog.len() as u64;
    let spilled = publish::blocking(move || batches.finish()).await?;
    Ok((agencies, catalog, spilled))
}

/// The agencies and the catalog of the latest run whose raw responses hold them (for
/// `--from-staging`, which does not pull them).
async fn catalogs_from_raw(
    settings: &Settings,
    store: &Store,
) -> Result<(Vec<Agency>, Vec<Procedure>)> {
    let (mut agencies, mut catalog) = (None, None);
    for run in raw_runs(store).await?.iter().rev() {
        for (path, _) in store.list(&format!("raw/run_id={run}")).await? {
            let wanted = (path.contains("/v1-donvi/") && agencies.is_none())
                || (path.contains("/v1-tthc/") && catalog.is_none());
            if !wanted {
                continue;
            }
            let Some(gz) = store.get(&path).await? else {
                continue;
            };
            let (key, run, p) = (settings.pii_key.clone(), run.clone(), path.clone());
            match publish::blocking(move || read_raw(&key, &run, &p, &gz)).await? {
                RawFile::Agencies(a) => agencies = Some(a),
                RawFile::Catalog(c) => catalog = Some(c),
                _ => {}
            }
        }
        if let (Some(a), Some(c)) = (&agencies, &catalog) {
            return Ok((a.clone(), c.clone()));
        }
    }
    anyhow::bail!("--from-staging needs the agencies and catalog of an earlier pull, and raw/ holds no /v1/donvi and /v1/tthc responses (pruned by raw_retention?): run without --from-staging")
}

/// One raw file, read back.
enum RawFile {
    /// A torn body or a "system busy" answer, which the pull retried.
    Unusable,
    Agencies(Vec<Agency>),
    Catalog(Vec<Procedure>),
    /// A `/v1/hoso` page, normalised.
    Cases(Box<Normaliser>),
    Other,
}

/// Reads a raw file of run `run` at `path`: gunzip, classify the body as the pull did (a body
/// the pull retried or refused is not used), and normalise a page of cases (typed, straight
/// from the body; as a JSON tree when a record has an unusual shape).
fn read_raw(key: &normalise::PiiKey, run: &str, path: &str, gz: &[u8]) -> Result<RawFile> {
    let body = raw::gunzip(gz).with_context(|| format!("{path} is damaged"))?;
    if !matches!(
        source::classify_body(&body),
        source::BodyVerdict::Usable { .. }
    ) {
        return Ok(RawFile::Unusable);
    }
    let cases = path.contains("/v1-hoso/");
    if cases {
        let mut n = Normaliser::new(key.clone(), run);
        if n.add_page(path, &body).is_some() {
            return Ok(RawFile::Cases(Box::new(n)));
        }
    }
    let data = source::records_of(&body);
    Ok(if path.contains("/v1-donvi/") {
        RawFile::Agencies(normalise::agencies(&data).0)
    } else if path.contains("/v1-tthc/") {
        RawFile::Catalog(normalise::procedures(&data).0)
    } else if cases {
        let mut n = Normaliser::new(key.clone(), run);
        n.add_records(path, &data);
        RawFile::Cases(Box::new(n))
    } else {
        RawFile::Other
    })
}

/// The run ids under `raw/`, oldest first.
pub async fn raw_runs(store: &Store) -> Result<Vec<String>> {
    let mut runs = BTreeSet::new();
    for (p, _) in store.list("raw").await? {
        if let Some(rest) = p.strip_prefix("raw/run_id=") {
            if let Some((id, _)) = rest.split_once('/') {
                runs.insert(id.to_string());
            }
        }
    }
    Ok(runs.into_iter().collect())
}

/// Buckets merged at once: one, since polars already uses every core within a merge (two at
/// once measured no faster), and memory then holds the copies of a single bucket.
const STAGE_AT_ONCE: usize = 1;

/// Step 3: rejects, then the staging buckets, merged one bucket at a time from the spilled
/// batches. A replay rebuilds them from nothing.
async fn stage(
    store: &Store,
    enc: &ParquetEncoder,
    record: &mut RunRecord,
    normalised: Spilled,
    rebuild: bool,
) -> Result<()> {
    let run_id = record.run_id.clone();
    let c = &mut record.counts;
    c.valid_records = normalised.stats.valid;
    c.records_rejected = normalised.stats.rejected;
    c.rejected_by_reason = normalised.stats.rejected_by_reason.clone();
    if c.records_rejected > 0 {
        warn!(rejected = c.records_rejected, by_reason = ?c.rejected_by_reason, "records rejected; see quality/rejects/run_id={run_id}/");
    }
    let rejects = publish::rejects_frame(&normalised.rejects, &run_id)?;
    let f = publish::write_table(
        store,
        enc,
        &format!("quality/rejects/run_id={run_id}/part-0.parquet"),
        rejects,
    )
    .await?;
    record.files.push(f);
    let spill = Arc::new(normalised.spill);
    let buckets = spill.buckets();
    if rebuild {
        for (path, _) in store.list("cases").await? {
            let keep = buckets.iter().any(|b| path == bucket_path(*b));
            if !keep {
                store.delete(&path).await?;
            }
        }
    }
    let bar = progress::bar(Some(buckets.len() as u64), "buckets", "staging");
    let merged: Vec<Result<(WrittenFile, u64)>> = futures::stream::iter(buckets)
        .map(|bucket| {
            let (spill, bar) = (spill.clone(), bar.clone());
            async move {
                let path = bucket_path(bucket);
                let old = match rebuild {
                    false => store.get(&path).await?,
                    true => None,
                };
                let (merged, duplicates) = publish::blocking(move || {
                    let old = old
                        .map(publish::decode)
                        .transpose()
                        .with_context(|| format!("{} is not readable Parquet: run `motcua replay --all` to rebuild staging from raw", bucket_path(bucket)))?;
                    let new = spill.read(bucket)?;
                    let duplicates = (new.height() - new.column("case_id")?.n_unique()?) as u64;
                    Ok((normalise::upsert(old, new)?, duplicates))
                })
                .await?;
                let file = publish::write_table(store, enc, &path, merged).await?;
                bar.inc(1);
                Ok((file, duplicates))
            }
        })
        .buffer_unordered(STAGE_AT_ONCE)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut files = vec![];
    for m in merged {
        let (file, duplicates) = m?;
        record.counts.duplicates_dropped += duplicates;
        record.counts.staging_buckets_written += 1;
        files.push(file);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    record.files.extend(files);
    Ok(())
}

fn bucket_path(bucket: u32) -> String {
    format!("cases/bucket={bucket:02}/part-0.parquet")
}

/// Step 4: the cursor moves only once the pulled data is staged, and only forward — except
/// after a full refresh, which read everything before the bound and so sets it outright (a
/// cursor an earlier motcua moved into the future is mended that way).
async fn move_cursor(
    store: &Store,
    record: &mut RunRecord,
    before: Option<&Cursor>,
    full_refresh: bool,
) -> Result<()> {
    let after = record
        .cursor_after
        .as_deref()
        .and_then(normalise::parse_instant);
    let bound = record
        .pull_bound
        .as_deref()
        .and_then(normalise::parse_instant);
    match after {
        Some(a) if full_refresh || before.is_none_or(|c| a > c.cursor_micros) => {
            state::write_cursor(store, &Cursor::new(a, &record.run_id)).await?;
        }
        None if full_refresh
            && before.is_some_and(|c| bound.is_some_and(|b| c.cursor_micros >= b)) =>
        {
            // Nothing before the bound at all: a cursor past it is no cursor.
            store.delete(state::CURSOR_PATH).await?;
            record.cursor_after = None;
        }
        _ => record.cursor_after = record.cursor_before.clone(),
    }
    Ok(())
}

/// Nothing to publish: a replay whose run records list no published period.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NothingToPublish(pub String);

/// The periods a command publishes, each resolved under its convention.
async fn periods_of(settings: &Settings, store: &Store, command: &Command) -> Result<Vec<Period>> {
    let ours = |ids: Vec<PeriodId>| -> Vec<Period> {
        ids.iter().map(|p| p.resolve(settings.convention)).collect()
    };
    Ok(match command {
        Command::Run { periods, .. } => ours(periods.clone()),
        Command::Backfill {
            from, to, resume, ..
        } => {
            let all = period::range(*from, *to).map_err(anyhow::Error::msg)?;
            ours(if *resume {
                resume_periods(store, &all, &format!("{from}..{to}"), settings).await?
            } else {
                all
            })
        }
        Command::Replay { periods, .. } if !periods.is_empty() => ours(periods.clone()),
        Command::Replay { run_id, .. } => replayed_periods(store, run_id.as_deref()).await?,
    })
}

/// What a replay republishes by default: every period the run records (up to `upto`, or of
/// that run alone) say was published, each under the convention it was published with —
/// whether or not `kpi/` still holds it.
async fn replayed_periods(store: &Store, run: Option<&str>) -> Result<Vec<Period>> {
    let records = run_records(store).await?;
    let chosen: Vec<&RunRecord> = match run {
        Some(id) => {
            let r = records.iter().find(|r| r.run_id == id).ok_or_else(|| {
                NothingToPublish(format!("there is no run record _runs/{id}.json to say which periods run {id} published: give them with --period"))
            })?;
            vec![r]
        }
        None => records.iter().collect(),
    };
    // The latest run that published a period says under which convention.
    let mut latest: BTreeMap<PeriodId, Convention> = BTreeMap::new();
    for r in &chosen {
        let run_convention: Option<Convention> = r.period_convention.parse().ok();
        for p in r.periods.iter().filter(|p| p.published) {
            let (Ok(id), Some(c)) = (p.id.parse::<PeriodId>(), p.convention.or(run_convention))
            else {
                warn!(run = %r.run_id, period = %p.id, "a published period of a run record cannot be read; not republished");
                continue;
            };
            latest.insert(id, c);
        }
    }
    let whose = run.map_or("the run records under _runs/".to_string(), |id| {
        format!("run {id}")
    });
    if latest.is_empty() {
        return Err(NothingToPublish(format!(
            "{whose} list no published period, so a replay has nothing to republish: give the periods with --period"
        ))
        .into());
    }
    let present: BTreeSet<String> = published_periods(store)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let missing: Vec<String> = latest
        .keys()
        .map(|p| p.to_string())
        .filter(|p| !present.contains(p))
        .collect();
    info!(
        periods = ?latest.keys().map(|p| p.to_string()).collect::<Vec<_>>(),
        missing_from_kpi = ?missing,
        "republishing every period {whose} published"
    );
    Ok(latest.into_iter().map(|(id, c)| id.resolve(c)).collect())
}

/// Every readable run record under `_runs/`, oldest first; an unreadable one is named in a
/// warning and skipped.
async fn run_records(store: &Store) -> Result<Vec<RunRecord>> {
    let mut out = vec![];
    for (path, _) in store.list("_runs").await? {
        let Some(body) = store.get(&path).await? else {
            continue;
        };
        match serde_json::from_slice::<RunRecord>(&body) {
            Ok(r) => out.push(r),
            Err(e) => warn!(record = %path, error = %e, "a run record cannot be read; skipped"),
        }
    }
    out.sort_by(|a, b| (&a.started_at, &a.run_id).cmp(&(&b.started_at, &b.run_id)));
    Ok(out)
}

/// Periods of a backfill range that the last backfill of that range did not publish, or whose
/// partition files are missing.
async fn resume_periods(
    store: &Store,
    all: &[PeriodId],
    range: &str,
    settings: &Settings,
) -> Result<Vec<PeriodId>> {
    let last: Option<RunRecord> = run_records(store).await?.into_iter().rfind(|r| {
        r.command == "backfill"
            && r.range.as_deref() == Some(range)
            && r.period_convention == settings.convention.as_str()
            && r.outcome != "running"
    });
    let published: BTreeSet<String> = published_periods(store)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let failed: BTreeSet<String> = last
        .iter()
        .flat_map(|r| {
            r.periods
                .iter()
                .filter(|p| !p.published)
                .map(|p| p.id.clone())
        })
        .collect();
    let todo: Vec<PeriodId> = all
        .iter()
        .filter(|p| failed.contains(&p.to_string()) || !published.contains(&p.to_string()))
        .copied()
        .collect();
    info!(
        last_backfill = last.as_ref().map(|r| r.run_id.as_str()).unwrap_or("none"),
        periods = ?todo.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "resuming: only the periods that failed or are missing"
    );
    Ok(todo)
}

/// Published periods (every table present) with the time their level table was written.
pub async fn published_periods(store: &Store) -> Result<Vec<(String, chrono::DateTime<Utc>)>> {
    let mut found: BTreeMap<String, (usize, chrono::DateTime<Utc>)> = BTreeMap::new();
    for (path, _, modified) in store.list_meta("kpi").await? {
        let Some(id) = path.split('/').find_map(|s| s.strip_prefix("period=")) else {
            continue;
        };
        let e = found.entry(id.to_string()).or_insert((0, modified));
        e.0 += 1;
        e.1 = e.1.max(modified);
    }
    Ok(found
        .into_iter()
        .filter(|(_, (n, _))| *n == 3)
        .map(|(id, (_, t))| (id, t))
        .collect())
}

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

/// Buckets read and counted at once (at most; `concurrency` may ask for fewer): one decodes
/// while another is counted.
const COUNT_AT_ONCE: usize = 2;

/// Cases counted in one polars plan, at most (plus one bucket): small buckets are batched.
const COUNT_BATCH_ROWS: usize = 300_000;

/// Step 5, counting: every staging bucket is read (only the columns the KPIs need) and counted
/// for every period at once, `concurrency` buckets at a time, then the counts are summed.
async fn count_staging(
    store: &Store,
    periods: &[period::Period],
    concurrency: usize,
    bar: &indicatif::ProgressBar,
) -> Result<kpi::Totals> {
    let mut paths = vec![];
    for (path, _) in store.list("cases").await? {
        if path.ends_with("/part-0.parquet") {
            paths.push(path);
        }
    }
    bar.inc_length(paths.len() as u64);
    let mut decoded = futures::stream::iter(paths)
        .map(|path| async move {
            let b = store
                .get(&path)
                .await?
                .with_context(|| format!("{path} vanished while reading staging"))?;
            publish::blocking(move || {
                publish::decode_columns(b, &kpi::INPUT_COLUMNS).with_context(|| {
                    format!("{path} is not readable Parquet: run `motcua replay --all` to rebuild staging from raw")
                })
            })
            .await
        })
        .buffer_unordered(concurrency.clamp(1, COUNT_AT_ONCE));
    // Small buckets are counted together (each polars plan has a fixed cost), up to
    // COUNT_BATCH_ROWS cases at a time; a count runs while the next buckets are read.
    let mut acc = kpi::Accumulator::new(periods);
    let mut batch: Vec<DataFrame> = vec![];
    let mut rows = 0usize;
    let mut counting: Option<tokio::task::JoinHandle<Result<kpi::Partial>>> = None;
    loop {
        let next = decoded.next().await.transpose()?;
        let end = next.is_none();
        if let Some(df) = next {
            rows += df.height();
            batch.push(df);
            bar.inc(1);
        }
        if rows >= COUNT_BATCH_ROWS || (end && !batch.is_empty()) {
            let (frames, periods) = (std::mem::take(&mut batch), periods.to_vec());
            rows = 0;
            if let Some(c) = counting.take() {
                acc.add(c.await.context("a counting thread panicked")??);
            }
            counting = Some(tokio::task::spawn_blocking(move || {
                let mut frames = frames.into_iter();
                let mut df = frames.next().context("a counting batch holds no bucket")?;
                for f in frames {
                    df.vstack_mut_owned(f)?;
                }
                kpi::partial(&df, &periods)
            }));
        }
        if end {
            break;
        }
    }
    if let Some(c) = counting.take() {
        acc.add(c.await.context("a counting thread panicked")??);
    }
    publish::blocking(move || acc.total()).await
}

/// Steps 5 and 6: every period computed (a bounded number at once), all identities checked,
/// then each period published; a failed period is recorded and the others still go out.
async fn compute_and_publish(
    settings: &Settings,
    store: &Store,
    enc: &ParquetEncoder,
    record: &mut RunRecord,
    lock: &Lock,
    staged: &Staged,
    periods: &[Period],
) -> Result<Vec<KpiTables>> {
    let computed_at = Utc::now().timestamp_micros();
    let computing = Instant::now();
    let bar = progress::bar(
        Some(periods.len() as u64),
        "steps",
        "computing and publishing periods",
    );
    let totals = Arc::new(count_staging(store, periods, settings.concurrency, &bar).await?);
    record.counts.cases_in_staging = totals.cases()?;
    note_unknown_agencies(record, totals.cases_per_agency()?, &staged.agencies);
    let computed: Vec<(PeriodId, Result<KpiTables>)> = {
        let (totals, agencies, catalog) = (
            totals.clone(),
            staged.agencies.clone(),
            staged.catalog.clone(),
        );
        let run_id = record.run_id.clone();
        let ids: Vec<PeriodId> = periods.iter().map(|p| p.id).collect();
        publish::blocking(move || {
            Ok(ids
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    (
                        *p,
                        totals.tables(i, &agencies, &catalog, &run_id, computed_at),
                    )
                })
                .collect())
        })
        .await?
    };
    let mut tables = vec![];
    let mut failed = BTreeMap::new();
    for (p, r) in computed {
        match r {
            Ok(t) => {
                record.identity_checks.extend(t.identities.iter().cloned());
                tables.push(t);
            }
            Err(e) => {
                failed.insert(p.to_string(), format!("{e:#}"));
            }
        }
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
    record
        .timings_secs
        .insert("compute".into(), computing.elapsed().as_secs_f64());
    let publishing = Instant::now();
    lock.ensure_held().await?;
    let published: Vec<(String, Result<Vec<WrittenFile>>)> = futures::stream::iter(tables.iter())
        .map(|t| {
            let bar = bar.clone();
            async move {
                let r = publish::kpi_tables(store, enc, t).await;
                bar.inc(1);
                (t.period.id.to_string(), r)
            }
        })
        .buffer_unordered(settings.concurrency)
        .collect()
        .await;
    bar.finish_and_clear();
    record
        .timings_secs
        .insert("publish".into(), publishing.elapsed().as_secs_f64());
    for (id, r) in published {
        match r {
            Ok(files) => {
                record.files.extend(files);
                if let Some(pr) = record.periods.iter_mut().find(|p| p.id == id) {
                    pr.published = true;
                }
                info!(period = %id, "published");
            }
            Err(e) => {
                warn!(period = %id, error = %format!("{e:#}"), "period not published");
                failed.insert(id, format!("{e:#}"));
            }
        }
    }
    for (id, e) in &failed {
        if let Some(pr) = record.periods.iter_mut().find(|p| &p.id == id) {
            pr.error = Some(e.clone());
        }
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

/// Deletes the raw responses of runs older than `keep` (never this run's).
async fn prune_raw(store: &Store, keep: std::time::Duration, this_run: &str) -> Result<u64> {
    let cutoff = Utc::now() - chrono::Duration::from_std(keep)?;
    let mut pruned = 0;
    for run in raw_runs(store).await? {
        let Some(ts) = run
            .get(..15)
            .and_then(|t| chrono::NaiveDateTime::parse_from_str(t, "%Y%m%dT%H%M%S").ok())
        else {
            continue;
        };
        if run != this_run && ts.and_utc() < cutoff {
            for (p, _) in store.list(&format!("raw/run_id={run}")).await? {
                store.delete(&p).await?;
            }
            pruned += 1;
        }
    }
    if pruned > 0 {
        info!(
            runs = pruned,
            "pruned raw responses older than the retention"
        );
    }
    Ok(pruned)
}

fn fill_pull_counts(c: &mut Counts, s: &PullStats, raw: &RawLog) {
    c.requests = s.requests;
    c.retries = s.retries;
    c.pages = s.pages;
    c.records_pulled = s.records;
    c.bytes_pulled = s.bytes;
    c.raw_bytes_written = raw.bytes_written.load(std::sync::atomic::Ordering::Relaxed);
}

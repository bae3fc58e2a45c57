//! The orchestration of one run: source → raw → normalise → stage → KPI → publish, then the
//! run record.
//!
//! 1. take the single-writer lock `_state/lock` (or wait for it, or exit naming its holder);
//! 2. read the cursor; pull agencies, catalog and the cases changed since the cursor minus the
//!    lookback ([`pull`]; each page judged and normalised on threads of their own, `reading`),
//!    landing every body in `raw/` — or, for `replay`, read those bodies
//!    back ([`replay`]);
//! 3. reject (`quality/rejects/run_id=…`) and upsert the staging partitions `cases/` (only those the records fall in);
//! 4. move the cursor — only now that the data is safely staged;
//! 5. compute every period and check the identities of `kpi.md` on every row; if one breaks,
//!    the run fails and publishes no KPI at all ([`compute`]);
//! 6. publish the periods, each partition one file replaced by one write; a period that fails
//!    is recorded and the others still go out;
//! 7. prune raw older than the retention; write the run record `_runs/<run_id>.json`
//!    ([`record`]), whatever happened; release the lock — on Ctrl-C, SIGTERM and a lost lock
//!    too.

pub mod compute;
pub mod periods;
pub mod pull;
mod reading;
pub mod record;
pub mod replay;
pub mod workers;

use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use crate::config::Settings;
use crate::domain::agency::Catalog;
use crate::domain::period::{Period, PeriodId};
use crate::error::{Error, Result, Signal};
use crate::kpi::{Agencies, KpiTables};
use crate::normalise::{Agency, Procedure, Spilled};
use crate::parquet::ParquetEncoder;
use crate::state::{self, Lock};
use crate::store::Store;
use compute::{Catalogs, Procedures, Publishing};
use record::{CommandKind, Outcome, PeriodRecord, RunRecord};

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
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Run { .. } => CommandKind::Run,
            Command::Backfill { .. } => CommandKind::Backfill,
            Command::Replay { .. } => CommandKind::Replay,
        }
    }

    /// Whether it pulls, and whether everything.
    fn full_refresh(&self) -> Option<bool> {
        match self {
            Command::Run { full_refresh, .. } | Command::Backfill { full_refresh, .. } => {
                Some(*full_refresh)
            }
            Command::Replay { .. } => None,
        }
    }
}

/// How a run behaves around others.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Wait for the lock instead of exiting when another run holds it.
    pub wait: bool,
    /// `run` and `backfill` publish from staging as it stands, without pulling.
    pub from_staging: bool,
}

/// What a successful run leaves for the caller to show.
pub struct Done {
    pub record: RunRecord,
    pub tables: Vec<KpiTables>,
}

/// Waits for SIGINT or SIGTERM. Both are listened for from the call on, before the first
/// poll, so a signal sent as soon as the caller says it is ready is not missed.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = Signal> {
    #[cfg(unix)]
    let streams = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        match streams {
            (Ok(mut int), Ok(mut term)) => {
                return tokio::select! {
                    _ = int.recv() => Signal::Interrupt,
                    _ = term.recv() => Signal::Terminate,
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                warn!(error = %e, "cannot listen for signals; only Ctrl-C stops cleanly");
            }
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    }
}

/// Runs `command` under the lock and writes the run record, whatever happens.
pub async fn execute(settings: &Settings, command: &Command, opts: Options) -> Result<Done> {
    let run_id = crate::run_id::new();
    let store = Store::open(&settings.output, &run_id)?.for_province(settings.province.clone());
    let started = Instant::now();
    let mut record = RunRecord::start(
        &run_id,
        &settings.name,
        command.kind(),
        &settings.output,
        settings.convention,
    );
    if let Command::Backfill { from, to, .. } = command {
        record.range = Some(format!("{from}..{to}"));
    }
    info!(run_id = %run_id, command = %command.kind(), output = %settings.output, "run started");
    let result = locked(settings, &store, &mut record, command, opts).await;
    finish(&store, &mut record, started, &result).await;
    let tables = result?;
    Ok(Done { record, tables })
}

/// Takes the lock, runs the pipeline, and releases the lock on every way out: success,
/// failure, Ctrl-C, SIGTERM and a lost lock (each stops the pipeline, then the lock is released
/// here before the run record is written).
async fn locked(
    settings: &Settings,
    store: &Store,
    record: &mut RunRecord,
    command: &Command,
    opts: Options,
) -> Result<Vec<KpiTables>> {
    let kind = command.kind().as_str();
    let lock = tokio::select! {
        l = Lock::acquire(store, &record.run_id, kind, settings.lock_expiry, opts.wait) => l?,
        s = shutdown_signal() => return Err(Error::Interrupted(s)),
    };
    let result = tokio::select! {
        r = async {
            let stale = store.clean_stale_staging().await?;
            if stale > 0 {
                warn!(files = stale, "removed staging files a killed run left behind");
            }
            pipeline(settings, store, record, command, &lock, opts.from_staging).await
        } => r,
        s = shutdown_signal() => Err(Error::Interrupted(s)),
        // The heartbeat found the lock taken or could not renew it: stop before publishing.
        lost = lock.lost() => Err(lost.into()),
    };
    if let Err(e) = lock.release().await {
        warn!(error = %e, "could not release the lock; the next run takes it over when it expires");
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
    record.ended_at = Some(record::now());
    record.duration_secs = started.elapsed().as_secs_f64();
    record.outcome = match result {
        Ok(_) => Outcome::Succeeded,
        Err(Error::PeriodsFailed(_)) if record.periods.iter().any(|p| p.published) => {
            Outcome::Partial
        }
        Err(_) => Outcome::Failed,
    };
    if let Err(e) = result {
        record.error = Some(e.to_string());
    }
    // A run refused at the lock leaves no record: it did nothing, and the holder's record stands.
    if !matches!(result, Err(e) if e.is_lock_busy()) {
        if let Err(e) = record.write(store).await {
            warn!(error = %e, "could not write the run record");
        }
    }
    if let Err(e) = store.clean_staging().await {
        warn!(error = %e, "could not remove this run's staging folder");
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

/// Steps 2 to 7, in order: what a run does once it holds the lock.
async fn pipeline(
    settings: &Settings,
    store: &Store,
    record: &mut RunRecord,
    command: &Command,
    lock: &Lock,
    from_staging: bool,
) -> Result<Vec<KpiTables>> {
    let enc = ParquetEncoder::new()?;
    // Which periods to publish is known before any work: a replay with nothing to publish
    // says so before it reads raw/.
    let periods: Vec<Period> = periods::of(settings, store, command).await?;
    if command.full_refresh().is_some() {
        // A replay rebuilds staging anyway; any other run first brings an older layout up.
        migrate(store, &enc, record).await?;
    }
    let (agencies, procedures) = match (command.full_refresh(), from_staging) {
        (Some(_), true) => {
            let (agencies, reading) = as_staged(settings, store, record).await?;
            (agencies, Procedures::Reading(reading))
        }
        _ => {
            let (agencies, procedures) =
                pull_and_stage(settings, store, &enc, record, command, lock).await?;
            (agencies, Procedures::Read(Arc::new(procedures)))
        }
    };
    record.periods = periods.iter().map(PeriodRecord::of).collect();
    let restate_to = settings.restate_to.unwrap_or_else(today);
    record.restate_to = Some(restate_to);
    let mut catalogs = Catalogs {
        agencies: Arc::new(Agencies::new(Catalog::new(agencies))?),
        procedures,
        restate_to,
    };
    let out = Publishing {
        store,
        enc: &enc,
        lock,
        concurrency: settings.concurrency,
    };
    let tables = compute::compute_and_publish(&out, record, &mut catalogs, &periods).await?;
    if let Some(keep) = settings.raw_retention {
        record.counts.raw_runs_pruned =
            crate::raw::prune::prune(store, keep, &record.run_id).await?;
    }
    Ok(tables)
}

/// Staging of an older layout rebuilt in today's, once (see [`crate::stage::migrate`]).
async fn migrate(store: &Store, enc: &ParquetEncoder, record: &mut RunRecord) -> Result<()> {
    let started = Instant::now();
    if let Some(m) = crate::stage::migrate::migrate(store, enc).await? {
        note_staged(store, record, m).await?;
        record
            .timings_secs
            .insert("migrate".into(), started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Today in Vietnam.
fn today() -> chrono::NaiveDate {
    chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Ho_Chi_Minh)
        .date_naive()
}

/// `--from-staging`: no pull; the catalogs of the last pull (the procedures still being read),
/// the cursor untouched.
async fn as_staged(
    settings: &Settings,
    store: &Store,
    record: &mut RunRecord,
) -> Result<(Vec<Agency>, tokio::task::JoinHandle<Result<Vec<Procedure>>>)> {
    let cursor = match state::read_cursor(store).await {
        Ok(c) => c.map(|c| c.cursor),
        Err(e) => {
            warn!(error = %e, "the cursor is unreadable; publishing from staging does not need it");
            None
        }
    };
    record.cursor_before = cursor.clone();
    record.cursor_after = cursor;
    info!("publishing from staging as it stands: no pull");
    replay::catalogs_from_raw(settings, store).await
}

/// Steps 2 to 4: pull (or read raw back), stage, move the cursor.
async fn pull_and_stage(
    settings: &Settings,
    store: &Store,
    enc: &ParquetEncoder,
    record: &mut RunRecord,
    command: &Command,
    lock: &Lock,
) -> Result<(Vec<Agency>, Vec<Procedure>)> {
    let mut clock = Instant::now();
    let mut lap = |record: &mut RunRecord, stage: &str| {
        record
            .timings_secs
            .insert(stage.into(), clock.elapsed().as_secs_f64());
        clock = Instant::now();
    };
    let full_refresh = command.full_refresh();
    crate::memory::keep_freed();
    let read = match (command, full_refresh) {
        (Command::Replay { run_id, .. }, _) => {
            let (a, p, n) = replay::from_raw(settings, store, record, run_id.as_deref()).await?;
            lap(record, "replay_raw");
            (a, p, n, None)
        }
        (_, full) => {
            let p = pull::pull(settings, store, record, full.unwrap_or(false)).await?;
            lap(record, "pull");
            (p.agencies, p.catalog, p.cases, p.cursor)
        }
    };
    crate::memory::return_freed();
    let (agencies, procedures, cases, cursor) = read;
    lock.ensure_held().await?;
    let rebuild = full_refresh.is_none();
    if rebuild || cases.stats.valid >= crate::memory::MANY_RECORDS {
        crate::memory::keep_freed_while_staging_many();
    }
    stage(store, enc, record, cases, rebuild).await?;
    crate::memory::return_freed();
    lap(record, "stage");
    if let Some(full) = full_refresh {
        pull::move_cursor(store, record, cursor.as_ref(), full).await?;
    }
    Ok((agencies, procedures))
}

/// Step 3: the rejects, then the staging partitions merged from the spilled records. A replay
/// rebuilds them from nothing.
async fn stage(
    store: &Store,
    enc: &ParquetEncoder,
    record: &mut RunRecord,
    cases: Spilled,
    rebuild: bool,
) -> Result<()> {
    let c = &mut record.counts;
    c.valid_records = cases.stats.valid;
    c.records_rejected = cases.stats.rejected;
    c.rejected_by_reason = cases.stats.rejected_by_reason.clone();
    if c.records_rejected > 0 {
        warn!(rejected = c.records_rejected, by_reason = ?c.rejected_by_reason, "records rejected; see {}", crate::publish::rejects::path(&record.run_id));
    }
    let file = crate::publish::rejects::publish(store, enc, &cases.rejects, &record.run_id).await?;
    record.files.push(file);
    let merged = crate::stage::merge(store, enc, Arc::new(cases.spill), rebuild).await?;
    record.counts.duplicates_dropped += merged.duplicates;
    note_staged(store, record, merged).await
}

/// What a merge (or a migration) wrote, and the size of staging after it.
async fn note_staged(
    store: &Store,
    record: &mut RunRecord,
    merged: crate::stage::Merged,
) -> Result<()> {
    let c = &mut record.counts;
    c.staging_partitions_written += merged.files.len() as u64;
    c.staging_bytes_written += merged.files.iter().map(|f| f.bytes).sum::<u64>();
    c.staging_files_removed += merged.removed;
    record.files.extend(merged.files);
    let all = store.list("cases").await?;
    record.counts.staging_partitions = all.len() as u64;
    record.counts.staging_bytes = all.iter().map(|(_, n)| n).sum();
    Ok(())
}

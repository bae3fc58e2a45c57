//! Step 2 of a run: read the cursor, pull agencies, catalog and the cases changed since the
//! cursor minus the lookback — every body landing in `raw/` first, every page judged on a thread
//! of its own and normalised on another while the next is fetched — and, once staged, move the
//! cursor.
//!
//! The cases come in two windows: from the cursor minus the lookback up to the pull's fixed
//! upper bound (the run's start minus the clock-skew allowance), which alone moves the cursor;
//! then the tail past the bound, pulled and counted but never moving the cursor (a record
//! stamped in the future by a clock error at the source stays in the tail, and the run record
//! names how many and the most distant stamp).

use std::time::Instant;

use chrono::Utc;
use tracing::{info, warn};

use super::reading::Normalising;
use super::record::RunRecord;
use crate::config::Settings;
use crate::error::{Result, SourceError};
use crate::normalise::{agencies, procedures, Agency, Batches, Procedure, Spilled};
use crate::parquet::blocking;
use crate::raw::RawLog;
use crate::source::{PullStats, Source, Window};
use crate::state::{self, Cursor};
use crate::store::Store;
use crate::wire::{parse_instant, source_timestamp, Endpoint};

/// What a pull brings: the catalogs, the normalised cases, and the cursor it started from.
pub struct Pulled {
    pub agencies: Vec<Agency>,
    pub catalog: Vec<Procedure>,
    pub cases: Spilled,
    pub cursor: Option<Cursor>,
}

/// The pull's upper bound: the run's start minus the clock-skew allowance, in whole seconds
/// as the source's timestamps are.
fn bound_of(settings: &Settings, run_id: &str) -> i64 {
    let started =
        crate::run_id::started_at(run_id).unwrap_or_else(|| Utc::now().timestamp_micros());
    let skew = settings.clock_skew.as_micros() as i64;
    started.saturating_sub(skew).div_euclid(1_000_000) * 1_000_000
}

/// The cursor to start from: checked, and before the bound (a full refresh needs none, so a
/// damaged one is only a warning there).
async fn starting_cursor(store: &Store, bound: i64, full_refresh: bool) -> Result<Option<Cursor>> {
    let cursor = match state::read_cursor(store).await {
        Err(e) if full_refresh => {
            warn!(error = %e, "the cursor is unreadable; --full-refresh pulls everything and rewrites it");
            None
        }
        r => r?,
    };
    if let (Some(c), false) = (&cursor, full_refresh) {
        c.check_before(bound)?;
    }
    Ok(cursor)
}

/// Pulls what changed (everything with `full_refresh`).
pub async fn pull(
    settings: &Settings,
    store: &Store,
    record: &mut RunRecord,
    full_refresh: bool,
) -> Result<Pulled> {
    let bound = bound_of(settings, &record.run_id);
    record.pull_bound = Some(source_timestamp(bound));
    let cursor = starting_cursor(store, bound, full_refresh).await?;
    record.cursor_before = cursor.as_ref().map(|c| c.cursor.clone());
    let since = match (&cursor, full_refresh) {
        (Some(c), false) => Some(
            c.cursor_micros
                .saturating_sub(settings.lookback.as_micros() as i64),
        ),
        _ => None,
    };
    record.pulled_from = since.map(source_timestamp);
    let raw = RawLog::new(store.clone(), &record.run_id);
    let mut source = Source::new(settings.source.clone(), settings.token.expose())?;
    source.set_bound(bound);
    let listed = catalogs(&mut source, &raw).await;
    if listed.is_err() {
        // What landed is listed in the run record, even on the way out.
        let _ = raw.settle().await;
        fill_counts(record, &source.stats, &raw);
    }
    let (agencies, catalog) = listed?;
    info!(agencies = agencies.len(), procedures = catalog.len(), from = ?record.pulled_from, to = ?record.pull_bound, "pulling cases");
    let cases = cases(settings, &mut source, &raw, record, since, bound).await?;
    note_beyond_bound(
        record,
        &source.stats,
        bound,
        settings.clock_skew.as_micros() as i64,
    );
    record.cursor_after = source.stats.cursor_after.clone();
    record.counts.agencies = agencies.len() as u64;
    record.counts.procedures = catalog.len() as u64;
    Ok(Pulled {
        agencies,
        catalog,
        cases,
        cursor,
    })
}

/// `/v1/donvi` and `/v1/tthc`, read.
async fn catalogs(
    source: &mut Source,
    raw: &RawLog,
) -> Result<(Vec<Agency>, Vec<Procedure>), SourceError> {
    let read = agencies(&source.list(raw, Endpoint::Agencies).await?);
    let (catalog, skipped_p) = procedures(&source.list(raw, Endpoint::Catalog).await?);
    if read.skipped + skipped_p > 0 {
        warn!(
            agencies = read.skipped,
            procedures = skipped_p,
            "catalog entries without a code, or repeated, were skipped"
        );
    }
    for (agency, field, value) in &read.unreadable {
        warn!(agency = %agency, field = %field, value = %value, "an agency's validity date is not a date; taken as absent");
    }
    Ok((read.agencies, catalog))
}

/// The cases of both windows. Pages are normalised on a thread of their own while the next
/// ones are fetched, and their bodies land in `raw/` in the background; both are waited for
/// before anything else.
async fn cases(
    settings: &Settings,
    source: &mut Source,
    raw: &RawLog,
    record: &mut RunRecord,
    since: Option<i64>,
    bound: i64,
) -> Result<Spilled> {
    let normalising = Normalising::start(Batches::new(settings.pii_key.clone(), &record.run_id)?)?;
    source.judge_cases_by(normalising.judge());
    let started = Instant::now();
    source.progress = crate::progress::bar(None, "records", "pulling cases");
    // Each page was judged, and kept, by the judging thread as it came.
    let mut hand_on = |_page| ();
    let main = Window {
        from: since,
        to: Some(bound),
    };
    let tail = Window {
        from: Some(bound),
        to: None,
    };
    let mut result = source.pull_cases(raw, main, &mut hand_on).await;
    if result.is_ok() {
        result = source.pull_cases(raw, tail, &mut hand_on).await;
    }
    source.progress.finish_and_clear();
    let landed = raw.settle().await;
    let normalised = blocking(move || normalising.finish()).await;
    fill_counts(record, &source.stats, raw);
    // A reading thread that stopped says why; the pull then only says that it stopped.
    let spilled = match (result, normalised) {
        (_, Err(e)) => return Err(e),
        (Err(e), _) => return Err(e.into()),
        (Ok(()), Ok(spilled)) => spilled,
    };
    landed?;
    let secs = started.elapsed().as_secs_f64();
    info!(
        pages = source.stats.pages,
        records = source.stats.records,
        retries = source.stats.retries,
        secs = format!("{secs:.1}"),
        per_second = (source.stats.records as f64 / secs.max(1e-3)) as u64,
        "pull done"
    );
    Ok(spilled)
}

/// The pull's counts and the raw files it landed, into the run record.
fn fill_counts(record: &mut RunRecord, s: &PullStats, raw: &RawLog) {
    let c = &mut record.counts;
    c.requests = s.requests;
    c.retries = s.retries;
    c.pages = s.pages;
    c.records_pulled = s.records;
    c.bytes_pulled = s.bytes;
    c.raw_bytes_written = raw.bytes_written();
    record.files.extend(raw.files());
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

/// Step 4: the cursor moves only once the pulled data is staged, and only forward — except
/// after a full refresh, which read everything before the bound and so sets it outright (a
/// cursor an earlier motcua moved into the future is mended that way).
pub async fn move_cursor(
    store: &Store,
    record: &mut RunRecord,
    before: Option<&Cursor>,
    full_refresh: bool,
) -> Result<()> {
    let after = record.cursor_after.as_deref().and_then(parse_instant);
    let bound = record.pull_bound.as_deref().and_then(parse_instant);
    let past_bound = |c: &Cursor| bound.is_some_and(|b| c.cursor_micros >= b);
    match after {
        Some(a) if full_refresh || before.is_none_or(|c| a > c.cursor_micros) => {
            state::write_cursor(store, &Cursor::new(a, &record.run_id)).await?;
        }
        None if full_refresh && before.is_some_and(past_bound) => {
            // Nothing before the bound at all: a cursor past it is no cursor.
            store.delete(state::CURSOR_PATH).await?;
            record.cursor_after = None;
        }
        _ => record.cursor_after = record.cursor_before.clone(),
    }
    Ok(())
}

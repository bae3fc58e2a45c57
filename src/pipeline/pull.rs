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

use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use tracing::{info, warn};

use super::record::RunRecord;
use crate::config::Settings;
use crate::error::{Doing, Error, Result, SourceError};
use crate::normalise::{agencies, procedures, Agency, Batches, Procedure, Spilled};
use crate::parquet::blocking;
use crate::raw::RawLog;
use crate::source::{judge_page, Judge, Judging, PullStats, Source, Window};
use crate::state::{self, Cursor};
use crate::store::Store;
use crate::wire::record::Records;
use crate::wire::{parse_instant, source_timestamp, BodyVerdict, Endpoint};

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

/// The records of a case body, read from it and borrowing it (`None`: a record of a shape the
/// typed reader does not take; the body is then read again as JSON trees).
type PageRecords<'a> = Option<Records<'a>>;

self_cell::self_cell!(
    /// A case body and the records the judging thread read from it, on their way to the
    /// normalising thread.
    struct ReadPage {
        owner: Bytes,
        #[covariant]
        dependent: PageRecords,
    }
);

/// Case bodies in to be judged (already in flight on the pull's side: see `Source`), and
/// judged bodies waiting to be normalised, at most.
const PAGES_WAITING: usize = 2;

/// What the normalising thread does with each usable page, in order, and at the end.
trait PageSink: Send + 'static {
    type Done: Send + 'static;
    fn add(&mut self, raw_path: &str, records: PageRecords<'_>, body: &[u8]) -> Result<()>;
    fn finish(self) -> Result<Self::Done>;
}

impl PageSink for Batches {
    type Done = Spilled;
    fn add(&mut self, raw_path: &str, records: PageRecords<'_>, body: &[u8]) -> Result<()> {
        self.add_read(raw_path, records, body)
    }
    fn finish(self) -> Result<Spilled> {
        Batches::finish(self)
    }
}

/// Two threads that judge the pages they are sent, in order, and normalise those found usable.
/// Each body is read once, by the judging thread, which sends the verdict and stamps back to
/// the pull at once (the next request pages on them) and hands the body with its records to
/// the normalising thread. The pull's next request waits only for a body to be read, never for
/// the last to be normalised: with one thread for both, the next page was judged only after the
/// last was normalised, and the two cores stood idle an eighth of the pull. Dropped before
/// [`Normalising::finish`] (a run stopped by a signal or an error part way through the pull),
/// it stops both threads and waits for them, so the records spilled so far, and their scratch
/// folder, are removed before the run exits.
struct Normalising<T> {
    pages: Option<Arc<SyncSender<Judging>>>,
    judging: Option<std::thread::JoinHandle<()>>,
    normalising: Option<std::thread::JoinHandle<Result<T>>>,
}

impl<T: Send + 'static> Normalising<T> {
    fn start<S: PageSink<Done = T>>(mut sink: S) -> Result<Normalising<T>> {
        let (pages, inbox) = std::sync::mpsc::sync_channel::<Judging>(PAGES_WAITING);
        let (judged, to_normalise) =
            std::sync::mpsc::sync_channel::<(String, ReadPage)>(PAGES_WAITING);
        let normalising = std::thread::Builder::new()
            .name("motcua-normalise".into())
            .spawn(move || {
                for (raw_path, mut page) in to_normalise {
                    page.with_dependent_mut(|body, records| {
                        sink.add(&raw_path, records.take(), body)
                    })?;
                }
                sink.finish()
            })
            .doing("starting the normalising thread")?;
        let judging = std::thread::Builder::new()
            .name("motcua-judge".into())
            .spawn(move || {
                for page in inbox {
                    let mut answer = None;
                    let read = ReadPage::new(page.body, |body| {
                        let (verdict, stamps, records) = judge_page(body, page.bound);
                        answer = Some((verdict, stamps));
                        records
                    });
                    let Some((verdict, stamps)) = answer else {
                        continue;
                    };
                    let usable = matches!(verdict, BodyVerdict::Usable { .. });
                    // The pull may have stopped waiting (a signal): nothing to answer then.
                    let _ = page.reply.send((verdict, stamps));
                    // A normalising thread that stopped (an error) ends the judging: the pull
                    // then finds its inbox closed, and the error is the normalising thread's.
                    if usable && judged.send((page.raw_path, read)).is_err() {
                        break;
                    }
                }
            })
            .doing("starting the judging thread")?;
        Ok(Normalising {
            pages: Some(Arc::new(pages)),
            judging: Some(judging),
            normalising: Some(normalising),
        })
    }

    /// Where the pull sends its case bodies.
    fn judge(&self) -> Judge {
        self.pages.as_ref().map(Arc::downgrade).unwrap_or_default()
    }

    /// No more pages: waits for both threads and returns what was normalised.
    fn finish(mut self) -> Result<T> {
        match self.stop() {
            (Ok(()), Some(Ok(r))) => r,
            _ => Err(Error::Internal("a normalising thread panicked".into())),
        }
    }

    /// Closes the inbox and waits for the judging thread, then (its pages handed on) for the
    /// normalising thread.
    fn stop(
        &mut self,
    ) -> (
        std::thread::Result<()>,
        Option<std::thread::Result<Result<T>>>,
    ) {
        drop(self.pages.take());
        let judging = self.judging.take().map_or(Ok(()), |t| t.join());
        (judging, self.normalising.take().map(|t| t.join()))
    }
}

impl<T> Drop for Normalising<T> {
    fn drop(&mut self) {
        drop(self.pages.take());
        let _ = self.judging.take().map(|t| t.join());
        let _ = self.normalising.take().map(|t| t.join());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Stamps;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    /// The pages a [`Seen`] was given: path and records.
    type Pages = Arc<Mutex<Vec<(String, usize)>>>;

    /// A sink that notes the pages it is given (path, records), fails on the page at `fail_on`,
    /// and says whether it was finished.
    struct Seen {
        pages: Pages,
        fail_on: Option<&'static str>,
        ended: Arc<AtomicBool>,
    }

    impl PageSink for Seen {
        type Done = usize;
        fn add(&mut self, raw_path: &str, records: PageRecords<'_>, _: &[u8]) -> Result<()> {
            if self.fail_on == Some(raw_path) {
                return Err(Error::Internal("the spill is full".into()));
            }
            let n = records.map_or(usize::MAX, |r| r.0.len());
            self.pages.lock().unwrap().push((raw_path.into(), n));
            Ok(())
        }
        fn finish(self) -> Result<usize> {
            self.ended.store(true, Ordering::SeqCst);
            Ok(self.pages.lock().unwrap().len())
        }
    }

    fn seen(fail_on: Option<&'static str>) -> (Seen, Pages, Arc<AtomicBool>) {
        let (pages, ended) = (Arc::default(), Arc::new(AtomicBool::new(false)));
        let sink = Seen {
            pages: Arc::clone(&pages),
            fail_on,
            ended: Arc::clone(&ended),
        };
        (sink, pages, ended)
    }

    /// A usable page of `n` records, stamped a minute apart from 2024-07-01 09:00.
    fn page(n: usize) -> Bytes {
        let data: Vec<_> = (0..n)
            .map(|i| {
                serde_json::json!({"MaHoSo": format!("C-{i}"), "MaDonVi": "X", "TrangThaiHoSo": "4",
                    "NgayTiepNhan": "20240701080000", "NgayCapNhat": format!("202407010{}{i:02}00", 9)})
            })
            .collect();
        let body = serde_json::json!({"error_code": "0", "message": "", "total": n, "data": data});
        Bytes::from(body.to_string())
    }

    /// Sends a body as the pull does and waits for its verdict (`None`: the reader stopped).
    fn send(judge: &Judge, path: &str, body: Bytes) -> Option<(BodyVerdict, Stamps)> {
        let (reply, judged) = tokio::sync::oneshot::channel();
        let page = Judging {
            raw_path: path.into(),
            body,
            bound: None,
            reply,
        };
        let sent = judge
            .upgrade()
            .is_some_and(|inbox| inbox.send(page).is_ok());
        sent.then(|| judged.blocking_recv().ok()).flatten()
    }

    /// Every body is answered, in order, with its verdict and stamps; only usable pages reach
    /// the normalising thread, in the order sent, with the records the judging thread read.
    #[test]
    fn pages_are_judged_then_normalised_in_order() {
        let (sink, pages, ended) = seen(None);
        let n = Normalising::start(sink).unwrap();
        let judge = n.judge();
        let bodies = [
            ("p1", page(3)),
            (
                "busy",
                Bytes::from(r#"{"error_code":"1","message":"busy"}"#),
            ),
            ("torn", Bytes::from("<html>502</html>")),
            ("p2", page(2)),
            ("p3", page(0)),
        ];
        let mut answers = vec![];
        for (path, body) in bodies {
            let (verdict, stamps) = send(&judge, path, body).expect("answered");
            answers.push((
                matches!(verdict, BodyVerdict::Usable { .. }),
                stamps.records,
            ));
        }
        assert_eq!(
            answers,
            [(true, 3), (false, 0), (false, 0), (true, 2), (true, 0)]
        );
        assert_eq!(n.finish().unwrap(), 3);
        assert!(ended.load(Ordering::SeqCst));
        let pages = pages.lock().unwrap().clone();
        assert_eq!(
            pages,
            [("p1".into(), 3), ("p2".into(), 2), ("p3".into(), 0)]
        );
        assert!(
            judge.upgrade().is_none(),
            "the inbox closed with the threads"
        );
    }

    /// A normalising thread that fails (a full temp dir) stops the pull: a later body finds
    /// the reader stopped rather than waiting for ever, and the pull gets the sink's error.
    #[test]
    fn a_failing_normaliser_stops_the_pull_with_its_error() {
        let (sink, pages, _) = seen(Some("p2"));
        let n = Normalising::start(sink).unwrap();
        let judge = n.judge();
        assert!(send(&judge, "p1", page(1)).is_some());
        let stopped = (2..40).find(|i| send(&judge, &format!("p{i}"), page(1)).is_none());
        assert!(stopped.is_some(), "the pull learns that the reader stopped");
        let e = n.finish().unwrap_err();
        assert!(e.to_string().contains("the spill is full"), "{e}");
        assert_eq!(pages.lock().unwrap().clone(), [("p1".to_string(), 1)]);
    }

    /// Dropped part way (a signal), it ends both threads, and the sink is finished (so what
    /// it spilled is dropped with its scratch folder) before the drop returns.
    #[test]
    fn dropped_part_way_it_ends_both_threads() {
        let (sink, pages, ended) = seen(None);
        let n = Normalising::start(sink).unwrap();
        let judge = n.judge();
        assert!(send(&judge, "p1", page(2)).is_some());
        drop(n);
        assert!(ended.load(Ordering::SeqCst));
        assert_eq!(pages.lock().unwrap().len(), 1);
        assert!(send(&judge, "p2", page(1)).is_none());
    }
}

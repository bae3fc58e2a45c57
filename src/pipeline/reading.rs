//! The pull's two reading threads: one judges each `/v1/hoso` body as it lands (its verdict
//! and the stamps the next request pages on, sent back to the pull at once) and hands the body
//! with the records read from it to the other, which normalises them in order (see
//! [`Normalising`]).

use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{Doing, Error, Result};
use crate::normalise::{Batches, Spilled};
use crate::source::{judge_page, Judge, Judging};
use crate::wire::record::Records;
use crate::wire::BodyVerdict;

/// The records of a case body, read from it and borrowing it (`None`: a record of a shape the
/// typed reader does not take; the body is then read again as JSON trees).
pub type PageRecords<'a> = Option<Records<'a>>;

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
pub trait PageSink: Send + 'static {
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
pub struct Normalising<T> {
    pages: Option<Arc<SyncSender<Judging>>>,
    judging: Option<std::thread::JoinHandle<()>>,
    normalising: Option<std::thread::JoinHandle<Result<T>>>,
}

impl<T: Send + 'static> Normalising<T> {
    pub fn start<S: PageSink<Done = T>>(mut sink: S) -> Result<Normalising<T>> {
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
    pub fn judge(&self) -> Judge {
        self.pages.as_ref().map(Arc::downgrade).unwrap_or_default()
    }

    /// No more pages: waits for both threads and returns what was normalised.
    pub fn finish(mut self) -> Result<T> {
        match self.stop() {
            (Ok(()), Some(Ok(r))) => r,
            _ => Err(Error::Internal("a normalising thread panicked".into())),
        }
    }
}

impl<T> Normalising<T> {
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
        drop(self.stop());
    }
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

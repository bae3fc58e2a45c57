//! Paging `/v1/hoso` by cursor within a [`Window`] of `NgayCapNhat` (see the module notes of
//! [`super`]): each request asks again from the greatest stamp seen, inclusive; a page full of
//! one second is read as a closed window by page number, pass after pass.

use std::collections::HashSet;
use std::time::Instant;

use serde::Deserialize;
use tracing::{debug, info};

use super::{describe, Response, Source};
use crate::error::SourceError;
use crate::raw::RawLog;
use crate::wire::record::Records;
use crate::wire::{
    instant, records_of, scalar_instant, scalar_text, source_timestamp, text, CaseRecord, Endpoint,
    Envelope, Scalar,
};

/// A window of `NgayCapNhat` to pull: from `from` (inclusive; everything when `None`) to `to`
/// (exclusive; no end when `None`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

impl Window {
    /// Every record.
    pub const ALL: Window = Window {
        from: None,
        to: None,
    };
}

/// What the pull needs of a page: how many records, the greatest readable `NgayCapNhat`
/// (to page on), the greatest before `bound` (the cursor), and the records stamped at or after
/// `bound` (key and stamp).
#[derive(Debug, Default, PartialEq)]
pub struct Stamps {
    pub records: usize,
    pub last: Option<i64>,
    pub last_before_bound: Option<i64>,
    pub beyond: Vec<(String, i64)>,
}

impl Stamps {
    fn add(&mut self, key: Option<String>, stamp: Option<i64>, bound: Option<i64>) {
        self.records += 1;
        let Some(t) = stamp else { return };
        self.last = self.last.max(Some(t));
        if bound.is_some_and(|b| t >= b) {
            self.beyond.push((key.unwrap_or_default(), t));
        } else {
            self.last_before_bound = self.last_before_bound.max(Some(t));
        }
    }
}

/// What the cursor reads of a record: its key and `NgayCapNhat`, every other field skipped.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Stamp<'a> {
    #[serde(rename = "MaHoSo", borrow)]
    key: Option<Scalar<'a>>,
    #[serde(rename = "NgayCapNhat", borrow)]
    updated: Option<Scalar<'a>>,
}

impl Stamps {
    /// The [`Stamps`] of records read typed.
    pub fn of(records: Vec<Stamp>, bound: Option<i64>) -> Stamps {
        let mut out = Stamps::default();
        for s in records {
            let t = scalar_instant(s.updated).ok().flatten();
            let beyond = bound.is_some_and(|b| t.is_some_and(|t| t >= b));
            out.add(beyond.then(|| scalar_text(s.key)).flatten(), t, bound);
        }
        out
    }
}

impl Stamps {
    /// The [`Stamps`] of case records read in full (by the pull's judging thread).
    pub fn of_cases(records: &[CaseRecord], bound: Option<i64>) -> Stamps {
        let mut out = Stamps::default();
        for r in records {
            let t = scalar_instant(r.updated.clone()).ok().flatten();
            let beyond = bound.is_some_and(|b| t.is_some_and(|t| t >= b));
            out.add(
                beyond.then(|| scalar_text(r.case_id.clone())).flatten(),
                t,
                bound,
            );
        }
        out
    }
}

/// A `/v1/hoso` body read once, in full, for all a pull needs of it: its verdict
/// ([`crate::wire::classify_body`]'s), the [`Stamps`] the next request pages on (when usable),
/// and its records typed (`None` when a record has a shape the typed reader does not take: they
/// are then read as JSON trees, stamps and records alike).
pub fn judge_page(
    body: &[u8],
    bound: Option<i64>,
) -> (crate::wire::BodyVerdict, Stamps, Option<Records<'_>>) {
    let (verdict, records) = crate::wire::classify_reading::<Records>(body);
    let stamps = match (&verdict, &records) {
        (crate::wire::BodyVerdict::Usable { .. }, Some(r)) => Stamps::of_cases(&r.0, bound),
        (crate::wire::BodyVerdict::Usable { .. }, None) => stamps(body, bound),
        _ => Stamps::default(),
    };
    (verdict, stamps, records)
}

/// The [`Stamps`] of a body. Read typed, skipping every other field; as JSON trees if a record
/// is odd. (The pull reads them with the envelope, in one pass: [`crate::wire::classify_reading`].)
pub fn stamps(body: &[u8], bound: Option<i64>) -> Stamps {
    match crate::wire::from_json::<Envelope<Vec<Stamp>>>(body) {
        Ok(p) => Stamps::of(p.data.unwrap_or_default(), bound),
        Err(_) => {
            let mut out = Stamps::default();
            for d in records_of(body) {
                let t = instant(d.get("NgayCapNhat")).ok().flatten();
                out.add(text(d.get("MaHoSo")), t, bound);
            }
            out
        }
    }
}

impl Source {
    /// Pulls every case record of `window`, handing each page's records and raw path to
    /// `on_page` in arrival order.
    pub async fn pull_cases(
        &mut self,
        raw: &RawLog,
        window: Window,
        mut on_page: impl FnMut(Response),
    ) -> Result<(), SourceError> {
        let size = self.cfg.page_size;
        let mut from = window.from;
        let started = Instant::now();
        let first_page = self.stats.pages;
        loop {
            if let (Some(f), Some(t)) = (from, window.to) {
                if f >= t {
                    return Ok(());
                }
            }
            let query = cases_query(from, window.to, 1, size);
            let r = self.fetch(raw, Endpoint::Cases, &query).await?;
            if self.stats.pages == first_page {
                if let Some(total) = r.total {
                    let before = self.progress.length().unwrap_or(0);
                    self.progress.set_length(before + total);
                }
            }
            let (n, last) = (r.stamps.records, r.stamps.last);
            self.take(r, &mut on_page);
            if self.stats.pages.is_multiple_of(50) {
                let rate = self.stats.records as f64 / started.elapsed().as_secs_f64().max(1e-3);
                info!(
                    pages = self.stats.pages,
                    records = self.stats.records,
                    per_second = rate as u64,
                    "pulling cases"
                );
            }
            if (n as u32) < size {
                return Ok(());
            }
            // The next cursor: the greatest readable NgayCapNhat of this page.
            match (last, from) {
                (None, _) => {
                    return Err(SourceError::NoCursor {
                        request: describe(Endpoint::Cases, &query),
                    })
                }
                (Some(l), Some(f)) if l <= f => {
                    // A page full of one second: read that second as a window, then go past it.
                    self.read_second(raw, f, window.to, &mut on_page).await?;
                    from = Some(f + 1_000_000);
                }
                (Some(l), _) => from = Some(l),
            }
        }
    }

    /// Counts a page and hands it on.
    fn take(&mut self, mut r: Response, on_page: &mut impl FnMut(Response)) {
        let s = std::mem::take(&mut r.stamps);
        self.stats.pages += 1;
        self.stats.records += s.records as u64;
        self.progress.inc(s.records as u64);
        if let Some(t) = s.last_before_bound {
            if self.stats.cursor_after_micros.is_none_or(|c| t > c) {
                self.stats.cursor_after_micros = Some(t);
                self.stats.cursor_after = Some(source_timestamp(t));
            }
        }
        self.stats.beyond_bound.extend(s.beyond);
        on_page(r);
    }

    /// Reads every record whose `NgayCapNhat` falls in the second starting at `at` (and before
    /// `to`), by page number, repeating passes until one brings no record not seen before (a
    /// record updated during a pass leaves the window and is read later, past it).
    async fn read_second(
        &mut self,
        raw: &RawLog,
        at: i64,
        to: Option<i64>,
        on_page: &mut impl FnMut(Response),
    ) -> Result<(), SourceError> {
        self.stats.same_second_windows += 1;
        let size = self.cfg.page_size;
        let end = to.map_or(at + 1_000_000, |t| t.min(at + 1_000_000));
        let mut seen: HashSet<String> = HashSet::new();
        for pass in 1..=10 {
            let mut fresh = 0usize;
            let mut page = 1u64;
            loop {
                let query = cases_query(Some(at), Some(end), page, size);
                let r = self.fetch(raw, Endpoint::Cases, &query).await?;
                let data = r.records();
                for d in &data {
                    if seen.insert(d.to_string()) {
                        fresh += 1;
                    }
                }
                self.take(r, on_page);
                if (data.len() as u32) < size {
                    break;
                }
                page += 1;
            }
            debug!(pass, fresh, "same-second window pass");
            if pass > 1 && fresh == 0 {
                return Ok(());
            }
        }
        Err(SourceError::Unsettled {
            request: describe(Endpoint::Cases, &cases_query(Some(at), Some(end), 1, size)),
            at: source_timestamp(at),
        })
    }
}

/// The query of a `/v1/hoso` page.
fn cases_query(
    from: Option<i64>,
    to: Option<i64>,
    page: u64,
    size: u32,
) -> Vec<(&'static str, String)> {
    let mut q = vec![];
    if let Some(f) = from {
        q.push(("updated_from", source_timestamp(f)));
    }
    if let Some(t) = to {
        q.push(("updated_to", source_timestamp(t)));
    }
    q.push(("page", page.to_string()));
    q.push(("page_size", size.to_string()));
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_split_at_the_bound() {
        let body = br#"{"error_code":"0","data":[
            {"MaHoSo":"A","NgayCapNhat":"20240701080000"},
            {"MaHoSo":"B","NgayCapNhat":"20991231000000"},
            {"MaHoSo":"C","NgayCapNhat":"bad"},
            {"MaHoSo":"D","NgayCapNhat":"01/08/2024 08:00:00"}]}"#;
        let bound = crate::wire::parse_instant("20261128000000");
        let s = stamps(body, bound);
        assert_eq!(s.records, 4);
        assert_eq!(s.last, crate::wire::parse_instant("20991231000000"));
        assert_eq!(
            s.last_before_bound,
            crate::wire::parse_instant("20240801080000")
        );
        assert_eq!(
            s.beyond,
            vec![(
                "B".to_string(),
                crate::wire::parse_instant("20991231000000").unwrap()
            )]
        );
        // Without a bound, every stamp may move the cursor.
        assert_eq!(stamps(body, None).last_before_bound, s.last);
        // Read with the envelope, in one pass, the stamps are the same.
        let (_, data) = crate::wire::classify_reading::<Vec<Stamp>>(body);
        assert_eq!(Stamps::of(data.unwrap(), bound), s);
        // And read in full, records and all, as the pull's judging thread reads them.
        let (verdict, judged, records) = judge_page(body, bound);
        assert!(matches!(verdict, crate::wire::BodyVerdict::Usable { .. }));
        assert_eq!((judged, records.map(|r| r.0.len())), (s, Some(4)));
        // A record that is not an object leaves the one pass to the JSON trees: counted all the same.
        let odd = br#"{"error_code":"0","data":[{"MaHoSo":"A","NgayCapNhat":"20240701080000"},7]}"#;
        assert!(crate::wire::classify_reading::<Vec<Stamp>>(odd).1.is_none());
        let s = stamps(odd, bound);
        assert_eq!(
            (s.records, s.last),
            (2, crate::wire::parse_instant("20240701080000"))
        );
        let (_, judged, records) = judge_page(odd, bound);
        assert_eq!((judged, records.is_none()), (s, true));
        // A body that is not usable has no stamps.
        let (verdict, judged, _) = judge_page(br#"{"error_code":"1","data":[]}"#, bound);
        assert!(matches!(verdict, crate::wire::BodyVerdict::Retry(_)));
        assert_eq!(judged, Stamps::default());
    }
}

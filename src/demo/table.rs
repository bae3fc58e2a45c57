//! The case table a demo source serves, in the order of the source API: `NgayCapNhat`, then
//! `MaHoSo`. A *base* — the province as drawn, in memory ([`MemBase`]) or in sorted runs on
//! disk ([`super::disk::DiskBase`]) — and a *tail* of the versions written since (records updated
//! while a client pages, stamped by a test, a night's changes). A base record that a later
//! version replaced is no longer served. Served positions are counted over both, so a page is
//! found by binary search and read in one pass, however large the base.

use std::cmp::Ordering;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::wire::text;

/// The records of a province, sorted by `(updated, key)`, read by position.
pub trait Base: Send {
    /// Records in the base.
    fn len(&self) -> usize;
    /// Whether the base has no record.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `NgayCapNhat` of record `i`, epoch microseconds (absent: `i64::MIN`).
    fn updated(&self, i: usize) -> i64;
    /// `MaHoSo` of record `i`.
    fn key(&self, i: usize) -> Result<String>;
    /// The JSON of records `from..to`, in order.
    fn read(&self, from: usize, to: usize) -> Result<Vec<String>>;
    /// Appends the JSON of records `from..to` to `out`, in order, each followed by a comma (a
    /// page's body is made so, without a string per record).
    fn write(&self, from: usize, to: usize, out: &mut String) -> Result<()> {
        for json in self.read(from, to)? {
            out.push_str(&json);
            out.push(',');
        }
        Ok(())
    }
}

/// One served record.
#[derive(Debug, Clone)]
pub struct Row {
    /// Sort key: parsed `NgayCapNhat`, absent first.
    pub updated: i64,
    pub key: String,
    pub json: String,
}

impl Row {
    /// A row from a record value.
    pub fn of(v: &Value) -> Row {
        let updated = crate::wire::instant(v.get("NgayCapNhat"))
            .ok()
            .flatten()
            .unwrap_or(i64::MIN);
        Row {
            updated,
            key: text(v.get("MaHoSo")).unwrap_or_default(),
            json: v.to_string(),
        }
    }

    fn order(&self) -> (i64, &str) {
        (self.updated, &self.key)
    }
}

/// A base held in memory (datasets read from a folder, tests).
pub struct MemBase(Vec<Row>);

impl MemBase {
    pub fn new(mut rows: Vec<Row>) -> Self {
        rows.sort_by(|a, b| a.order().cmp(&b.order()));
        MemBase(rows)
    }
}

impl Base for MemBase {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn updated(&self, i: usize) -> i64 {
        self.0[i].updated
    }
    fn key(&self, i: usize) -> Result<String> {
        Ok(self.0[i].key.clone())
    }
    fn read(&self, from: usize, to: usize) -> Result<Vec<String>> {
        Ok(self.0[from..to].iter().map(|r| r.json.clone()).collect())
    }
}

/// Where a served record lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    Base(usize),
    Tail(usize),
}

/// Served records where they are read from: a tail row, or base positions `from..to`.
enum Run {
    Tail(usize),
    Base(usize, usize),
}

/// The records at `at` as runs: contiguous base positions together.
fn runs(at: &[At]) -> impl Iterator<Item = Run> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let run = match *at.get(i)? {
            At::Tail(j) => Run::Tail(j),
            At::Base(x) => {
                let n = at[i..]
                    .iter()
                    .enumerate()
                    .take_while(|(k, a)| **a == At::Base(x + k))
                    .count();
                Run::Base(x, x + n)
            }
        };
        i += match run {
            Run::Tail(_) => 1,
            Run::Base(from, to) => to - from,
        };
        Some(run)
    })
}

/// The served table.
pub struct Table {
    base: Box<dyn Base>,
    /// Base positions no longer served (replaced by a later version), ascending.
    deleted: Vec<usize>,
    /// Versions written since the base, in order.
    tail: Vec<Row>,
    /// For each tail row, how many base records precede it in the order.
    tail_at: Vec<usize>,
    /// The demo's clock: the latest `NgayCapNhat` not after the wall clock.
    pub max_updated: i64,
    /// Records updated (or stamped) since the base.
    pub updates: u64,
}

impl Table {
    pub fn new(base: Box<dyn Base>) -> Table {
        let now = chrono::Utc::now().timestamp_micros();
        // The base is sorted: its clock is the last stamp not in the future.
        let n = base.len();
        let not_future = partition_point(n, |i| base.updated(i) <= now);
        let max_updated = match not_future {
            0 => 0,
            k => base.updated(k - 1).max(0),
        };
        Table {
            base,
            deleted: vec![],
            tail: vec![],
            tail_at: vec![],
            max_updated,
            updates: 0,
        }
    }

    /// Records in the base (served or replaced).
    pub fn base_len(&self) -> usize {
        self.base.len()
    }

    /// Records served.
    pub fn len(&self) -> usize {
        self.live_before(self.base.len()) + self.tail.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live base records before base position `x`.
    fn live_before(&self, x: usize) -> usize {
        x - self.deleted.partition_point(|d| *d < x)
    }

    /// Served rank of tail row `j`.
    fn tail_rank(&self, j: usize) -> usize {
        j + self.live_before(self.tail_at[j])
    }

    /// How many served records are stamped before `t` (all when `None`).
    pub fn rank_of(&self, t: Option<i64>) -> usize {
        let Some(t) = t else { return self.len() };
        let b = partition_point(self.base.len(), |i| self.base.updated(i) < t);
        self.live_before(b) + self.tail.partition_point(|r| r.updated < t)
    }

    /// The served records of ranks `from..to`, where they live.
    pub fn locate(&self, from: usize, to: usize) -> Vec<At> {
        let to = to.min(self.len());
        if from >= to {
            return vec![];
        }
        // Tail rows before `from`, then the base position holding the rest.
        let mut j = partition_point(self.tail.len(), |j| self.tail_rank(j) < from);
        let k = from - j;
        let mut x = partition_point(self.base.len(), |x| self.live_before(x) < k);
        let mut d = self.deleted.partition_point(|v| *v < x);
        let mut out = Vec::with_capacity(to - from);
        while out.len() < to - from {
            while d < self.deleted.len() && self.deleted[d] == x {
                x += 1;
                d += 1;
            }
            let base_left = x < self.base.len();
            if j < self.tail.len() && (!base_left || self.tail_at[j] <= x) {
                out.push(At::Tail(j));
                j += 1;
            } else if base_left {
                out.push(At::Base(x));
                x += 1;
            } else {
                break;
            }
        }
        out
    }

    /// The JSON of the records at `at`, in order: contiguous base positions read at once.
    pub fn read(&self, at: &[At]) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(at.len());
        for run in runs(at) {
            match run {
                Run::Tail(j) => out.push(self.tail[j].json.clone()),
                Run::Base(from, to) => out.extend(self.base.read(from, to)?),
            }
        }
        Ok(out)
    }

    /// Appends the JSON of the records at `at` to `out`, in order, each followed by a comma:
    /// contiguous base positions written at once.
    pub fn write(&self, at: &[At], out: &mut String) -> Result<()> {
        for run in runs(at) {
            match run {
                Run::Tail(j) => {
                    out.push_str(&self.tail[j].json);
                    out.push(',');
                }
                Run::Base(from, to) => self.base.write(from, to, out)?,
            }
        }
        Ok(())
    }

    /// Every served record, in order (for tests).
    pub fn all(&self) -> Result<Vec<String>> {
        self.read(&self.locate(0, self.len()))
    }

    /// The last served record of `key`.
    pub fn find_last(&self, key: &str) -> Result<Option<At>> {
        if let Some(j) = self.tail.iter().rposition(|r| r.key == key) {
            return Ok(Some(At::Tail(j)));
        }
        for x in (0..self.base.len()).rev() {
            if self.deleted.binary_search(&x).is_err() && self.base.key(x)? == key {
                return Ok(Some(At::Base(x)));
            }
        }
        Ok(None)
    }

    /// Stops serving the record at `at`; its JSON.
    pub fn remove(&mut self, at: At) -> Result<String> {
        match at {
            At::Tail(j) => {
                self.tail_at.remove(j);
                Ok(self.tail.remove(j).json)
            }
            At::Base(x) => {
                let json = self
                    .base
                    .read(x, x + 1)?
                    .pop()
                    .ok_or_else(|| Error::Internal(format!("base record {x} is not there")))?;
                if let Err(i) = self.deleted.binary_search(&x) {
                    self.deleted.insert(i, x);
                }
                Ok(json)
            }
        }
    }

    /// Serves `row` in its place in the order.
    pub fn insert(&mut self, row: Row) -> Result<()> {
        let at = self.base_position(&row)?;
        let j = self.tail.partition_point(|r| r.order() <= row.order());
        self.tail.insert(j, row);
        self.tail_at.insert(j, at);
        Ok(())
    }

    /// Serves many rows at once (a night's changes) and stops serving the base records `gone`.
    pub fn insert_many(&mut self, mut rows: Vec<Row>, mut gone: Vec<usize>) -> Result<()> {
        gone.sort_unstable();
        self.deleted.extend(gone);
        self.deleted.sort_unstable();
        self.deleted.dedup();
        rows.sort_by(|a, b| a.order().cmp(&b.order()));
        let mut at = Vec::with_capacity(rows.len());
        for r in &rows {
            at.push(self.base_position(r)?);
        }
        let old = std::mem::take(&mut self.tail)
            .into_iter()
            .zip(std::mem::take(&mut self.tail_at));
        let mut merged: Vec<(Row, usize)> = old.chain(rows.into_iter().zip(at)).collect();
        merged.sort_by(|a, b| a.0.order().cmp(&b.0.order()));
        (self.tail, self.tail_at) = merged.into_iter().unzip();
        Ok(())
    }

    /// How many base records precede `row` in the order.
    fn base_position(&self, row: &Row) -> Result<usize> {
        let n = self.base.len();
        let lo = partition_point(n, |i| self.base.updated(i) < row.updated);
        let hi = partition_point(n, |i| self.base.updated(i) <= row.updated);
        // Ties on the stamp are ordered by key (few: read them).
        let mut at = lo;
        while at < hi && self.base.key(at)?.as_str().cmp(&row.key) != Ordering::Greater {
            at += 1;
        }
        Ok(at)
    }
}

/// The first `i` in `0..n` for which `pred` is false (`pred` true then false, like
/// `slice::partition_point`).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(updated: i64, key: &str) -> Row {
        Row {
            updated,
            key: key.into(),
            json: json!({"MaHoSo": key, "u": updated}).to_string(),
        }
    }

    /// The `MaHoSo` of each served record.
    fn keys_of(served: &[String]) -> Vec<String> {
        served
            .iter()
            .map(|j| {
                serde_json::from_str::<Value>(j).unwrap()["MaHoSo"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    }

    fn keys(t: &Table) -> Vec<String> {
        keys_of(&t.all().unwrap())
    }

    /// Served order is `(updated, key)` over base and tail; removed records are not served;
    /// every window and page is the matching slice of that order.
    #[test]
    fn base_and_tail_are_served_as_one_order() {
        let base: Vec<Row> = (0..50)
            .map(|i| row((i / 3) as i64, &format!("B{i:02}")))
            .collect();
        let mut t = Table::new(Box::new(MemBase::new(base)));
        t.insert(row(5, "A")).unwrap();
        t.insert(row(5, "Z")).unwrap();
        t.insert(row(100, "T1")).unwrap();
        t.insert(row(-1, "T0")).unwrap();
        let gone = t.find_last("B10").unwrap().unwrap();
        assert_eq!(gone, At::Base(10));
        t.remove(gone).unwrap();
        t.insert_many(vec![row(7, "N2"), row(7, "N1")], vec![20, 21, 20])
            .unwrap();
        // The expected order, built naively.
        let mut want: Vec<(i64, String)> = (0..50)
            .filter(|i| ![10, 20, 21].contains(i))
            .map(|i| ((i / 3) as i64, format!("B{i:02}")))
            .collect();
        for (u, k) in [
            (5, "A"),
            (5, "Z"),
            (100, "T1"),
            (-1, "T0"),
            (7, "N2"),
            (7, "N1"),
        ] {
            want.push((u, k.into()));
        }
        want.sort();
        let want: Vec<String> = want.into_iter().map(|(_, k)| k).collect();
        assert_eq!(keys(&t), want);
        assert_eq!(t.len(), want.len());
        for from in 0..t.len() {
            for len in [1, 3, 7] {
                let got = keys_of(&t.read(&t.locate(from, from + len)).unwrap());
                let end = (from + len).min(want.len());
                assert_eq!(got, want[from..end], "ranks {from}..{}", from + len);
            }
        }
        // Ranks of stamps: stamped before 5 are the T0 row and the base's first 15 but B10.
        assert_eq!(t.rank_of(Some(5)), 1 + 14);
        assert_eq!(t.rank_of(None), t.len());
        // A tail row removed and found again.
        let at = t.find_last("T1").unwrap().unwrap();
        assert!(matches!(at, At::Tail(_)));
        t.remove(at).unwrap();
        assert!(t.find_last("T1").unwrap().is_none());
    }
}

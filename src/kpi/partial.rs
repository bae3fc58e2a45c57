//! Partial counts. A chunk of staging (a row group) is counted for every period of a run in
//! one pass over its rows: each case is read once, the measures of [`rules::counted`] are
//! evaluated for every period and added to its agency × field — 64 cases at a time as bit
//! masks ([`crate::domain::lanes`]), the few handed over one by one — a partition's row groups
//! are counted into one partial, and the partitions' partials are then summed ([`Totals`]),
//! from which every period's tables come.
//!
//! A case counts under its agency on its attribution date (`agencies.md`). For a case never
//! handed over that is the agency holding it now, whatever the period; for the few handed
//! over, [`attribution`](super::attribution) finds the agency of each period.

use polars::prelude::*;

use super::attribution::{self, Agencies};
use super::columns::{Columns, Decoded};
use crate::domain::period::Period;
use crate::domain::rules::{self, Bounds, COUNTED, RECEIVED_NEW};
use crate::error::Result;

mod kept;
mod lanes;
#[cfg(test)]
mod tests;
mod totals;
mod used;
pub use totals::Totals;

fn suffix(i: usize) -> String {
    format!("#{i}")
}

/// Counts kept per period and group: the counted measures, then `_outside`, the cases counted
/// under an agency on a day outside its validity.
pub const PER_PERIOD: usize = COUNTED + 1;

/// One agency × field: the least `agency_name_text` and `field_name` of its cases (as ids of
/// its [`Partial`]'s codes), and the cases it holds now; its counts are kept beside.
#[derive(Debug, Clone, PartialEq)]
struct Group {
    agency_name: u32,
    field_name: u32,
    /// Cases held now (period aside).
    pub cases: i64,
}

/// One counted row of a period, to make partial counts of in tests.
#[cfg(test)]
pub struct Row<'a> {
    pub agency: &'a str,
    /// The field (of a group) or the procedure (of a use).
    pub key: Option<&'a str>,
    /// The period's counts ([`PER_PERIOD`]); of a use, the first alone.
    pub counts: &'a [i64],
    /// The group's least `agency_name_text` and `field_name`.
    pub names: (Option<&'a str>, Option<&'a str>),
    /// Cases held now.
    pub cases: i64,
}

/// One period of a [`Partial`] as the KPI cache keeps it (`cache.rs`): its codes, and each
/// group and use by the ids of those codes ([`ABSENT`] for none).
#[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Kept {
    codes: Vec<String>,
    /// Per group: agency, field, least agency name, least field name, cases held now.
    groups: Vec<(u32, u32, u32, u32, i64)>,
    /// The counts that are not 0, each at its place among the groups' [`PER_PERIOD`] counts
    /// in order (most of a partition's counts are 0 for a period outside its months).
    counts: Vec<(u64, i64)>,
    /// Per use with a count: agency, procedure, the count.
    used: Vec<(u32, u32, i64)>,
}

/// A [`Kept`] borrowing its codes from the [`Partial`] it is of, to encode: the KPI cache
/// encodes one per partition counted, and cloning each partition's thousands of codes for it
/// cost more than the encoding. Encoded by bincode exactly as a [`Kept`] (same fields, same
/// order), which is what decodes it.
#[derive(Debug, serde::Serialize)]
pub struct KeptRef<'a> {
    codes: &'a [String],
    groups: Vec<(u32, u32, u32, u32, i64)>,
    counts: Vec<(u64, i64)>,
    used: Vec<(u32, u32, i64)>,
}

/// The id of an absent code.
pub(super) const ABSENT: u32 = u32::MAX;

/// Partial counts for the periods of a run: of a slice, a partition or all of staging. Codes
/// (agencies, fields, procedures, names) are interned, so a row allocates nothing once its
/// group exists, and adding counts together costs a lookup per code, not per row.
#[derive(Debug, Clone, Default)]
pub struct Partial {
    periods: usize,
    ids: PlHashMap<String, u32>,
    codes: Vec<String>,
    /// Per (agency, field): its place in `groups`.
    index: PlHashMap<(u32, u32), u32>,
    groups: Vec<((u32, u32), Group)>,
    /// The counts of each group, in its order: for each period, the counted measures, then
    /// `_outside` ([`PER_PERIOD`]).
    counts: Vec<i64>,
    /// Per (agency, procedure), for each period: the cases in received_new.
    used: used::Used,
}

impl Partial {
    pub fn new(periods: usize) -> Partial {
        Partial {
            periods,
            used: used::Used::new(periods),
            ..Default::default()
        }
    }

    /// Empties it for counting anew, keeping the room it has grown: a partition's counts grow
    /// from empty to thousands of groups, and counted into a partial used before they touch
    /// memory already in use rather than fresh pages (`scan.rs`'s `Spare`).
    pub fn clear(&mut self) {
        self.ids.clear();
        self.codes.clear();
        self.index.clear();
        self.groups.clear();
        self.counts.clear();
        self.used.clear();
    }

    /// Whether it has counted nothing yet (no code, group or use).
    pub fn is_empty(&self) -> bool {
        self.codes.is_empty() && self.groups.is_empty() && self.used.is_empty()
    }

    /// How many periods it counts.
    pub fn periods(&self) -> usize {
        self.periods
    }

    pub(super) fn id(&mut self, code: Option<&str>) -> u32 {
        let Some(code) = code else { return ABSENT };
        if let Some(id) = self.ids.get(code) {
            return *id;
        }
        let id = self.codes.len() as u32;
        self.codes.push(code.to_string());
        self.ids.insert(code.to_string(), id);
        id
    }

    /// Where the counts of period `i` of the group at `at` are in `counts`.
    fn span(&self, at: usize, i: usize) -> std::ops::Range<usize> {
        let start = at * self.periods * PER_PERIOD + i * PER_PERIOD;
        start..start + PER_PERIOD
    }

    fn code(&self, id: u32) -> Option<&str> {
        (id != ABSENT).then(|| self.codes[id as usize].as_str())
    }

    /// Room for `n` more groups.
    fn reserve(&mut self, n: usize) {
        room(&mut self.groups, n);
        self.index.reserve(n);
        room(&mut self.counts, n * self.periods * PER_PERIOD);
    }

    /// The place of group (agency, field) in `groups`, made when new.
    fn group_at(&mut self, agency: u32, field: u32) -> usize {
        if let Some(at) = self.index.get(&(agency, field)) {
            return *at as usize;
        }
        let at = self.groups.len();
        let group = Group {
            agency_name: ABSENT,
            field_name: ABSENT,
            cases: 0,
        };
        self.groups.push(((agency, field), group));
        self.counts
            .resize(self.counts.len() + self.periods * PER_PERIOD, 0);
        self.index.insert((agency, field), at as u32);
        at
    }

    /// The lesser of two names (ids), absent ones aside (as polars' `min`).
    fn least(&self, kept: u32, seen: u32) -> u32 {
        if seen == ABSENT || seen == kept {
            kept
        } else if kept == ABSENT || self.codes[seen as usize] < self.codes[kept as usize] {
            seen
        } else {
            kept
        }
    }

    /// Takes names `(agency, field)` (ids) into the least names of the group at `at`.
    fn names_seen(&mut self, at: usize, (agency, field): (u32, u32)) {
        let g = &self.groups[at].1;
        let (a, f) = (
            self.least(g.agency_name, agency),
            self.least(g.field_name, field),
        );
        let g = &mut self.groups[at].1;
        (g.agency_name, g.field_name) = (a, f);
    }

    /// The ids here of another count's codes (`theirs`), by their ids there.
    fn ids_of(&mut self, theirs: &[String]) -> impl Fn(u32) -> u32 {
        let map: Vec<u32> = theirs.iter().map(|c| self.id(Some(c))).collect();
        move |id| {
            if id == ABSENT {
                ABSENT
            } else {
                map[id as usize]
            }
        }
    }

    /// Adds `other` (of the same periods) to this one.
    pub fn add(&mut self, other: &Partial) {
        self.reserve(other.groups.len());
        let at = self.ids_of(&other.codes);
        let width = self.periods * PER_PERIOD;
        for (k, ((a, f), g)) in other.groups.iter().enumerate() {
            let mine = self.group_at(at(*a), at(*f));
            let theirs = &other.counts[k * width..(k + 1) * width];
            for (x, y) in self.counts[mine * width..(mine + 1) * width]
                .iter_mut()
                .zip(theirs)
            {
                *x += y;
            }
            self.groups[mine].1.cases += g.cases;
            self.names_seen(mine, (at(g.agency_name), at(g.field_name)));
        }
        for ((a, p), u) in other.used.iter() {
            self.used.add_all((at(a), at(p)), u);
        }
    }

    /// Adds one counted row of period `i` (for tests): a group's counts, or (`used`) a use, its
    /// count first. The cases held now are added when `with_cases`.
    #[cfg(test)]
    pub fn add_row(&mut self, i: usize, row: Row, used: bool, with_cases: bool) {
        let (a, k) = (self.id(Some(row.agency)), self.id(row.key));
        if used {
            self.used.add((a, k), i, row.counts[0]);
            return;
        }
        let at = self.group_at(a, k);
        let names = (self.id(row.names.0), self.id(row.names.1));
        let span = self.span(at, i);
        for (x, y) in self.counts[span].iter_mut().zip(row.counts) {
            *x += y;
        }
        if with_cases {
            self.groups[at].1.cases += row.cases;
        }
        self.names_seen(at, names);
    }

    /// Period `i` of these counts as the KPI cache keeps them.
    pub fn kept(&self, i: usize) -> Kept {
        let k = self.kept_ref(i);
        Kept {
            codes: k.codes.to_vec(),
            groups: k.groups,
            counts: k.counts,
            used: k.used,
        }
    }

    /// Period `i` of these counts as the KPI cache keeps them, its codes borrowed.
    pub fn kept_ref(&self, i: usize) -> KeptRef<'_> {
        let mut counts = vec![];
        for at in 0..self.groups.len() {
            let place = (at * PER_PERIOD) as u64;
            for (m, n) in self.counts[self.span(at, i)].iter().enumerate() {
                if *n != 0 {
                    counts.push((place + m as u64, *n));
                }
            }
        }
        KeptRef {
            codes: &self.codes,
            groups: self
                .groups
                .iter()
                .map(|((a, f), g)| (*a, *f, g.agency_name, g.field_name, g.cases))
                .collect(),
            counts,
            used: self
                .used
                .iter()
                .filter(|(_, u)| u[i] > 0)
                .map(|((a, p), u)| (a, p, u[i]))
                .collect(),
        }
    }

    /// Adds counts kept by the KPI cache as period `i`, and their cases held now when
    /// `with_cases` (once per partition, not once per period). Counts that do not hold
    /// together (a code beyond the codes, a count beyond the groups' [`PER_PERIOD`] each)
    /// are an error, with nothing added.
    pub fn add_kept(&mut self, i: usize, kept: &Kept, with_cases: bool) -> Result<()> {
        let n = kept.codes.len() as u32;
        let known = |id: u32| id == ABSENT || id < n;
        let places = (kept.groups.len() * PER_PERIOD) as u64;
        let whole = kept.counts.iter().all(|(k, _)| *k < places)
            && i < self.periods
            && kept
                .groups
                .iter()
                .all(|g| known(g.0) && known(g.1) && known(g.2) && known(g.3))
            && kept.used.iter().all(|u| known(u.0) && known(u.1));
        if !whole {
            return Err(crate::error::Error::Internal(
                "KPI cache counts that do not hold together".into(),
            ));
        }
        let at = self.ids_of(&kept.codes);
        let mut mine = Vec::with_capacity(kept.groups.len());
        for (a, f, an, fnm, cases) in &kept.groups {
            let g = self.group_at(at(*a), at(*f));
            if with_cases {
                self.groups[g].1.cases += cases;
            }
            self.names_seen(g, (at(*an), at(*fnm)));
            mine.push(g);
        }
        for (k, n) in &kept.counts {
            let (g, m) = (*k as usize / PER_PERIOD, *k as usize % PER_PERIOD);
            let start = self.span(mine[g], i).start;
            self.counts[start + m] += n;
        }
        for (a, p, u) in &kept.used {
            self.used.add((at(*a), at(*p)), i, *u);
        }
        Ok(())
    }

    /// Counts `cases` (staging rows, at least [`super::INPUT_COLUMNS`]) for every one of
    /// `periods` (this partial's) into this partial.
    pub fn count(
        &mut self,
        cases: &DataFrame,
        periods: &[Period],
        agencies: &Agencies,
    ) -> Result<()> {
        // A chunk at a time (a row group each, as read), so no column is copied into one.
        for chunk in Decoded::of_frame(cases)? {
            self.count_decoded(&chunk, periods, agencies)?;
        }
        Ok(())
    }

    /// Counts one chunk of cases for every one of `periods` (this partial's).
    pub(super) fn count_decoded(
        &mut self,
        cases: &Decoded,
        periods: &[Period],
        agencies: &Agencies,
    ) -> Result<()> {
        if cases.rows() == 0 {
            return Ok(());
        }
        let bounds: Vec<Bounds> = periods.iter().map(Bounds::of).collect();
        let mut cols = Columns::of(cases, self)?;
        let moved = &cases.moved;
        let mut validity = attribution::ValidityCache::new(agencies);
        // The group of each (agency, field) key pair of the chunk, once found.
        let (na, nf) = (cols.agency.distinct(), cols.field.distinct());
        // Room for the groups this chunk may make (one per key pair at most, one per row at
        // most), reserved at once: grown a group at a time, the counts were copied over and
        // over (a twentieth of a cold count). Room not written is not memory used.
        self.reserve(na.saturating_mul(nf).min(cases.rows()));
        let mut local: Vec<u32> = match na.checked_mul(nf) {
            Some(n) if n <= LOCAL_GROUPS => vec![u32::MAX; n],
            _ => vec![],
        };
        let mut moved_at = 0;
        let mut held = lanes::Held::default();
        let lanes = crate::domain::lanes::LANES;
        for row in 0..cases.rows() {
            // The cases never handed over are counted a block of rows at a time.
            if row % lanes == 0 && held.any() {
                held.fill(&cols, row - lanes);
                self.count_held(&mut held, &bounds, &mut cols, &mut validity);
            }
            let ka = cols.agency.key(row);
            if ka == 0 {
                continue;
            }
            let now_id = cols.agency.id_of(ka);
            let kf = cols.field.key(row);
            let field = cols.field.id_of(kf);
            let slot = ka as usize * nf + kf as usize;
            let now_at = match local.get(slot) {
                Some(at) if *at != u32::MAX => *at as usize,
                Some(_) => {
                    let at = self.group_at(now_id, field);
                    local[slot] = at as u32;
                    at
                }
                None => self.group_at(now_id, field),
            };
            let names = (cols.agency_name.id(row), cols.field_name.id(row));
            // Held now, under the agency holding it.
            self.groups[now_at].1.cases += 1;
            self.names_seen(now_at, names);
            let transfers = match moved.get(moved_at) {
                Some((r, t)) if *r == row => {
                    moved_at += 1;
                    Some(t)
                }
                _ => None,
            };
            let Some(t) = transfers else {
                // Never handed over: counted under the agency above, 64 cases at a time. Of
                // a row group that counts in no period (`scan`), held, nothing more.
                if cases.counted() {
                    held.mark(row, now_at, now_id);
                }
                continue;
            };
            let case = &cols.case(row);
            for (i, p) in bounds.iter().enumerate() {
                let (hits, on) = rules::counted_on(case, *p);
                let (agency_id, at) = {
                    let now = &self.codes[now_id as usize];
                    let agency = attribution::agency_on_day(now, t, on).to_string();
                    let id = self.id(Some(&agency));
                    let at = self.group_at(id, field);
                    if id != now_id {
                        self.names_seen(at, names);
                    }
                    (id, at)
                };
                let outside = hits.iter().any(|h| *h)
                    && !validity.valid(agency_id, &self.codes[agency_id as usize], on);
                let span = self.span(at, i);
                let counts = &mut self.counts[span];
                for (n, h) in counts.iter_mut().zip(hits) {
                    *n += h as i64;
                }
                counts[COUNTED] += outside as i64;
                if hits[RECEIVED_NEW] {
                    let procedure = cols.procedure.id_in(row, self);
                    self.used.add((agency_id, procedure), i, 1);
                }
            }
        }
        if held.any() {
            held.fill(&cols, (cases.rows() - 1) / lanes * lanes);
            self.count_held(&mut held, &bounds, &mut cols, &mut validity);
        }
        Ok(())
    }
}

/// Room for `n` more in `v`, moving only what it holds. (`Vec::reserve` reallocates, and the
/// allocator copies the whole block, its room never written too: the room reserved for a
/// chunk's groups is an upper bound, mostly unwritten, and copying it faulted in fresh pages
/// both sides — 1.3 k of a cold run's 18.6 k page faults at a million cases.)
fn room<T>(v: &mut Vec<T>, n: usize) {
    if v.capacity() - v.len() >= n {
        return;
    }
    let mut more = Vec::with_capacity(v.len().saturating_add(n).max(2 * v.capacity()));
    more.append(v);
    *v = more;
}

/// The most (agency, field) key pairs of a chunk whose groups are remembered in a table;
/// beyond, each row looks its group up.
const LOCAL_GROUPS: usize = 1 << 16;

/// Counts `cases` for every one of `periods`.
pub fn partial(cases: &DataFrame, periods: &[Period], agencies: &Agencies) -> Result<Partial> {
    let mut p = Partial::new(periods.len());
    p.count(cases, periods, agencies)?;
    Ok(p)
}

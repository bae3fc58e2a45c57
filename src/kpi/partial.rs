//! Partial counts. A slice of staging (a batch of row groups) is counted for every period of a
//! run in one pass over its rows: each case is read once into a [`Case`], the measures of
//! [`rules::counted`] are evaluated for every period and added to its agency × field, and the
//! partial counts of all slices are then summed ([`Totals`]), from which every period's tables
//! come.
//!
//! A case counts under its agency on its attribution date (`agencies.md`). For a case never
//! handed over that is the agency holding it now, whatever the period; for the few handed
//! over, [`attribution`](super::attribution) finds the agency of each period.

use std::collections::BTreeMap;

use polars::prelude::*;

use super::attribution::{self, Agencies};
use super::columns::{Chunks, Columns, Interned};
use super::tables::period_tables;
use super::{KpiTables, Stamp};
use crate::domain::period::Period;
use crate::domain::rules::{self, counted_names, Bounds, COUNTED, RECEIVED_NEW};
use crate::error::Result;
use crate::normalise::Procedure;

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

/// One group as rows are read out of a [`Partial`]: its codes and names as text.
pub struct GroupRow<'a> {
    pub agency: &'a str,
    pub field: Option<&'a str>,
    /// The counts of the period asked for ([`PER_PERIOD`]).
    pub counts: &'a [i64],
    pub agency_name: Option<&'a str>,
    pub field_name: Option<&'a str>,
    pub cases: i64,
}

/// One counted row of a period, as the KPI cache keeps it.
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
    used: PlHashMap<(u32, u32), Vec<i64>>,
}

impl Partial {
    pub fn new(periods: usize) -> Partial {
        Partial {
            periods,
            ..Default::default()
        }
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

    /// Adds `other` (of the same periods) to this one.
    pub fn add(&mut self, other: &Partial) {
        let map: Vec<u32> = other.codes.iter().map(|c| self.id(Some(c))).collect();
        let at = |id: u32| {
            if id == ABSENT {
                ABSENT
            } else {
                map[id as usize]
            }
        };
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
        let n = self.periods;
        for ((a, p), u) in &other.used {
            let mine = self
                .used
                .entry((at(*a), at(*p)))
                .or_insert_with(|| vec![0; n]);
            for (x, y) in mine.iter_mut().zip(u) {
                *x += y;
            }
        }
    }

    /// Adds one counted row of period `i` (as the KPI cache keeps them): a group's counts, or
    /// (`used`) a use, its count first. The cases held now are added when `with_cases`.
    pub fn add_row(&mut self, i: usize, row: Row, used: bool, with_cases: bool) {
        let (a, k) = (self.id(Some(row.agency)), self.id(row.key));
        if used {
            let n = self.periods;
            self.used.entry((a, k)).or_insert_with(|| vec![0; n])[i] += row.counts[0];
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

    /// The rows of period `i`: each group, then each use (agency, procedure, the period's
    /// count) that is not 0.
    #[allow(clippy::type_complexity)]
    pub fn rows(&self, i: usize) -> (Vec<GroupRow<'_>>, Vec<(&str, Option<&str>, i64)>) {
        let groups = self
            .groups
            .iter()
            .enumerate()
            .map(|(at, ((a, f), g))| GroupRow {
                agency: self.code(*a).unwrap_or_default(),
                field: self.code(*f),
                counts: &self.counts[self.span(at, i)],
                agency_name: self.code(g.agency_name),
                field_name: self.code(g.field_name),
                cases: g.cases,
            })
            .collect();
        let used = self
            .used
            .iter()
            .filter(|(_, u)| u[i] > 0)
            .map(|((a, p), u)| (self.code(*a).unwrap_or_default(), self.code(*p), u[i]))
            .collect();
        (groups, used)
    }

    /// Counts `cases` (staging rows, at least [`super::INPUT_COLUMNS`]) for every one of
    /// `periods` (this partial's) into this partial.
    pub fn count(
        &mut self,
        cases: &DataFrame,
        periods: &[Period],
        agencies: &Agencies,
    ) -> Result<()> {
        let bounds: Vec<Bounds> = periods.iter().map(Bounds::of).collect();
        // A chunk at a time (a row group each, as read), so no column is copied into one.
        let mut cases = cases.clone();
        for chunk in cases.split_chunks() {
            self.count_chunk(&chunk, &bounds, agencies)?;
        }
        Ok(())
    }

    /// Counts one chunk of cases (each column in one piece, or made so) for the periods of
    /// `bounds`.
    fn count_chunk(
        &mut self,
        cases: &DataFrame,
        bounds: &[Bounds],
        agencies: &Agencies,
    ) -> Result<()> {
        if cases.height() == 0 {
            return Ok(());
        }
        let chunks = Chunks::of(cases)?;
        let cols = Columns::of(&chunks)?;
        let moved = attribution::moved_rows(cases)?;
        let mut validity = attribution::ValidityCache::new(agencies);
        let [mut agencies_seen, mut fields, mut procedures, mut agency_names, mut field_names] =
            std::array::from_fn(|_| Interned::default());
        let mut moved_at = 0;
        for row in 0..cases.height() {
            let now_id = agencies_seen.id(cols.agency, row, self);
            if now_id == ABSENT {
                continue;
            }
            let case = &cols.case(row);
            let field = fields.id(cols.field, row, self);
            let names = (
                agency_names.id(cols.agency_name, row, self),
                field_names.id(cols.field_name, row, self),
            );
            // Held now, under the agency holding it.
            let now_at = self.group_at(now_id, field);
            self.groups[now_at].1.cases += 1;
            self.names_seen(now_at, names);
            let transfers = match moved.get(moved_at) {
                Some((r, t)) if *r == row => {
                    moved_at += 1;
                    Some(t)
                }
                _ => None,
            };
            for (i, p) in bounds.iter().enumerate() {
                let (hits, on) = rules::counted_on(case, *p);
                let (agency_id, at) = match transfers {
                    Some(t) => {
                        let now = &self.codes[now_id as usize];
                        let agency = attribution::agency_on_day(now, t, on).to_string();
                        let id = self.id(Some(&agency));
                        let at = self.group_at(id, field);
                        if id != now_id {
                            self.names_seen(at, names);
                        }
                        (id, at)
                    }
                    None => (now_id, now_at),
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
                    let procedure = procedures.id(cols.procedure, row, self);
                    let n = self.periods;
                    self.used
                        .entry((agency_id, procedure))
                        .or_insert_with(|| vec![0; n])[i] += 1;
                }
            }
        }
        Ok(())
    }

    /// The sums, as frames.
    pub fn total(self, periods: &[Period]) -> Result<Totals> {
        Ok(Totals {
            periods: periods.to_vec(),
            counts: self.counts_frame()?,
            used: self.used_frame()?,
        })
    }

    /// Per agency × field: `<measure>#<i>` and `_outside#<i>` for each period, names, `_cases`.
    fn counts_frame(&self) -> Result<DataFrame> {
        let mut groups: Vec<(&str, Option<&str>, &Group, usize)> = self
            .groups
            .iter()
            .enumerate()
            .map(|(at, ((a, f), g))| (self.code(*a).unwrap_or_default(), self.code(*f), g, at))
            .collect();
        groups.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
        let mut cols = vec![
            Column::new(
                "agency_code".into(),
                groups.iter().map(|g| g.0).collect::<Vec<_>>(),
            ),
            Column::new(
                "field_code".into(),
                groups.iter().map(|g| g.1).collect::<Vec<_>>(),
            ),
        ];
        for i in 0..self.periods {
            let names = counted_names().into_iter().chain(["_outside"]);
            for (m, name) in names.enumerate() {
                let v: Vec<i64> = groups
                    .iter()
                    .map(|g| self.counts[self.span(g.3, i).start + m])
                    .collect();
                cols.push(Column::new(format!("{name}{}", suffix(i)).into(), v));
            }
        }
        let names: Vec<Option<&str>> = groups.iter().map(|g| self.code(g.2.agency_name)).collect();
        let fields: Vec<Option<&str>> = groups.iter().map(|g| self.code(g.2.field_name)).collect();
        cols.extend([
            Column::new("agency_name_text".into(), names),
            Column::new("field_name".into(), fields),
            Column::new(
                "_cases".into(),
                groups.iter().map(|g| g.2.cases).collect::<Vec<_>>(),
            ),
        ]);
        Ok(DataFrame::new(groups.len(), cols)?)
    }

    /// Per agency × procedure: `_used#<i>` for each period.
    fn used_frame(&self) -> Result<DataFrame> {
        let mut used: Vec<(&str, Option<&str>, &Vec<i64>)> = self
            .used
            .iter()
            .map(|((a, p), u)| (self.code(*a).unwrap_or_default(), self.code(*p), u))
            .collect();
        used.sort_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
        let mut cols = vec![
            Column::new(
                "agency_code".into(),
                used.iter().map(|u| u.0).collect::<Vec<_>>(),
            ),
            Column::new(
                "procedure_code".into(),
                used.iter().map(|u| u.1).collect::<Vec<_>>(),
            ),
        ];
        for i in 0..self.periods {
            let v: Vec<i64> = used.iter().map(|u| u.2[i]).collect();
            cols.push(Column::new(format!("_used{}", suffix(i)).into(), v));
        }
        Ok(DataFrame::new(used.len(), cols)?)
    }
}

/// Counts `cases` for every one of `periods`.
pub fn partial(cases: &DataFrame, periods: &[Period], agencies: &Agencies) -> Result<Partial> {
    let mut p = Partial::new(periods.len());
    p.count(cases, periods, agencies)?;
    Ok(p)
}

/// The partial counts of all slices, summed, as frames: `counts` per agency × field
/// (`<measure>#<i>` and `_outside#<i>` for each period `i`, `agency_name_text`, `field_name`,
/// `_cases`) and `used` per agency × procedure (`_used#<i>`).
pub struct Totals {
    periods: Vec<Period>,
    counts: DataFrame,
    used: DataFrame,
}

impl Totals {
    /// The frames, for tests.
    #[cfg(test)]
    pub fn frames(&self) -> (&DataFrame, &DataFrame) {
        (&self.counts, &self.used)
    }

    /// `column` summed per agency, where it is not zero.
    fn per_agency(&self, column: &str) -> Result<BTreeMap<String, u64>> {
        let codes = self.counts.column("agency_code")?.str()?;
        let n = self.counts.column(column)?.i64()?;
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        for (c, n) in codes.iter().zip(n.iter()) {
            if let (Some(c), Some(n)) = (c, n) {
                if n > 0 {
                    *out.entry(c.to_string()).or_default() += n as u64;
                }
            }
        }
        Ok(out)
    }

    /// Cases in staging per agency code (the agency holding them now).
    pub fn cases_per_agency(&self) -> Result<BTreeMap<String, u64>> {
        self.per_agency("_cases")
    }

    /// Per agency, the cases of period `i` counted under it on a day outside its validity.
    pub fn outside_validity(&self, i: usize) -> Result<BTreeMap<String, u64>> {
        self.per_agency(&format!("_outside{}", suffix(i)))
    }

    /// Cases in staging.
    pub fn cases(&self) -> Result<u64> {
        Ok(self.counts.column("_cases")?.i64()?.sum().unwrap_or(0) as u64)
    }

    /// The tables of period number `i` (of the periods the accumulator was made for).
    pub fn tables(
        &self,
        i: usize,
        agencies: &Agencies,
        catalog: &[Procedure],
        stamp: &Stamp,
    ) -> Result<KpiTables> {
        let period = self.periods[i];
        let sfx = suffix(i);
        let mut cols = vec![
            col("agency_code"),
            col("field_code"),
            col("agency_name_text"),
            col("field_name").alias("case_field_name"),
        ];
        cols.extend(
            counted_names()
                .iter()
                .map(|n| col(format!("{n}{sfx}")).alias(*n)),
        );
        let counts = self.counts.clone().lazy().select(cols);
        let used = self
            .used
            .clone()
            .lazy()
            .filter(col(format!("_used{sfx}")).gt(lit(0i64)))
            .select([col("agency_code"), col("procedure_code")]);
        period_tables(counts, used, agencies, catalog, &period, stamp)
    }
}

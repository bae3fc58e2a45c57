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
use super::columns::{Chunks, Columns};
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

/// One agency × field: its counts for every period, the least `agency_name_text` and
/// `field_name` of its cases, and the cases it holds now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Group {
    /// For each period: the counted measures, then `_outside`.
    pub counts: Vec<i64>,
    pub agency_name: Option<String>,
    pub field_name: Option<String>,
    /// Cases held now (period aside).
    pub cases: i64,
}

/// The lesser of two names, absent ones aside (as polars' `min`).
fn least(kept: &mut Option<String>, seen: Option<&str>) {
    if let Some(s) = seen {
        if kept.as_deref().is_none_or(|k| s < k) {
            *kept = Some(s.to_string());
        }
    }
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
const ABSENT: u32 = u32::MAX;

/// Partial counts for the periods of a run: of a slice, a partition or all of staging. Codes
/// (agencies, fields, procedures) are interned, so a row allocates nothing once its group
/// exists, and adding counts together costs a lookup per code, not per row.
#[derive(Debug, Clone, Default)]
pub struct Partial {
    periods: usize,
    ids: PlHashMap<String, u32>,
    codes: Vec<String>,
    /// Per (agency, field).
    groups: PlHashMap<(u32, u32), Group>,
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

    fn id(&mut self, code: Option<&str>) -> u32 {
        let Some(code) = code else { return ABSENT };
        if let Some(id) = self.ids.get(code) {
            return *id;
        }
        let id = self.codes.len() as u32;
        self.codes.push(code.to_string());
        self.ids.insert(code.to_string(), id);
        id
    }

    fn code(&self, id: u32) -> Option<&str> {
        (id != ABSENT).then(|| self.codes[id as usize].as_str())
    }

    fn group(&mut self, agency: u32, field: u32) -> &mut Group {
        let n = self.periods * PER_PERIOD;
        self.groups.entry((agency, field)).or_insert_with(|| Group {
            counts: vec![0; n],
            ..Default::default()
        })
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
        for ((a, f), g) in &other.groups {
            let mine = self.group(at(*a), at(*f));
            for (x, y) in mine.counts.iter_mut().zip(&g.counts) {
                *x += y;
            }
            least(&mut mine.agency_name, g.agency_name.as_deref());
            least(&mut mine.field_name, g.field_name.as_deref());
            mine.cases += g.cases;
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
        let g = self.group(a, k);
        for (x, y) in g.counts[i * PER_PERIOD..(i + 1) * PER_PERIOD]
            .iter_mut()
            .zip(row.counts)
        {
            *x += y;
        }
        least(&mut g.agency_name, row.names.0);
        least(&mut g.field_name, row.names.1);
        if with_cases {
            g.cases += row.cases;
        }
    }

    /// The rows of period `i`: each group (agency, field, its counts of the period, names,
    /// cases held now), then each use (agency, procedure, the period's count) that is not 0.
    #[allow(clippy::type_complexity)]
    pub fn rows(
        &self,
        i: usize,
    ) -> (
        Vec<(&str, Option<&str>, &[i64], &Group)>,
        Vec<(&str, Option<&str>, i64)>,
    ) {
        let groups = self
            .groups
            .iter()
            .map(|((a, f), g)| {
                let counts = &g.counts[i * PER_PERIOD..(i + 1) * PER_PERIOD];
                (self.code(*a).unwrap_or_default(), self.code(*f), counts, g)
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
        let mut moved_at = 0;
        for row in 0..cases.height() {
            let Some(now) = cols.agency.get(row) else {
                continue;
            };
            let case = &cols.case(row);
            let (now_id, field) = (self.id(Some(now)), self.id(cols.field.get(row)));
            let (agency_name, field_name) = (cols.agency_name.get(row), cols.field_name.get(row));
            // Held now, under the agency holding it.
            let g = self.group(now_id, field);
            g.cases += 1;
            least(&mut g.agency_name, agency_name);
            least(&mut g.field_name, field_name);
            let transfers = match moved.get(moved_at) {
                Some((r, t)) if *r == row => {
                    moved_at += 1;
                    Some(t)
                }
                _ => None,
            };
            for (i, p) in bounds.iter().enumerate() {
                let (hits, on) = rules::counted_on(case, *p);
                let agency = match transfers {
                    Some(t) => attribution::agency_on_day(now, t, on),
                    None => now,
                };
                let outside = hits.iter().any(|h| *h) && !validity.valid(agency, on);
                let agency_id = self.id(Some(agency));
                let g = self.group(agency_id, field);
                if agency_id != now_id {
                    least(&mut g.agency_name, agency_name);
                    least(&mut g.field_name, field_name);
                }
                let counts = &mut g.counts[i * PER_PERIOD..(i + 1) * PER_PERIOD];
                for (n, h) in counts.iter_mut().zip(hits) {
                    *n += h as i64;
                }
                counts[COUNTED] += outside as i64;
                if hits[RECEIVED_NEW] {
                    let procedure = self.id(cols.procedure.get(row));
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
        let mut groups: Vec<(&str, Option<&str>, &Group)> = self
            .groups
            .iter()
            .map(|((a, f), g)| (self.code(*a).unwrap_or_default(), self.code(*f), g))
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
                    .map(|g| g.2.counts[i * PER_PERIOD + m])
                    .collect();
                cols.push(Column::new(format!("{name}{}", suffix(i)).into(), v));
            }
        }
        let names: Vec<Option<&str>> = groups.iter().map(|g| g.2.agency_name.as_deref()).collect();
        let fields: Vec<Option<&str>> = groups.iter().map(|g| g.2.field_name.as_deref()).collect();
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

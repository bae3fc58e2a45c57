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
use super::tables::period_tables;
use super::{KpiTables, Stamp};
use crate::domain::period::Period;
use crate::domain::rules::{self, counted_names, Bounds, Case, COUNTED, RECEIVED_NEW};
use crate::error::Result;
use crate::normalise::Procedure;

fn suffix(i: usize) -> String {
    format!("#{i}")
}

/// Counts kept per period and group: the counted measures, then `_outside`, the cases counted
/// under an agency on a day outside its validity.
const PER_PERIOD: usize = COUNTED + 1;

/// One agency × field: its counts for every period, the least `agency_name_text` and
/// `field_name` of its cases, and the cases it holds now.
#[derive(Debug, Clone, Default)]
struct Group {
    counts: Vec<i64>,
    agency_name: Option<String>,
    field_name: Option<String>,
    cases: i64,
}

/// The lesser of two names, absent ones aside (as polars' `min`).
fn least(kept: &mut Option<String>, seen: Option<&str>) {
    if let Some(s) = seen {
        if kept.as_deref().is_none_or(|k| s < k) {
            *kept = Some(s.to_string());
        }
    }
}

/// What one slice of the staging table adds to every period of a run.
#[derive(Debug, Default)]
pub struct Partial {
    /// Per (agency_code, field_code).
    groups: BTreeMap<(String, Option<String>), Group>,
    /// Per (agency_code, procedure_code), for each period: the cases in received_new.
    used: BTreeMap<(String, Option<String>), Vec<i64>>,
}

impl Partial {
    fn new() -> Partial {
        Partial::default()
    }

    /// Adds `other` to this one.
    fn add(&mut self, other: Partial) {
        for (k, g) in other.groups {
            let mine = self.groups.entry(k).or_insert_with(|| Group {
                counts: vec![0; g.counts.len()],
                ..Default::default()
            });
            for (a, b) in mine.counts.iter_mut().zip(&g.counts) {
                *a += b;
            }
            least(&mut mine.agency_name, g.agency_name.as_deref());
            least(&mut mine.field_name, g.field_name.as_deref());
            mine.cases += g.cases;
        }
        for (k, u) in other.used {
            let mine = self.used.entry(k).or_insert_with(|| vec![0; u.len()]);
            for (a, b) in mine.iter_mut().zip(&u) {
                *a += b;
            }
        }
    }
}

/// The columns of a slice the counting reads, borrowed.
struct Columns<'a> {
    agency: Vec<Option<&'a str>>,
    field: Vec<Option<&'a str>>,
    procedure: Vec<Option<&'a str>>,
    agency_name: Vec<Option<&'a str>>,
    field_name: Vec<Option<&'a str>>,
    cases: Vec<Case>,
}

fn strings<'a>(df: &'a DataFrame, name: &str) -> Result<Vec<Option<&'a str>>> {
    Ok(df.column(name)?.str()?.iter().collect())
}

fn dates(df: &DataFrame, name: &str) -> Result<Vec<Option<i32>>> {
    Ok(df.column(name)?.date()?.physical().iter().collect())
}

impl<'a> Columns<'a> {
    fn of(df: &'a DataFrame) -> Result<Columns<'a>> {
        let status: Vec<Option<i32>> = df.column("status")?.i32()?.iter().collect();
        let channel: Vec<Option<i32>> = df.column("channel")?.i32()?.iter().collect();
        let supplements: Vec<Option<i64>> =
            df.column("supplement_requests")?.i64()?.iter().collect();
        let paid: Vec<Option<bool>> = df.column("paid_online")?.bool()?.iter().collect();
        let digitized: Vec<Option<bool>> = df.column("digitized")?.bool()?.iter().collect();
        let (sub, acc, refd) = (
            dates(df, "submitted_date")?,
            dates(df, "accepted_date")?,
            dates(df, "refused_date")?,
        );
        let (end, due) = (dates(df, "end_date")?, dates(df, "due_date")?);
        let cases = (0..df.height())
            .map(|i| Case {
                status: status[i],
                channel: channel[i],
                sub: sub[i],
                acc: acc[i],
                refd: refd[i],
                end: end[i],
                due: due[i],
                supplement_requests: supplements[i],
                paid_online: paid[i],
                digitized: digitized[i],
            })
            .collect();
        Ok(Columns {
            agency: strings(df, "agency_code")?,
            field: strings(df, "field_code")?,
            procedure: strings(df, "procedure_code")?,
            agency_name: strings(df, "agency_name_text")?,
            field_name: strings(df, "field_name")?,
            cases,
        })
    }
}

/// The counts of one slice while it is counted: codes interned, groups by number, names
/// borrowed from the slice (a row allocates nothing once its group exists).
struct Counting<'a> {
    periods: usize,
    ids: PlHashMap<&'a str, u32>,
    codes: Vec<&'a str>,
    groups: PlHashMap<(u32, u32), usize>,
    list: Vec<(u32, u32, Group)>,
    used: PlHashMap<(u32, u32), Vec<i64>>,
}

/// The id of an absent code.
const ABSENT: u32 = u32::MAX;

impl<'a> Counting<'a> {
    fn new(periods: usize) -> Self {
        Counting {
            periods,
            ids: PlHashMap::new(),
            codes: vec![],
            groups: PlHashMap::new(),
            list: vec![],
            used: PlHashMap::new(),
        }
    }

    fn id(&mut self, code: Option<&'a str>) -> u32 {
        let Some(code) = code else { return ABSENT };
        if let Some(id) = self.ids.get(code) {
            return *id;
        }
        let id = self.codes.len() as u32;
        self.codes.push(code);
        self.ids.insert(code, id);
        id
    }

    fn group(&mut self, agency: u32, field: u32) -> &mut Group {
        let n = self.periods * PER_PERIOD;
        let at = match self.groups.get(&(agency, field)) {
            Some(at) => *at,
            None => {
                self.list.push((
                    agency,
                    field,
                    Group {
                        counts: vec![0; n],
                        ..Default::default()
                    },
                ));
                self.groups.insert((agency, field), self.list.len() - 1);
                self.list.len() - 1
            }
        };
        &mut self.list[at].2
    }

    fn code(&self, id: u32) -> Option<String> {
        (id != ABSENT).then(|| self.codes[id as usize].to_string())
    }

    fn finish(self) -> Partial {
        let mut out = Partial::new();
        for (a, f, g) in &self.list {
            let key = (self.code(*a).unwrap_or_default(), self.code(*f));
            out.groups.insert(key, g.clone());
        }
        for ((a, p), u) in &self.used {
            out.used.insert((self.code(*a).unwrap_or_default(), self.code(*p)), u.clone());
        }
        out
    }
}

/// Counts `cases` (staging rows, at least [`super::INPUT_COLUMNS`]) for every one of
/// `periods`.
pub fn partial(cases: &DataFrame, periods: &[Period], agencies: &Agencies) -> Result<Partial> {
    let bounds: Vec<Bounds> = periods.iter().map(Bounds::of).collect();
    let cols = Columns::of(cases)?;
    let moved = attribution::moved_rows(cases)?;
    let mut validity = attribution::ValidityCache::new(agencies);
    let mut c = Counting::new(periods.len());
    let mut moved_at = 0;
    for (row, case) in cols.cases.iter().enumerate() {
        let Some(now) = cols.agency[row] else { continue };
        let (now_id, field) = (c.id(Some(now)), c.id(cols.field[row]));
        let (agency_name, field_name) = (cols.agency_name[row], cols.field_name[row]);
        // Held now, under the agency holding it.
        let g = c.group(now_id, field);
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
            let hits = rules::counted(case, *p);
            let on = case.attribution_day(*p);
            let agency = match transfers {
                Some(t) => attribution::agency_on_day(now, t, on),
                None => now,
            };
            let outside = hits.iter().any(|h| *h) && !validity.valid(agency, on);
            let agency_id = c.id(Some(agency));
            let g = c.group(agency_id, field);
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
                let procedure = c.id(cols.procedure[row]);
                let n = periods.len();
                c.used.entry((agency_id, procedure)).or_insert_with(|| vec![0; n])[i] += 1;
            }
        }
    }
    Ok(c.finish())
}

/// Gathers the partial counts of every slice.
pub struct Accumulator {
    periods: Vec<Period>,
    sum: Partial,
}

/// The partial counts of all slices, summed, as frames: `counts` per agency × field
/// (`<measure>#<i>` and `_outside#<i>` for each period `i`, `agency_name_text`, `field_name`,
/// `_cases`) and `used` per agency × procedure (`_used#<i>`).
pub struct Totals {
    periods: Vec<Period>,
    counts: DataFrame,
    used: DataFrame,
}

impl Accumulator {
    pub fn new(periods: &[Period]) -> Self {
        Accumulator {
            periods: periods.to_vec(),
            sum: Partial::new(),
        }
    }

    pub fn add(&mut self, p: Partial) {
        self.sum.add(p);
    }

    /// Sums what was added.
    pub fn total(self) -> Result<Totals> {
        let n = self.periods.len();
        let groups = &self.sum.groups;
        let mut cols = vec![
            Column::new(
                "agency_code".into(),
                groups.keys().map(|k| k.0.as_str()).collect::<Vec<_>>(),
            ),
            Column::new(
                "field_code".into(),
                groups.keys().map(|k| k.1.as_deref()).collect::<Vec<_>>(),
            ),
        ];
        for i in 0..n {
            let names = counted_names().into_iter().chain(["_outside"]);
            for (m, name) in names.enumerate() {
                let v: Vec<i64> = groups.values().map(|g| g.counts[i * PER_PERIOD + m]).collect();
                cols.push(Column::new(format!("{name}{}", suffix(i)).into(), v));
            }
        }
        cols.extend([
            Column::new(
                "agency_name_text".into(),
                groups.values().map(|g| g.agency_name.as_deref()).collect::<Vec<_>>(),
            ),
            Column::new(
                "field_name".into(),
                groups.values().map(|g| g.field_name.as_deref()).collect::<Vec<_>>(),
            ),
            Column::new(
                "_cases".into(),
                groups.values().map(|g| g.cases).collect::<Vec<_>>(),
            ),
        ]);
        let counts = DataFrame::new(groups.len(), cols)?;
        let used = &self.sum.used;
        let mut cols = vec![
            Column::new(
                "agency_code".into(),
                used.keys().map(|k| k.0.as_str()).collect::<Vec<_>>(),
            ),
            Column::new(
                "procedure_code".into(),
                used.keys().map(|k| k.1.as_deref()).collect::<Vec<_>>(),
            ),
        ];
        for i in 0..n {
            let v: Vec<i64> = used.values().map(|u| u[i]).collect();
            cols.push(Column::new(format!("_used{}", suffix(i)).into(), v));
        }
        let used = DataFrame::new(used.len(), cols)?;
        Ok(Totals {
            periods: self.periods,
            counts,
            used,
        })
    }
}

impl Totals {
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

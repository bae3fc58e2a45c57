//! Attribution (`agencies.md`, "KPIs: one agency per case per period"): the agency catalog as
//! the KPIs need it — each agency's validity beside the cases — and, for the few cases handed
//! over between agencies, the agency each counts under in a period.

use chrono::NaiveDate;
use polars::prelude::*;

use crate::domain::agency::{agency_on, Catalog, Transfer};
use crate::domain::rules::days;
use crate::error::Result;

/// The agency catalog of a run, as the KPIs need it.
#[derive(Default)]
pub struct Agencies {
    pub catalog: Catalog,
}

impl Agencies {
    pub fn new(catalog: Catalog) -> Result<Agencies> {
        Ok(Agencies { catalog })
    }
}

/// Each agency's validity as days since 1970, looked up once per code.
pub struct ValidityCache<'c> {
    catalog: &'c Catalog,
    seen: PlHashMap<String, (Option<i32>, Option<i32>)>,
}

impl<'c> ValidityCache<'c> {
    pub fn new(agencies: &'c Agencies) -> Self {
        ValidityCache {
            catalog: &agencies.catalog,
            seen: PlHashMap::new(),
        }
    }

    /// Whether `agency` exists on `day` (an agency the catalog does not know, or knows without
    /// dates, always does).
    pub fn valid(&mut self, agency: &str, day: i32) -> bool {
        let (from, to) = match self.seen.get(agency) {
            Some(v) => *v,
            None => {
                let v = self.catalog.get(agency).map_or((None, None), |a| {
                    (a.valid_from.map(days), a.valid_to.map(days))
                });
                self.seen.insert(agency.to_string(), v);
                v
            }
        };
        from.is_none_or(|f| f <= day) && to.is_none_or(|t| day < t)
    }
}

/// The date of a polars `Date` (days since 1970-01-01).
fn day(days: i32) -> Option<NaiveDate> {
    NaiveDate::default().checked_add_signed(chrono::Duration::days(days as i64))
}

/// The rows of `cases` handed over at least once, in row order, with their hand-overs.
pub fn moved_rows(cases: &DataFrame) -> Result<Vec<(usize, Vec<Transfer>)>> {
    let lists = cases.column("transfers")?.list()?;
    let mut out = vec![];
    let mut row = 0;
    for arr in lists.downcast_iter() {
        for n in arr.offsets().lengths() {
            if n > 0 {
                out.push((row, transfers_of(lists, row)?));
            }
            row += 1;
        }
    }
    Ok(out)
}

/// The agency of a case held by `now` with `transfers`, on `on` (days since 1970).
pub fn agency_on_day<'a>(now: &'a str, transfers: &'a [Transfer], on: i32) -> &'a str {
    match day(on) {
        Some(d) => agency_on(now, transfers, d),
        None => now,
    }
}

/// The hand-overs of one staged case.
fn transfers_of(list: &ListChunked, row: usize) -> Result<Vec<Transfer>> {
    let Some(items) = list.get_as_series(row) else {
        return Ok(vec![]);
    };
    let items = items.struct_()?;
    let fields = items.fields_as_series();
    let field = |name: &str| fields.iter().find(|f| f.name().as_str() == name).cloned();
    let (Some(from), Some(on)) = (field("from_agency"), field("transferred_on")) else {
        return Ok(vec![]);
    };
    let to = field("to_agency");
    let from = from.str()?.clone();
    // Days since 1970 (the list hands its struct fields over physical or as dates).
    let on = on.cast(&DataType::Int32)?.i32()?.clone();
    let to = to.map(|t| t.str().cloned()).transpose()?;
    Ok((0..items.len())
        .filter_map(|k| {
            Some(Transfer {
                from: from.get(k)?.to_string(),
                to: to.as_ref().and_then(|t| t.get(k)).map(str::to_string),
                on: day(on.get(k)?)?,
            })
        })
        .collect())
}

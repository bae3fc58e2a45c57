//! Stage 5: the KPIs, as typed polars plans over the staging table.
//!
//! Every measure is a count of cases, so a period's counts over the staging table are the sums
//! of its counts over each slice of it: [`scan`] reads each partition once, a few row groups
//! at a time and only [`INPUT_COLUMNS`], for every period of a run; [`partial`] counts and sums; and [`tables`] builds each period's
//! `cases_by_agency` (every measure of [`crate::domain::rules`] per agency × field),
//! `cases_by_level` (those rows summed per level and for `all`, so the two tables always roll
//! up exactly) and `catalog_by_level`. The identities of `kpi.md` are checked on every row of
//! both case tables ([`identities`]).

pub mod attribution;
pub mod identities;
pub mod partial;
pub mod restate;
pub mod scan;
pub mod tables;

use serde::{Deserialize, Serialize};

pub use attribution::Agencies;
pub use identities::{check_identities, IdentityCheck};
pub use partial::{partial, Accumulator, Partial, Totals};
use polars::prelude::DataFrame;

use crate::domain::period::Period;
use crate::error::Result;
use crate::normalise::Procedure;

/// The three KPI tables of one period.
#[derive(Clone)]
pub struct KpiTables {
    pub period: Period,
    /// The run that computed them.
    pub run_id: String,
    pub by_agency: DataFrame,
    pub by_level: DataFrame,
    pub catalog: DataFrame,
    /// The case tables restated to the structure of a target date.
    pub restated: restate::Restated,
    pub identities: Vec<IdentityCheck>,
}

impl KpiTables {
    pub fn identities_hold(&self) -> bool {
        self.identities.iter().all(|c| c.failures == 0)
    }
}

/// The staging columns the KPIs read; a slice is decoded with these alone.
pub const INPUT_COLUMNS: [&str; 16] = [
    "agency_code",
    "agency_name_text",
    "procedure_code",
    "field_code",
    "field_name",
    "channel",
    "status",
    "supplement_requests",
    "paid_online",
    "digitized",
    "submitted_date",
    "accepted_date",
    "refused_date",
    "end_date",
    "due_date",
    "transfers",
];

/// What the tables of a period are stamped with, and the date they are restated to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stamp {
    pub run_id: String,
    /// Epoch microseconds.
    pub computed_at: i64,
    /// Restated tables follow main successors to the agencies existing on this day.
    pub restate_to: chrono::NaiveDate,
}

/// Computes the three tables of `period` from the staging `cases` (all of it in one frame).
pub fn compute(
    cases: &DataFrame,
    agencies: &Agencies,
    catalog: &[Procedure],
    period: &Period,
    stamp: &Stamp,
) -> Result<KpiTables> {
    let mut acc = Accumulator::new(&[*period]);
    acc.add(partial(cases, &[*period], agencies)?);
    acc.total()?.tables(0, agencies, catalog, stamp)
}

/// Tables of one Decree 09 quarter from a few records, for tests.
#[cfg(test)]
pub(crate) fn tables_of(records: &[serde_json::Value], cap: i32) -> KpiTables {
    use crate::domain::period::{Convention, PeriodId};
    use crate::normalise::{Normaliser, PiiKey};
    let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
    n.add_records("raw/x", records);
    let cases = n.finish().unwrap().cases;
    let agencies = Agencies::new(crate::domain::agency::Catalog::new(vec![
        crate::normalise::Agency {
            code: "X".into(),
            cap: Some(cap),
            ..Default::default()
        },
    ]))
    .unwrap();
    let period = "2024-Q3"
        .parse::<PeriodId>()
        .unwrap()
        .resolve(Convention::Decree09);
    let stamp = Stamp {
        run_id: "r".into(),
        computed_at: 0,
        restate_to: "2026-01-01".parse().unwrap(),
    };
    compute(&cases, &agencies, &[], &period, &stamp).unwrap()
}

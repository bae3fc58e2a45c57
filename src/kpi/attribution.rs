//! Attribution (`agencies.md`, "KPIs: one agency per case per period"): the agency catalog as
//! the KPIs need it — each agency's validity beside the cases — and, for the few cases handed
//! over between agencies, the agency each counts under in a period.

use chrono::NaiveDate;
use polars::prelude::*;

use crate::domain::agency::{agency_on, attribution_date, Catalog, Transfer};
use crate::domain::period::Period;
use crate::domain::rules::is_ended;
use crate::error::Result;

/// The agency catalog of a run, with each agency's validity as a frame to join.
#[derive(Default)]
pub struct Agencies {
    pub catalog: Catalog,
    /// `agency_code`, `_valid_from`, `_valid_to`; `None` when no agency has validity dates.
    validity: Option<DataFrame>,
}

impl Agencies {
    pub fn new(catalog: Catalog) -> Result<Agencies> {
        let dated = catalog
            .all()
            .iter()
            .any(|a| a.valid_from.is_some() || a.valid_to.is_some());
        let validity = match dated {
            false => None,
            true => {
                let a = catalog.all();
                let days =
                    |d: Option<NaiveDate>| d.map(|d| (d - NaiveDate::default()).num_days() as i32);
                Some(DataFrame::new(
                    a.len(),
                    vec![
                        Column::new(
                            "agency_code".into(),
                            a.iter().map(|a| a.code.as_str()).collect::<Vec<_>>(),
                        ),
                        Column::new(
                            "_valid_from".into(),
                            a.iter().map(|a| days(a.valid_from)).collect::<Vec<_>>(),
                        )
                        .cast(&DataType::Date)?,
                        Column::new(
                            "_valid_to".into(),
                            a.iter().map(|a| days(a.valid_to)).collect::<Vec<_>>(),
                        )
                        .cast(&DataType::Date)?,
                    ],
                )?)
            }
        };
        Ok(Agencies { catalog, validity })
    }

    /// `cases` with the validity of the agency in `agency_code` (null: always valid).
    pub fn with_validity(&self, cases: LazyFrame) -> LazyFrame {
        match &self.validity {
            Some(v) => cases.join(
                v.clone().lazy(),
                [col("agency_code")],
                [col("agency_code")],
                JoinArgs::new(JoinType::Left),
            ),
            None => cases.with_columns([
                lit(NULL).cast(DataType::Date).alias("_valid_from"),
                lit(NULL).cast(DataType::Date).alias("_valid_to"),
            ]),
        }
    }
}

/// The date of a polars `Date` (days since 1970-01-01).
fn day(days: i32) -> Option<NaiveDate> {
    NaiveDate::default().checked_add_signed(chrono::Duration::days(days as i64))
}

/// The rows of `cases` never handed over, and those handed over at least once.
pub fn split(cases: &DataFrame) -> Result<(DataFrame, DataFrame)> {
    let lists = cases.column("transfers")?.list()?;
    let mut moved: Vec<bool> = Vec::with_capacity(cases.height());
    for arr in lists.downcast_iter() {
        moved.extend(arr.offsets().lengths().map(|n| n > 0));
    }
    if !moved.iter().any(|m| *m) {
        return Ok((cases.clone(), cases.clear()));
    }
    let mask = BooleanChunked::from_slice("moved".into(), &moved);
    Ok((cases.filter(&!&mask)?, cases.filter(&mask)?))
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

/// `moved` with `agency_code` set to each case's agency on its attribution date in `period`.
pub fn as_of(moved: &DataFrame, period: &Period) -> Result<DataFrame> {
    let current = moved.column("agency_code")?.str()?;
    let status = moved.column("status")?.i32()?;
    let end = moved.column("end_date")?.date()?.physical().clone();
    let lists = moved.column("transfers")?.list()?;
    let mut agencies: Vec<Option<String>> = Vec::with_capacity(moved.height());
    for row in 0..moved.height() {
        let Some(now) = current.get(row) else {
            agencies.push(None);
            continue;
        };
        let ended = status.get(row).is_some_and(is_ended);
        let end = end.get(row).and_then(day);
        let on = attribution_date(period, ended, end);
        let transfers = transfers_of(lists, row)?;
        agencies.push(Some(agency_on(now, &transfers, on).to_string()));
    }
    let mut then = moved.clone();
    then.with_column(Column::new("agency_code".into(), agencies))?;
    Ok(then)
}

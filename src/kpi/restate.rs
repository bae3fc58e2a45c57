//! Restated figures (`agencies.md`, "Restated figures"): each agency's rows of a period moved
//! to the agency that took over from it in the structure of a target date — following main
//! successors — and summed there. Rows are only regrouped, so the restated `all` row always
//! equals the as-was one; that is checked on every run like the identities.

use chrono::NaiveDate;
use polars::prelude::*;

use super::attribution::Agencies;
use super::identities::IdentityCheck;
use super::tables::{by_level, period_columns, stamped};
use super::Stamp;
use crate::domain::period::Period;
use crate::domain::rules::{self, measure_names};
use crate::domain::Level;
use crate::error::{Doing, Result};

/// A period's case tables restated to the structure of `to`.
#[derive(Clone)]
pub struct Restated {
    pub to: NaiveDate,
    pub by_agency: DataFrame,
    pub by_level: DataFrame,
    /// Agencies whose chain of successors ends in one that neither exists on `to` nor has a
    /// successor: their rows stay under that last agency.
    pub broken_chains: Vec<String>,
}

impl Restated {
    /// Whether restating moved anything: some row counts under another agency or level.
    pub fn differs(&self, by_level_as_was: &DataFrame) -> bool {
        let levels = |df: &DataFrame| -> Vec<String> {
            df.column("level")
                .and_then(|c| c.str().cloned())
                .map(|c| c.iter().flatten().map(str::to_string).collect())
                .unwrap_or_default()
        };
        let key = [
            "level",
            "received_total",
            "resolved_total",
            "in_progress_total",
        ];
        levels(&self.by_level) != levels(by_level_as_was)
            || self.by_level.select(key).ok() != by_level_as_was.select(key).ok()
    }
}

/// Where each agency of `codes` goes: `agency_code`, `_to_code`, `_to_level`, `_to_name`.
fn mapping(
    codes: &StringChunked,
    agencies: &Agencies,
    to: NaiveDate,
) -> Result<(DataFrame, Vec<String>)> {
    let mut from = vec![];
    let (mut code, mut level, mut name) = (vec![], vec![], vec![]);
    let mut broken = vec![];
    for c in codes.unique()?.iter().flatten() {
        let r = agencies.catalog.restate(c, to);
        if r.broken {
            broken.push(c.to_string());
        }
        let a = agencies.catalog.get(&r.code);
        from.push(c.to_string());
        level.push(a.map_or(Level::Unknown, |a| a.level()).as_str());
        name.push(a.and_then(|a| a.name.clone()));
        code.push(r.code);
    }
    broken.sort();
    let df =
        df!("agency_code" => from, "_to_code" => code, "_to_level" => level, "_to_name" => name)?;
    Ok((df, broken))
}

/// The restated tables of a period from its as-was `cases_by_agency`.
pub fn restate(
    by_agency: &DataFrame,
    agencies: &Agencies,
    period: &Period,
    stamp: &Stamp,
) -> Result<Restated> {
    let to = stamp.restate_to;
    let (map, broken_chains) = mapping(by_agency.column("agency_code")?.str()?, agencies, to)?;
    let names = measure_names();
    let mut aggs: Vec<Expr> = names.iter().map(|m| col(*m).sum().alias(*m)).collect();
    aggs.extend([
        col("_to_level").first().alias("level"),
        coalesce(&[col("_to_name"), col("agency_name")])
            .first()
            .alias("agency_name"),
        col("field_name").first().alias("field_name"),
    ]);
    let mut select: Vec<Expr> = period_columns(period);
    select.extend([
        col("level"),
        col("agency_code"),
        col("agency_name"),
        col("field_code"),
        col("field_name"),
    ]);
    select.extend(names.iter().map(|m| col(*m)));
    select.extend(rules::rates());
    let restated = by_agency
        .clone()
        .lazy()
        .join(
            map.lazy(),
            [col("agency_code")],
            [col("agency_code")],
            JoinArgs::new(JoinType::Left),
        )
        .group_by([col("_to_code").alias("agency_code"), col("field_code")])
        .agg(aggs)
        .sort(
            ["agency_code", "field_code"],
            SortMultipleOptions::default().with_nulls_last(true),
        )
        .select(select)
        .collect()
        .doing("restating cases_by_agency")?;
    let levels = agencies.catalog.levels_on(to);
    let by_level = by_level(&restated, period, &levels)?;
    Ok(Restated {
        to,
        by_agency: dated(restated, stamp)?,
        by_level: dated(by_level, stamp)?,
        broken_chains,
    })
}

/// A restated table stamped, and its `restated_to`.
fn dated(df: DataFrame, stamp: &Stamp) -> Result<DataFrame> {
    let mut df = stamped(df, stamp)?;
    let h = df.height();
    let days = (stamp.restate_to - NaiveDate::default()).num_days() as i32;
    df.with_column(Column::new("restated_to".into(), vec![days; h]).cast(&DataType::Date)?)?;
    Ok(df)
}

/// The restated `all` row equals the as-was one, measure by measure.
pub fn check_all(
    period: &Period,
    as_was: &DataFrame,
    restated: &DataFrame,
) -> Result<IdentityCheck> {
    // The `all` rows of a table, each as its measures. Read value by value: a polars filter
    // on `level` broadcast a constant mask, which makes polars zero the 8 MiB it keeps for
    // its first null or false array (see `rules::ratio`).
    let all = |df: &DataFrame| -> Result<Vec<Vec<AnyValue<'static>>>> {
        let names: Vec<&str> = measure_names();
        let measures = names
            .iter()
            .map(|n| df.column(n))
            .collect::<PolarsResult<Vec<_>>>()?;
        let level = df.column("level")?.str()?;
        let mut rows = vec![];
        for (i, l) in level.iter().enumerate() {
            if l == Some(Level::All.as_str()) {
                rows.push(
                    measures
                        .iter()
                        .map(|m| m.get(i).map(|v| v.into_static()))
                        .collect::<PolarsResult<_>>()?,
                );
            }
        }
        Ok(rows)
    };
    let (a, r) = (all(as_was)?, all(restated)?);
    Ok(IdentityCheck {
        period: period.id.to_string(),
        table: "cases_by_level_restated".into(),
        identity: "restated all = as-was all".into(),
        rows: r.len() as u64,
        failures: u64::from(!(a.len() == 1 && a == r)),
    })
}

#[cfg(test)]
mod all_row_tests {
    use super::*;
    use crate::domain::period::{Convention, PeriodId};

    /// A `cases_by_level` of `levels`, every measure of row `i` being `i`, plus `bump` on the
    /// `all` row's `resolved_early`.
    fn table(levels: &[&str], bump: i64) -> DataFrame {
        let mut cols = vec![Column::new("level".into(), levels)];
        for n in measure_names() {
            let v: Vec<i64> = (0..levels.len() as i64)
                .map(|i| {
                    let all = levels[i as usize] == "all";
                    i + if all && n == "resolved_early" {
                        bump
                    } else {
                        0
                    }
                })
                .collect();
            cols.push(Column::new(n.into(), v));
        }
        DataFrame::new(levels.len(), cols).unwrap()
    }

    #[test]
    fn the_restated_all_row_must_equal_the_as_was_one() {
        let period = "2024-Q3"
            .parse::<PeriodId>()
            .unwrap()
            .resolve(Convention::Decree09);
        let as_was = table(&["province", "district", "all"], 0);
        let check = |restated: &DataFrame| check_all(&period, &as_was, restated).unwrap();
        // Fewer levels, the same `all` row (the third in both): it holds.
        let same = check(&table(&["province", "commune", "all"], 0));
        assert_eq!((same.rows, same.failures), (1, 0));
        // One measure of `all` differs: it fails.
        let differs = check(&table(&["province", "commune", "all"], 1));
        assert_eq!((differs.rows, differs.failures), (1, 1));
        // No `all` row, or two: it fails.
        let none = check(&table(&["province", "commune", "other"], 0));
        assert_eq!((none.rows, none.failures), (0, 1));
        let two = check(&table(&["province", "all", "all"], 0));
        assert_eq!((two.rows, two.failures), (2, 1));
    }
}

//! The three tables of one period, from its counts per agency × field and the (agency,
//! procedure) pairs with a case in received_new.

use std::collections::{BTreeMap, BTreeSet};

use polars::prelude::*;

use super::attribution::Agencies;
use super::identities::check_identities;
use super::{KpiTables, Stamp};
use crate::domain::period::Period;
use crate::domain::rules::{self, measure_names, CATALOG_MEASURES};
use crate::domain::Level;
use crate::error::{Doing, Error, Result};
use crate::normalise::{Agency, Procedure};
use crate::parquet::utc_micros;

/// Sorts rows by level in [`Level::ORDER`]: province, district, commune, unknown, all.
pub fn level_rank() -> Expr {
    Level::ORDER
        .iter()
        .enumerate()
        .rev()
        .fold(lit(99i32), |rest, (i, l)| {
            when(col("level").eq(lit(l.as_str())))
                .then(lit(i as i32))
                .otherwise(rest)
        })
}

/// Every table starts with its period.
pub fn period_columns(period: &Period) -> Vec<Expr> {
    vec![
        rules::date(period.start).alias("period_start"),
        rules::date(period.end).alias("period_end"),
        lit(period.convention.as_str()).alias("period_convention"),
    ]
}

/// Appends `run_id` and `computed_at` (built as a column: polars 0.55 drops the zone when it
/// casts an integer literal to a zoned `Datetime`).
pub fn stamped(mut df: DataFrame, stamp: &Stamp) -> Result<DataFrame> {
    let h = df.height();
    df.with_column(Column::new("run_id".into(), vec![stamp.run_id.as_str(); h]))?;
    df.with_column(utc_micros("computed_at", vec![Some(stamp.computed_at); h]))?;
    Ok(df)
}

/// Each agency's catalog name and level.
fn agency_frame(agencies: &[Agency]) -> Result<DataFrame> {
    let codes: Vec<&str> = agencies.iter().map(|a| a.code.as_str()).collect();
    let names: Vec<Option<&str>> = agencies.iter().map(|a| a.name.as_deref()).collect();
    let levels: Vec<&str> = agencies
        .iter()
        .map(|a| Level::of_cap(a.cap).as_str())
        .collect();
    Ok(df!("agency_code" => codes, "catalog_agency_name" => names, "level" => levels)?)
}

/// Field names from the procedure catalog (first procedure of each field, by code).
fn field_frame(catalog: &[Procedure]) -> Result<DataFrame> {
    let mut fields: BTreeMap<&str, &str> = BTreeMap::new();
    let mut sorted: Vec<&Procedure> = catalog.iter().collect();
    sorted.sort_by(|a, b| a.code.cmp(&b.code));
    for p in sorted {
        if let (Some(c), Some(n)) = (p.field_code.as_deref(), p.field_name.as_deref()) {
            fields.entry(c).or_insert(n);
        }
    }
    let codes: Vec<&str> = fields.keys().copied().collect();
    let names: Vec<&str> = fields.values().copied().collect();
    Ok(df!("field_code" => codes, "catalog_field_name" => names)?)
}

/// `lf` with each agency's level (`unknown` when not in the catalog).
fn with_level(lf: LazyFrame, agencies: &[Agency]) -> Result<LazyFrame> {
    Ok(lf
        .join(
            agency_frame(agencies)?.lazy(),
            [col("agency_code")],
            [col("agency_code")],
            JoinArgs::new(JoinType::Left),
        )
        .with_column(col("level").fill_null(lit(Level::Unknown.as_str()))))
}

/// The tables of one period: as was, and restated to `stamp.restate_to`.
pub fn period_tables(
    per_agency: LazyFrame,
    used: LazyFrame,
    agencies: &Agencies,
    catalog: &[Procedure],
    period: &Period,
    stamp: &Stamp,
) -> Result<KpiTables> {
    let known = agencies.catalog.all();
    let by_agency = stamped(by_agency(per_agency, known, catalog, period)?, stamp)?;
    // The other tables each from `by_agency` (or the uses), on threads of their own: the
    // count's threads are done, and building them one after another left a core idle.
    let (by_level, catalog, restated) = std::thread::scope(|s| {
        let catalog = s.spawn(|| -> Result<DataFrame> {
            let with_cases = with_level(used, known)?
                .select([col("level"), col("procedure_code")])
                .unique(None, UniqueKeepStrategy::Any)
                .collect()?;
            stamped(catalog_by_level(catalog, &with_cases, period)?, stamp)
        });
        let restated = s.spawn(|| super::restate::restate(&by_agency, agencies, period, stamp));
        // The levels that exist at the period's start are always shown, empty or not.
        let levels = agencies.catalog.levels_on(period.start);
        let by_level = by_level(&by_agency, period, &levels).and_then(|t| stamped(t, stamp));
        // Both joined before any error is returned (a thread left unjoined that panicked
        // would panic the scope).
        let (catalog, restated) = (catalog.join(), restated.join());
        let panicked = |_| Error::Internal("a thread building the KPI tables panicked".into());
        Ok::<_, Error>((
            by_level?,
            catalog.map_err(panicked)??,
            restated.map_err(panicked)??,
        ))
    })?;
    let mut identities = check_identities(period, "cases_by_agency", &by_agency)?;
    identities.extend(check_identities(period, "cases_by_level", &by_level)?);
    identities.extend(check_identities(
        period,
        "cases_by_agency_restated",
        &restated.by_agency,
    )?);
    identities.extend(check_identities(
        period,
        "cases_by_level_restated",
        &restated.by_level,
    )?);
    identities.push(super::restate::check_all(
        period,
        &by_level,
        &restated.by_level,
    )?);
    Ok(KpiTables {
        period: *period,
        run_id: stamp.run_id.clone(),
        by_agency,
        by_level,
        catalog,
        restated,
        identities,
    })
}

/// `cases_by_agency`: one row per agency × field with a count, every measure and rate.
fn by_agency(
    per_agency: LazyFrame,
    agencies: &[Agency],
    catalog: &[Procedure],
    period: &Period,
) -> Result<DataFrame> {
    let count_cols: Vec<Expr> = measure_names().iter().map(|c| col(*c)).collect();
    let any_count = count_cols
        .iter()
        .fold(lit(false), |any, c| any.or(c.clone().gt(lit(0i64))));
    let mut select: Vec<Expr> = period_columns(period);
    select.extend([
        col("level"),
        col("agency_code"),
        coalesce(&[col("catalog_agency_name"), col("agency_name_text")]).alias("agency_name"),
        col("field_code"),
        coalesce(&[col("catalog_field_name"), col("case_field_name")]).alias("field_name"),
    ]);
    select.extend(count_cols);
    select.extend(rules::rates());
    with_level(per_agency, agencies)?
        .with_column(rules::received_total())
        .filter(any_count)
        .join(
            field_frame(catalog)?.lazy(),
            [col("field_code")],
            [col("field_code")],
            JoinArgs::new(JoinType::Left),
        )
        .sort(
            ["agency_code", "field_code"],
            SortMultipleOptions::default().with_nulls_last(true),
        )
        .select(select)
        .collect()
        .doing("computing cases_by_agency")
}

/// `cases_by_level`: the agency rows summed per level — the `levels` always present — and
/// for `all`.
pub fn by_level(by_agency: &DataFrame, period: &Period, levels: &[Level]) -> Result<DataFrame> {
    let names = measure_names();
    let count_cols: Vec<Expr> = names.iter().map(|c| col(*c)).collect();
    let sums: Vec<Expr> = names.iter().map(|c| col(*c).sum().alias(*c)).collect();
    let always: Vec<&str> = levels.iter().map(|l| l.as_str()).collect();
    let counted = by_agency
        .clone()
        .lazy()
        .group_by([col("level")])
        .agg(sums.clone());
    let levels = df!("level" => always)?
        .lazy()
        .join(
            counted,
            [col("level")],
            [col("level")],
            JoinArgs::new(JoinType::Full).with_coalesce(JoinCoalesce::CoalesceColumns),
        )
        .with_columns(
            names
                .iter()
                .map(|c| col(*c).fill_null(lit(0i64)))
                .collect::<Vec<_>>(),
        );
    let mut all_cols = vec![col("level")];
    all_cols.extend(count_cols.clone());
    let all = by_agency
        .clone()
        .lazy()
        .select(sums)
        .with_column(lit(Level::All.as_str()).alias("level"))
        .select(all_cols);
    let mut select: Vec<Expr> = period_columns(period);
    select.push(col("level"));
    select.extend(count_cols.into_iter().map(|c| c.cast(DataType::Int64)));
    select.extend(rules::rates());
    concat([levels, all], UnionArgs::default())?
        .sort_by_exprs([level_rank()], SortMultipleOptions::default())
        .select(select)
        .collect()
        .doing("computing cases_by_level")
}

/// `catalog_by_level`: the procedure-catalog measures per level and for `all` (distinct
/// procedures), with `with_cases` the (level, procedure) pairs that had a case.
fn catalog_by_level(
    catalog: &[Procedure],
    with_cases: &DataFrame,
    period: &Period,
) -> Result<DataFrame> {
    let lv = with_cases.column("level")?.str()?;
    let pc = with_cases.column("procedure_code")?.str()?;
    let mut used: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (l, p) in lv.iter().zip(pc.iter()) {
        if let (Some(l), Some(p)) = (l, p) {
            used.insert((l, p));
        }
    }
    let levels = [Level::Province, Level::District, Level::Commune, Level::All];
    let mut cols: Vec<Column> = vec![Column::new(
        "level".into(),
        levels.iter().map(|l| l.as_str()).collect::<Vec<_>>(),
    )];
    let rows: Vec<[i64; 6]> = levels
        .iter()
        .map(|l| catalog_row(catalog, &used, *l))
        .collect();
    for (i, n) in CATALOG_MEASURES.iter().enumerate() {
        cols.push(Column::new(
            (*n).into(),
            rows.iter().map(|r| r[i]).collect::<Vec<i64>>(),
        ));
    }
    let df = DataFrame::new(rows.len(), cols)?;
    let mut select = period_columns(period);
    select.push(col("level"));
    select.extend(CATALOG_MEASURES.iter().map(|n| col(*n)));
    let of_procedures = |num: Expr| rules::ratio(num, col("procedures"));
    select.push(of_procedures(col("online_full") + col("online_partial")).alias("online_rate"));
    select.push(of_procedures(col("online_full")).alias("full_online_rate"));
    Ok(df.lazy().select(select).collect()?)
}

/// The catalog measures of one level ([`CATALOG_MEASURES`], in order).
fn catalog_row(catalog: &[Procedure], used: &BTreeSet<(&str, &str)>, level: Level) -> [i64; 6] {
    let at: Vec<&Procedure> = catalog
        .iter()
        .filter(|p| level.cap().is_none_or(|cap| p.levels.contains(&cap)))
        .collect();
    let n = |f: &dyn Fn(&Procedure) -> bool| at.iter().filter(|p| f(p)).count() as i64;
    // At any level: a set of the codes, not a scan of every (level, code) per procedure.
    let anywhere: BTreeSet<&str> = match level.cap() {
        None => used.iter().map(|(_, c)| *c).collect(),
        Some(_) => BTreeSet::new(),
    };
    let with_cases = match level.cap() {
        None => n(&|p| anywhere.contains(p.code.as_str())),
        Some(_) => n(&|p| used.contains(&(level.as_str(), p.code.as_str()))),
    };
    [
        at.len() as i64,
        n(&|p| p.one_stop),
        n(&|p| p.inter_agency),
        n(&|p| p.online == Some(rules::ONLINE_FULL)),
        n(&|p| p.online == Some(rules::ONLINE_PARTIAL)),
        with_cases,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn procedure(code: &str, levels: &[i32], online: Option<i32>) -> Procedure {
        Procedure {
            code: code.into(),
            name: None,
            field_code: Some("F".into()),
            field_name: Some("Lĩnh vực".into()),
            levels: levels.to_vec(),
            online,
            one_stop: true,
            inter_agency: code == "P2",
        }
    }

    #[test]
    fn the_catalog_per_level_counts_each_procedure_once_in_all() {
        let catalog = [
            procedure("P1", &[1, 2], Some(2)),
            procedure("P2", &[2, 3], Some(1)),
            procedure("P3", &[3], None),
        ];
        let with_cases =
            df!("level" => ["district", "commune"], "procedure_code" => ["P1", "P1"]).unwrap();
        let period = "2024-Q3"
            .parse::<crate::domain::PeriodId>()
            .unwrap()
            .resolve(crate::domain::Convention::Calendar);
        let df = catalog_by_level(&catalog, &with_cases, &period).unwrap();
        let levels: Vec<&str> = df
            .column("level")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .flatten()
            .collect();
        assert_eq!(levels, ["province", "district", "commune", "all"]);
        let col = |n: &str| -> Vec<i64> {
            df.column(n)
                .unwrap()
                .i64()
                .unwrap()
                .iter()
                .flatten()
                .collect()
        };
        assert_eq!(col("procedures"), [1, 2, 2, 3]);
        assert_eq!(col("inter_agency"), [0, 1, 1, 1]);
        assert_eq!(col("online_full"), [1, 1, 0, 1]);
        assert_eq!(
            col("with_cases"),
            [0, 1, 0, 1],
            "P1 had a case at the district level"
        );
        let rate = df.column("online_rate").unwrap().f64().unwrap();
        assert_eq!(rate.get(3), Some(2.0 / 3.0));
    }

    #[test]
    fn levels_sort_in_row_order() {
        let df = df!("level" => ["all", "unknown", "commune", "province", "district"]).unwrap();
        let sorted = df
            .lazy()
            .sort_by_exprs([level_rank()], SortMultipleOptions::default())
            .collect()
            .unwrap();
        let got: Vec<&str> = sorted
            .column("level")
            .unwrap()
            .str()
            .unwrap()
            .iter()
            .flatten()
            .collect();
        assert_eq!(got, Level::ORDER.map(|l| l.as_str()));
    }
}

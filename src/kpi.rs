//! Stage 4: the KPIs of one period, as typed polars plans over the staging table.
//!
//! `cases_by_agency` counts every measure of [`crate::rules::measures`] per agency × field;
//! `cases_by_level` sums those rows per level and for the whole province (`all`), so the two
//! tables always roll up exactly; `catalog_by_level` counts the procedure catalog. The identities
//! of `kpi.md` are checked on every row of both case tables.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use polars::prelude::*;
use serde::Serialize;

use crate::normalise::{Agency, Procedure};
use crate::period::Period;
use crate::rules::{self, level_name, LEVEL_ORDER};

/// The three KPI tables of one period.
pub struct KpiTables {
    pub period: Period,
    pub by_agency: DataFrame,
    pub by_level: DataFrame,
    pub catalog: DataFrame,
    pub identities: Vec<IdentityCheck>,
}

/// One identity checked over one table.
#[derive(Debug, Clone, Serialize)]
pub struct IdentityCheck {
    pub period: String,
    pub table: String,
    pub identity: String,
    pub rows: u64,
    pub failures: u64,
}

impl KpiTables {
    pub fn identities_hold(&self) -> bool {
        self.identities.iter().all(|c| c.failures == 0)
    }
}

fn utc_us() -> DataType {
    DataType::Datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
}

fn agency_frame(agencies: &[Agency]) -> Result<DataFrame> {
    let codes: Vec<&str> = agencies.iter().map(|a| a.code.as_str()).collect();
    let names: Vec<Option<&str>> = agencies.iter().map(|a| a.name.as_deref()).collect();
    let levels: Vec<&str> = agencies.iter().map(|a| level_name(a.cap)).collect();
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

/// The staging cases with their level (`unknown` for an agency not in `/v1/donvi`).
pub fn with_levels(cases: &DataFrame, agencies: &[Agency]) -> Result<LazyFrame> {
    Ok(cases
        .clone()
        .lazy()
        .join(
            agency_frame(agencies)?.lazy(),
            [col("agency_code")],
            [col("agency_code")],
            JoinArgs::new(JoinType::Left),
        )
        .with_column(col("level").fill_null(lit("unknown"))))
}

fn counts() -> Vec<&'static str> {
    rules::measure_names()
}

fn level_rank() -> Expr {
    LEVEL_ORDER.iter().enumerate().rev().fold(lit(99i32), |rest, (i, l)| {
        when(col("level").eq(lit(*l))).then(lit(i as i32)).otherwise(rest)
    })
}

fn period_columns(period: &Period) -> Vec<Expr> {
    vec![
        lit(period.start).alias("period_start"),
        lit(period.end).alias("period_end"),
        lit(period.convention.as_str()).alias("period_convention"),
    ]
}

fn stamp(run_id: &str, computed_at: i64) -> Vec<Expr> {
    // Cast through Int64 first: a literal that is already a zoned Datetime keeps its zone.
    vec![lit(run_id).alias("run_id"), lit(computed_at).cast(DataType::Int64).cast(utc_us()).alias("computed_at")]
}

/// Computes the three tables of `period` from the staging `cases`.
pub fn compute(
    cases: &DataFrame,
    agencies: &[Agency],
    catalog: &[Procedure],
    period: &Period,
    run_id: &str,
    computed_at: i64,
) -> Result<KpiTables> {
    let (f, l) = (period.start, period.end);
    let lf = with_levels(cases, agencies)?;
    let count_cols: Vec<Expr> = counts().iter().map(|c| col(*c)).collect();
    let any_count = count_cols.iter().cloned().map(|c| c.gt(lit(0i64))).reduce(|a, b| a.or(b)).expect("measures");

    // cases_by_agency
    let mut aggs = rules::count_aggs(f, l);
    aggs.push(col("level").first().alias("level"));
    aggs.push(col("catalog_agency_name").first().alias("catalog_agency_name"));
    aggs.push(col("agency_name_text").min().alias("agency_name_text"));
    aggs.push(col("field_name").min().alias("case_field_name"));
    let mut select: Vec<Expr> = period_columns(period);
    select.extend([
        col("level"),
        col("agency_code"),
        coalesce(&[col("catalog_agency_name"), col("agency_name_text")]).alias("agency_name"),
        col("field_code"),
        coalesce(&[col("catalog_field_name"), col("case_field_name")]).alias("field_name"),
    ]);
    select.extend(count_cols.clone());
    select.extend(rules::rates());
    select.extend(stamp(run_id, computed_at));
    let by_agency = lf
        .clone()
        .group_by([col("agency_code"), col("field_code")])
        .agg(aggs)
        .with_column(rules::received_total())
        .filter(any_count)
        .join(field_frame(catalog)?.lazy(), [col("field_code")], [col("field_code")], JoinArgs::new(JoinType::Left))
        .sort(["agency_code", "field_code"], SortMultipleOptions::default().with_nulls_last(true))
        .select(select)
        .collect()
        .map_err(anyhow::Error::from)
        .context("computing cases_by_agency")?;

    // cases_by_level: the agency rows summed per level, the three levels always present.
    let sums: Vec<Expr> = counts().iter().map(|c| col(*c).sum().alias(*c)).collect();
    let levels = by_agency.clone().lazy().group_by([col("level")]).agg(sums.clone());
    let base = df!("level" => ["province", "district", "commune"])?.lazy();
    let levels = base
        .join(levels.clone(), [col("level")], [col("level")], JoinArgs::new(JoinType::Full).with_coalesce(JoinCoalesce::CoalesceColumns))
        .with_columns(counts().iter().map(|c| col(*c).fill_null(lit(0i64))).collect::<Vec<_>>());
    let all = by_agency.clone().lazy().select(sums).with_column(lit("all").alias("level"));
    let mut select: Vec<Expr> = period_columns(period);
    select.push(col("level"));
    select.extend(count_cols.iter().map(|c| c.clone().cast(DataType::Int64)));
    select.extend(rules::rates());
    select.extend(stamp(run_id, computed_at));
    let by_level = concat([levels, all.select([col("level")].into_iter().chain(count_cols.clone()).collect::<Vec<_>>())], UnionArgs::default())?
        .sort_by_exprs([level_rank()], SortMultipleOptions::default())
        .select(select)
        .collect()
        .map_err(anyhow::Error::from)
        .context("computing cases_by_level")?;

    // catalog_by_level
    let received: Vec<Expr> = rules::measures(f, l).into_iter().filter(|(n, _)| *n == "received_new").map(|(_, e)| e).collect();
    let with_cases = lf
        .filter(received.into_iter().next().expect("received_new is a measure"))
        .select([col("level"), col("procedure_code")])
        .unique(None, UniqueKeepStrategy::Any)
        .collect()?;
    let catalog = catalog_by_level(catalog, &with_cases, period, run_id, computed_at)?;

    let mut identities = vec![];
    for (table, df) in [("cases_by_agency", &by_agency), ("cases_by_level", &by_level)] {
        for (name, check) in rules::identities() {
            let failures = df.clone().lazy().filter(check.not()).collect()?.height() as u64;
            identities.push(IdentityCheck {
                period: period.id.to_string(),
                table: table.into(),
                identity: name.into(),
                rows: df.height() as u64,
                failures,
            });
        }
    }
    Ok(KpiTables { period: *period, by_agency, by_level, catalog, identities })
}

/// The procedure-catalog measures per level and for `all` (distinct procedures).
fn catalog_by_level(catalog: &[Procedure], with_cases: &DataFrame, period: &Period, run_id: &str, computed_at: i64) -> Result<DataFrame> {
    let lv = with_cases.column("level")?.str()?;
    let pc = with_cases.column("procedure_code")?.str()?;
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    let mut used_any: BTreeSet<String> = BTreeSet::new();
    for (l, p) in lv.iter().zip(pc.iter()) {
        if let (Some(l), Some(p)) = (l, p) {
            used.insert((l.to_string(), p.to_string()));
            used_any.insert(p.to_string());
        }
    }
    let mut rows: Vec<(&str, [i64; 6])> = vec![];
    for (cap, level) in [(1, "province"), (2, "district"), (3, "commune"), (0, "all")] {
        let at = |p: &&Procedure| cap == 0 || p.levels.contains(&cap);
        let ps: Vec<&Procedure> = catalog.iter().filter(at).collect();
        let n = |f: &dyn Fn(&Procedure) -> bool| ps.iter().filter(|p| f(p)).count() as i64;
        let with = if cap == 0 {
            n(&|p| used_any.contains(&p.code))
        } else {
            n(&|p| used.contains(&(level.to_string(), p.code.clone())))
        };
        rows.push((
            level,
            [
                ps.len() as i64,
                n(&|p| p.one_stop),
                n(&|p| p.inter_agency),
                n(&|p| p.online == Some(rules::ONLINE_FULL)),
                n(&|p| p.online == Some(rules::ONLINE_PARTIAL)),
                with,
            ],
        ));
    }
    let names = ["procedures", "one_stop", "inter_agency", "online_full", "online_partial", "with_cases"];
    let mut cols: Vec<Column> = vec![Column::new("level".into(), rows.iter().map(|r| r.0).collect::<Vec<_>>())];
    for (i, n) in names.iter().enumerate() {
        cols.push(Column::new((*n).into(), rows.iter().map(|r| r.1[i]).collect::<Vec<i64>>()));
    }
    let df = DataFrame::new(rows.len(), cols)?;
    let ratio = |num: Expr| {
        when(col("procedures").eq(lit(0i64)))
            .then(lit(NULL).cast(DataType::Float64))
            .otherwise(num.cast(DataType::Float64) / col("procedures").cast(DataType::Float64))
    };
    let mut select = period_columns(period);
    select.push(col("level"));
    select.extend(names.iter().map(|n| col(*n)));
    select.push(ratio(col("online_full") + col("online_partial")).alias("online_rate"));
    select.push(ratio(col("online_full")).alias("full_online_rate"));
    select.extend(stamp(run_id, computed_at));
    Ok(df.lazy().select(select).collect()?)
}

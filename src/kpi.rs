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
#[derive(Clone)]
pub struct KpiTables {
    pub period: Period,
    /// The run that computed them.
    pub run_id: String,
    pub by_agency: DataFrame,
    pub by_level: DataFrame,
    pub catalog: DataFrame,
    pub identities: Vec<IdentityCheck>,
}

/// One identity checked over one table.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
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

/// The staging columns the KPIs read; a bucket is decoded with these alone.
pub const INPUT_COLUMNS: [&str; 15] = [
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
];

fn counts() -> Vec<&'static str> {
    rules::measure_names()
}

/// The counted measures (all but received_total), in output order.
fn counted_names() -> Vec<&'static str> {
    counts()
        .into_iter()
        .filter(|n| *n != "received_total")
        .collect()
}

/// Sorts levels as [`LEVEL_ORDER`]: province, district, commune, unknown, all.
pub fn level_rank() -> Expr {
    LEVEL_ORDER
        .iter()
        .enumerate()
        .rev()
        .fold(lit(99i32), |rest, (i, l)| {
            when(col("level").eq(lit(*l)))
                .then(lit(i as i32))
                .otherwise(rest)
        })
}

fn period_columns(period: &Period) -> Vec<Expr> {
    vec![
        rules::date(period.start).alias("period_start"),
        rules::date(period.end).alias("period_end"),
        lit(period.convention.as_str()).alias("period_convention"),
    ]
}

/// Appends `run_id` and `computed_at` (built as a column: polars 0.55 drops the zone when it
/// casts an integer literal to a zoned `Datetime`).
fn stamp(mut df: DataFrame, run_id: &str, computed_at: i64) -> Result<DataFrame> {
    let h = df.height();
    df.with_column(Column::new("run_id".into(), vec![run_id; h]))?;
    df.with_column(crate::normalise::utc_micros(
        "computed_at",
        vec![Some(computed_at); h],
    ))?;
    Ok(df)
}

// ---------------------------------------------------------------------------------------------
// Partial counts. Every measure is a count of cases, so a period's counts over the staging
// table are the sums of its counts over each bucket. A bucket is read once for all the periods
// of a run, and memory holds one bucket per worker, however large the table grows.
// ---------------------------------------------------------------------------------------------

fn suffix(i: usize) -> String {
    format!("#{i}")
}

/// What one slice of the staging table (a bucket) adds to every period of a run.
pub struct Partial {
    /// Per agency × field: `<measure>#<i>` counts for period `i`, the least `agency_name_text`
    /// and `field_name` seen, and `_cases`, the number of cases.
    counts: DataFrame,
    /// Per agency × procedure: `_used#<i>`, the cases in received_new of period `i`.
    used: DataFrame,
}

/// Counts `cases` (staging rows, at least [`INPUT_COLUMNS`]) for every one of `periods`.
pub fn partial(cases: &DataFrame, periods: &[Period]) -> Result<Partial> {
    let mut terms: Vec<Expr> = vec![];
    let mut flags: Vec<Expr> = vec![col("agency_code"), col("field_code")];
    let mut used: Vec<Expr> = vec![col("procedure_code")];
    for (i, p) in periods.iter().enumerate() {
        let sfx = suffix(i);
        terms.extend(rules::Terms::defined(p.start, p.end).named(&sfx));
        let t = rules::Terms::columns(&sfx);
        for (name, cond) in rules::counted(p.start, p.end, &t) {
            // Booleans (a bit a case), counted by `sum`: twelve periods of flags for a
            // bucket of ten million records stay in tens of megabytes.
            flags.push(cond.alias(format!("{name}{sfx}")));
        }
        used.push(t.received_new.alias(format!("_used{sfx}")));
    }
    flags.extend([col("agency_name_text"), col("field_name")]);
    flags.extend(used);
    let flagged = cases
        .clone()
        .lazy()
        .with_columns(terms)
        .select(flags)
        .collect()
        .map_err(anyhow::Error::from)
        .context("evaluating the measures of each case")?;
    let mut sums: Vec<Expr> = vec![];
    let mut used_sums: Vec<Expr> = vec![];
    for i in 0..periods.len() {
        let sfx = suffix(i);
        sums.extend(counted_names().iter().map(|n| {
            let c = format!("{n}{sfx}");
            col(c.as_str()).sum().cast(DataType::Int64).alias(c)
        }));
        let u = format!("_used{sfx}");
        used_sums.push(col(u.as_str()).sum().cast(DataType::Int64).alias(u));
    }
    sums.extend([
        col("agency_name_text").min(),
        col("field_name").min(),
        len().cast(DataType::Int64).alias("_cases"),
    ]);
    let flagged = flagged.lazy();
    Ok(Partial {
        counts: per(
            flagged.clone(),
            "field_code",
            sums,
            "counting cases per agency and field",
        )?,
        used: per(
            flagged,
            "procedure_code",
            used_sums,
            "counting cases per agency and procedure",
        )?,
    })
}

/// `aggs` per agency × `key`.
fn per(lf: LazyFrame, key: &str, aggs: Vec<Expr>, what: &'static str) -> Result<DataFrame> {
    lf.group_by([col("agency_code"), col(key)])
        .agg(aggs)
        .collect()
        .map_err(anyhow::Error::from)
        .context(what)
}

/// Gathers the partial counts of every bucket.
pub struct Accumulator {
    periods: Vec<Period>,
    counts: Vec<LazyFrame>,
    used: Vec<LazyFrame>,
}

/// The partial counts of all buckets, summed: every period's tables come from here.
pub struct Totals {
    periods: Vec<Period>,
    counts: DataFrame,
    used: DataFrame,
}

impl Accumulator {
    pub fn new(periods: &[Period]) -> Self {
        Accumulator {
            periods: periods.to_vec(),
            counts: vec![],
            used: vec![],
        }
    }

    pub fn add(&mut self, p: Partial) {
        self.counts.push(p.counts.lazy());
        self.used.push(p.used.lazy());
    }

    /// Sums what was added (an empty staging table when nothing was).
    pub fn total(mut self) -> Result<Totals> {
        if self.counts.is_empty() {
            let empty = crate::normalise::empty_staging()?;
            let p = partial(&empty, &self.periods)?;
            self.add(p);
        }
        let mut sums: Vec<Expr> = vec![];
        let mut used_sums: Vec<Expr> = vec![];
        for i in 0..self.periods.len() {
            let sfx = suffix(i);
            sums.extend(counted_names().iter().map(|n| {
                let c = format!("{n}{sfx}");
                col(c.as_str()).cast(DataType::Int64).sum().alias(c)
            }));
            let u = format!("_used{sfx}");
            used_sums.push(col(u.as_str()).cast(DataType::Int64).sum().alias(u));
        }
        sums.extend([
            col("agency_name_text").min(),
            col("field_name").min(),
            col("_cases").sum(),
        ]);
        let counts = concat(self.counts, UnionArgs::default())?;
        let counts = per(counts, "field_code", sums, "summing the buckets' counts")?;
        let used = concat(self.used, UnionArgs::default())?;
        let used = per(
            used,
            "procedure_code",
            used_sums,
            "summing the buckets' procedures",
        )?;
        Ok(Totals {
            periods: self.periods,
            counts,
            used,
        })
    }
}

impl Totals {
    /// Cases in staging per agency code.
    pub fn cases_per_agency(&self) -> Result<BTreeMap<String, u64>> {
        let df = self
            .counts
            .clone()
            .lazy()
            .group_by([col("agency_code")])
            .agg([col("_cases").sum()])
            .collect()?;
        let codes = df.column("agency_code")?.str()?;
        let n = df.column("_cases")?.i64()?;
        Ok(codes
            .iter()
            .zip(n.iter())
            .filter_map(|(c, n)| Some((c?.to_string(), n? as u64)))
            .collect())
    }

    /// Cases in staging.
    pub fn cases(&self) -> Result<u64> {
        Ok(self.counts.column("_cases")?.i64()?.sum().unwrap_or(0) as u64)
    }

    /// The three tables of period number `i` (of the periods the accumulator was made for).
    pub fn tables(
        &self,
        i: usize,
        agencies: &[Agency],
        catalog: &[Procedure],
        run_id: &str,
        computed_at: i64,
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
        period_tables(
            counts,
            used,
            agencies,
            catalog,
            &period,
            run_id,
            computed_at,
        )
    }
}

/// Computes the three tables of `period` from the staging `cases` (all of it in one frame).
pub fn compute(
    cases: &DataFrame,
    agencies: &[Agency],
    catalog: &[Procedure],
    period: &Period,
    run_id: &str,
    computed_at: i64,
) -> Result<KpiTables> {
    let mut acc = Accumulator::new(&[*period]);
    acc.add(partial(cases, &[*period])?);
    acc.total()?
        .tables(0, agencies, catalog, run_id, computed_at)
}

/// The tables of one period from its counts per agency × field and the (agency, procedure)
/// pairs with a case in received_new.
fn period_tables(
    per_agency: LazyFrame,
    used: LazyFrame,
    agencies: &[Agency],
    catalog: &[Procedure],
    period: &Period,
    run_id: &str,
    computed_at: i64,
) -> Result<KpiTables> {
    let count_cols: Vec<Expr> = counts().iter().map(|c| col(*c)).collect();
    let any_count = count_cols
        .iter()
        .fold(lit(false), |any, c| any.or(c.clone().gt(lit(0i64))));
    let levels_of = agency_frame(agencies)?.lazy();
    let with_level = |lf: LazyFrame| {
        lf.join(
            levels_of.clone(),
            [col("agency_code")],
            [col("agency_code")],
            JoinArgs::new(JoinType::Left),
        )
        .with_column(col("level").fill_null(lit("unknown")))
    };

    // cases_by_agency
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
    let by_agency = with_level(per_agency)
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
        .map_err(anyhow::Error::from)
        .context("computing cases_by_agency")?;
    let by_agency = stamp(by_agency, run_id, computed_at)?;

    // cases_by_level: the agency rows summed per level, the three levels always present.
    let sums: Vec<Expr> = counts().iter().map(|c| col(*c).sum().alias(*c)).collect();
    let levels = by_agency
        .clone()
        .lazy()
        .group_by([col("level")])
        .agg(sums.clone());
    let base = df!("level" => ["province", "district", "commune"])?.lazy();
    let levels = base
        .join(
            levels.clone(),
            [col("level")],
            [col("level")],
            JoinArgs::new(JoinType::Full).with_coalesce(JoinCoalesce::CoalesceColumns),
        )
        .with_columns(
            counts()
                .iter()
                .map(|c| col(*c).fill_null(lit(0i64)))
                .collect::<Vec<_>>(),
        );
    let all = by_agency
        .clone()
        .lazy()
        .select(sums)
        .with_column(lit("all").alias("level"));
    let mut select: Vec<Expr> = period_columns(period);
    select.push(col("level"));
    select.extend(count_cols.iter().map(|c| c.clone().cast(DataType::Int64)));
    select.extend(rules::rates());
    let by_level = concat(
        [
            levels,
            all.select(
                [col("level")]
                    .into_iter()
                    .chain(count_cols.clone())
                    .collect::<Vec<_>>(),
            ),
        ],
        UnionArgs::default(),
    )?
    .sort_by_exprs([level_rank()], SortMultipleOptions::default())
    .select(select)
    .collect()
    .map_err(anyhow::Error::from)
    .context("computing cases_by_level")?;
    let by_level = stamp(by_level, run_id, computed_at)?;

    // catalog_by_level
    let with_cases = with_level(used)
        .select([col("level"), col("procedure_code")])
        .unique(None, UniqueKeepStrategy::Any)
        .collect()?;
    let catalog = catalog_by_level(catalog, &with_cases, period, run_id, computed_at)?;

    let mut identities = check_identities(period, "cases_by_agency", &by_agency)?;
    identities.extend(check_identities(period, "cases_by_level", &by_level)?);
    Ok(KpiTables {
        period: *period,
        run_id: run_id.to_string(),
        by_agency,
        by_level,
        catalog,
        identities,
    })
}

/// Checks the identities of `kpi.md` on every row of a case table.
pub fn check_identities(
    period: &Period,
    table: &str,
    df: &DataFrame,
) -> Result<Vec<IdentityCheck>> {
    let mut out = vec![];
    for (name, holds) in rules::identities() {
        let failures = df.clone().lazy().filter(holds.not()).collect()?.height() as u64;
        out.push(IdentityCheck {
            period: period.id.to_string(),
            table: table.into(),
            identity: name.into(),
            rows: df.height() as u64,
            failures,
        });
    }
    Ok(out)
}

/// The procedure-catalog measures per level and for `all` (distinct procedures).
fn catalog_by_level(
    catalog: &[Procedure],
    with_cases: &DataFrame,
    period: &Period,
    run_id: &str,
    computed_at: i64,
) -> Result<DataFrame> {
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
    let names = rules::CATALOG_MEASURES;
    let mut cols: Vec<Column> = vec![Column::new(
        "level".into(),
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
    )];
    for (i, n) in names.iter().enumerate() {
        cols.push(Column::new(
            (*n).into(),
            rows.iter().map(|r| r.1[i]).collect::<Vec<i64>>(),
        ));
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
    stamp(df.lazy().select(select).collect()?, run_id, computed_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalise::{Normaliser, PiiKey};
    use crate::period::{Convention, PeriodId};
    use serde_json::json;

    #[test]
    fn a_broken_identity_is_caught() {
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
        n.add_records(
            "raw/x",
            &[json!({"MaHoSo":"A","MaDonVi":"X","TrangThaiHoSo":"9","NgayTiepNhan":"20240701080000",
                     "NgayKetThucXuLy":"20240702080000","NgayHenTra":"20240705170000","NgayCapNhat":"20240702090000"})],
        );
        let cases = n.finish().unwrap().cases.drop("_order").unwrap();
        let agencies = [Agency {
            code: "X".into(),
            name: None,
            cap: Some(1),
            parent: None,
        }];
        let period = "2024-Q3"
            .parse::<PeriodId>()
            .unwrap()
            .resolve(Convention::Decree09);
        let t = compute(&cases, &agencies, &[], &period, "r", 0).unwrap();
        assert!(t.identities_hold());
        assert_eq!(
            t.by_level
                .column("resolved_early")
                .unwrap()
                .i64()
                .unwrap()
                .get(0),
            Some(1)
        );
        // Tamper with one figure: the check names the identity and the row count.
        let tampered = t
            .by_level
            .clone()
            .lazy()
            .with_column(col("resolved_early") + lit(1i64))
            .collect()
            .unwrap();
        let checks = check_identities(&period, "cases_by_level", &tampered).unwrap();
        let broken: Vec<_> = checks.iter().filter(|c| c.failures > 0).collect();
        assert_eq!(broken.len(), 1);
        assert!(broken[0].identity.starts_with("resolved_total ="));
        assert_eq!(
            broken[0].failures, 4,
            "province, district, commune and all rows were all tampered with"
        );
    }
}

//! Partial counts. A bucket (or a batch of small ones) is counted for every period of a run in
//! one plan: the terms of `kpi.md` evaluated once per case, each measure a boolean per case,
//! summed per agency × field. The partial counts of all buckets are then summed ([`Totals`]),
//! and every period's tables come from there.

use std::collections::BTreeMap;

use polars::prelude::*;

use super::tables::period_tables;
use super::{KpiTables, Stamp};
use crate::domain::period::Period;
use crate::domain::rules::{self, measure_names, Terms};
use crate::error::{Doing, Result};
use crate::normalise::{Agency, Procedure};
use crate::stage::schema::empty_staging;

fn suffix(i: usize) -> String {
    format!("#{i}")
}

/// The counted measures (all but received_total, a sum of two others), in output order.
pub fn counted_names() -> Vec<&'static str> {
    measure_names()
        .into_iter()
        .filter(|n| *n != "received_total")
        .collect()
}

/// What one slice of the staging table (a bucket) adds to every period of a run.
pub struct Partial {
    /// Per agency × field: `<measure>#<i>` counts for period `i`, the least `agency_name_text`
    /// and `field_name` seen, and `_cases`, the number of cases.
    counts: DataFrame,
    /// Per agency × procedure: `_used#<i>`, the cases in received_new of period `i`.
    used: DataFrame,
}

/// The sums of every period's counts (per agency × field) and uses (per agency × procedure),
/// with `cases` for the number of cases: the same whether a bucket's flags or the buckets'
/// partial counts are summed.
fn sums(periods: usize, cases: Expr) -> (Vec<Expr>, Vec<Expr>) {
    let sum = |c: String| col(c.as_str()).cast(DataType::Int64).sum().alias(c);
    let mut counts = vec![];
    let mut used = vec![];
    for i in 0..periods {
        let sfx = suffix(i);
        counts.extend(counted_names().iter().map(|n| sum(format!("{n}{sfx}"))));
        used.push(sum(format!("_used{sfx}")));
    }
    counts.extend([
        col("agency_name_text").min(),
        col("field_name").min(),
        cases,
    ]);
    (counts, used)
}

/// Counts `cases` (staging rows, at least [`super::INPUT_COLUMNS`]) for every one of `periods`.
pub fn partial(cases: &DataFrame, periods: &[Period]) -> Result<Partial> {
    let mut terms: Vec<Expr> = vec![];
    let mut flags: Vec<Expr> = vec![col("agency_code"), col("field_code")];
    let mut used: Vec<Expr> = vec![col("procedure_code")];
    for (i, p) in periods.iter().enumerate() {
        let sfx = suffix(i);
        terms.extend(Terms::defined(p.start, p.end).named(&sfx));
        let t = Terms::columns(&sfx);
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
        .doing("evaluating the measures of each case")?
        .lazy();
    let (counts, used) = sums(periods.len(), len().cast(DataType::Int64).alias("_cases"));
    Ok(Partial {
        counts: per(
            flagged.clone(),
            "field_code",
            counts,
            "counting cases per agency and field",
        )?,
        used: per(
            flagged,
            "procedure_code",
            used,
            "counting cases per agency and procedure",
        )?,
    })
}

/// `aggs` per agency × `key`.
fn per(lf: LazyFrame, key: &str, aggs: Vec<Expr>, what: &'static str) -> Result<DataFrame> {
    lf.group_by([col("agency_code"), col(key)])
        .agg(aggs)
        .collect()
        .doing(what)
}

/// Gathers the partial counts of every bucket.
pub struct Accumulator {
    periods: Vec<Period>,
    counts: Vec<LazyFrame>,
    used: Vec<LazyFrame>,
}

/// The partial counts of all buckets, summed.
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
            let p = partial(&empty_staging()?, &self.periods)?;
            self.add(p);
        }
        let (counts, used) = sums(self.periods.len(), col("_cases").sum());
        let all = concat(self.counts, UnionArgs::default())?;
        let counts = per(all, "field_code", counts, "summing the buckets' counts")?;
        let all = concat(self.used, UnionArgs::default())?;
        let used = per(
            all,
            "procedure_code",
            used,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::period::{Convention, PeriodId};
    use crate::normalise::{Normaliser, PiiKey};
    use serde_json::json;

    /// Counting the staging table in slices and summing gives what counting it whole gives.
    #[test]
    fn counts_of_slices_sum_to_the_counts_of_the_whole() {
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
        let recs: Vec<_> = (0..60)
            .map(|i| {
                let status = [4, 9, 10][i % 3];
                json!({"MaHoSo": format!("C{i}"), "MaDonVi": format!("A{}", i % 3),
                "MaLinhVuc": format!("F{}", i % 2), "MaTTHC": format!("P{}", i % 4),
                "TrangThaiHoSo": status, "KenhThucHien": 1 + i % 2,
                "NgayTiepNhan": format!("202407{:02}080000", 1 + i % 28),
                "NgayKetThucXuLy": format!("202408{:02}080000", 1 + i % 28),
                "NgayHenTra": "20240815170000", "NgayCapNhat": "20240901090000"})
            })
            .collect();
        n.add_records("raw/p", &recs);
        let cases = n.finish().unwrap().cases;
        let periods: Vec<Period> = ["2024-Q3", "2024-07", "2024-08"]
            .iter()
            .map(|p| p.parse::<PeriodId>().unwrap().resolve(Convention::Calendar))
            .collect();
        let mut whole = Accumulator::new(&periods);
        whole.add(partial(&cases, &periods).unwrap());
        let whole = whole.total().unwrap();
        let mut sliced = Accumulator::new(&periods);
        for k in 0..4 {
            sliced.add(partial(&cases.slice(k * 15, 15), &periods).unwrap());
        }
        let sliced = sliced.total().unwrap();
        assert_eq!(sliced.cases().unwrap(), 60);
        assert_eq!(
            sliced.cases_per_agency().unwrap(),
            whole.cases_per_agency().unwrap()
        );
        let sort = |df: &DataFrame| {
            df.sort(["agency_code", "field_code"], Default::default())
                .unwrap()
        };
        assert!(sort(&sliced.counts).equals_missing(&sort(&whole.counts)));
        let stamp = Stamp {
            run_id: "r".into(),
            computed_at: 0,
        };
        let t = sliced.tables(0, &[], &[], &stamp).unwrap();
        assert!(t.identities_hold());
        let empty = Accumulator::new(&periods).total().unwrap();
        assert_eq!(empty.cases().unwrap(), 0);
    }
}

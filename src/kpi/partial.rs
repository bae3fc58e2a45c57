//! Partial counts. A slice of staging (a batch of row groups) is counted for every period of a run in
//! one plan: the terms of `kpi.md` evaluated once per case, each measure a boolean per case,
//! summed per agency × field. The partial counts of all slices are then summed ([`Totals`]),
//! and every period's tables come from there.
//!
//! A case counts under its agency on its attribution date (`agencies.md`). For a case never
//! handed over that is the agency holding it now, whatever the period, so such cases — nearly
//! all — are counted for every period in one plan; the few handed over are counted period by
//! period under the agency [`attribution`](super::attribution) finds for each.

use std::collections::BTreeMap;

use polars::prelude::*;

use super::attribution::{self, Agencies};
use super::tables::period_tables;
use super::{KpiTables, Stamp};
use crate::domain::period::Period;
use crate::domain::rules::{self, measure_names, Terms};
use crate::error::{Doing, Result};
use crate::normalise::Procedure;
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

/// The count columns of period `i`: its measures, then `_outside`, the cases counted under an
/// agency outside its validity.
fn period_counts(i: usize) -> Vec<String> {
    let sfx = suffix(i);
    let mut names: Vec<String> = counted_names()
        .iter()
        .map(|n| format!("{n}{sfx}"))
        .collect();
    names.push(format!("_outside{sfx}"));
    names
}

/// What one slice of the staging table (a batch of row groups) adds to every period of a run.
pub struct Partial {
    /// Per agency × field: the counts of every period ([`period_counts`]), the least
    /// `agency_name_text` and `field_name` seen, and `_cases`, the cases held now.
    counts: DataFrame,
    /// Per agency × procedure: `_used#<i>`, the cases in received_new of period `i`.
    used: DataFrame,
}

/// The sums of every period's counts (per agency × field) and uses (per agency × procedure),
/// with `cases` for the number of cases: the same whether a slice's flags or the slices'
/// partial counts are summed.
fn sums(periods: usize, cases: Expr) -> (Vec<Expr>, Vec<Expr>) {
    let sum = |c: String| col(c.as_str()).cast(DataType::Int64).sum().alias(c);
    let mut counts = vec![];
    let mut used = vec![];
    for i in 0..periods {
        counts.extend(period_counts(i).into_iter().map(sum));
        used.push(sum(format!("_used{}", suffix(i))));
    }
    counts.extend([
        col("agency_name_text").min(),
        col("field_name").min(),
        cases,
    ]);
    (counts, used)
}

/// The flags of the periods `which` (index, period) over cases counted under `agency_code`,
/// whose validity is in `_valid_from` and `_valid_to`: every measure, `_outside` and `_used`.
fn flags(which: &[(usize, Period)]) -> (Vec<Expr>, Vec<Expr>) {
    let mut terms: Vec<Expr> = vec![];
    let mut flags: Vec<Expr> = vec![];
    for (i, p) in which {
        let sfx = suffix(*i);
        terms.extend(Terms::defined(p.start, p.end).named(&sfx));
        let t = Terms::columns(&sfx);
        let measures = rules::counted(p.start, p.end, &t);
        let any = measures
            .iter()
            .fold(lit(false), |a, (_, c)| a.or(c.clone()));
        for (name, cond) in measures {
            // Booleans (a bit a case), counted by `sum`: twelve periods of flags for a
            // slice of two hundred thousand cases stay in megabytes.
            flags.push(cond.alias(format!("{name}{sfx}")));
        }
        let on = when(
            t.ended
                .clone()
                .and(col("end_date").lt_eq(rules::date(p.end))),
        )
        .then(col("end_date"))
        .otherwise(rules::date(p.end));
        let invalid = col("_valid_from")
            .gt(on.clone())
            .or(col("_valid_to").lt_eq(on));
        flags.push(
            any.and(invalid.fill_null(lit(false)))
                .alias(format!("_outside{sfx}")),
        );
        flags.push(t.received_new.alias(format!("_used{sfx}")));
    }
    (terms, flags)
}

/// The counts of `cases` for the periods `which`, grouped, in the columns of all `n` periods.
fn count(
    cases: LazyFrame,
    agencies: &Agencies,
    which: &[(usize, Period)],
    n: usize,
    with_cases: bool,
) -> Result<Partial> {
    let (terms, flags) = flags(which);
    let mut select = vec![
        col("agency_code"),
        col("field_code"),
        col("procedure_code"),
        col("agency_name_text"),
        col("field_name"),
    ];
    select.extend(flags);
    let flagged = agencies
        .with_validity(cases)
        .with_columns(terms)
        .select(select)
        .collect()
        .doing("evaluating the measures of each case")?
        .lazy();
    let zero = |c: &str| lit(0i64).cast(DataType::Int64).alias(c);
    let mut counts: Vec<Expr> = vec![];
    let mut used: Vec<Expr> = vec![];
    for i in 0..n {
        let mine = which.iter().any(|(j, _)| *j == i);
        let sum = |c: String| match mine {
            true => col(c.as_str()).cast(DataType::Int64).sum().alias(c),
            false => zero(&c),
        };
        counts.extend(period_counts(i).into_iter().map(sum));
        used.push(sum(format!("_used{}", suffix(i))));
    }
    let cases = match with_cases {
        true => len().cast(DataType::Int64).alias("_cases"),
        false => zero("_cases"),
    };
    counts.extend([
        col("agency_name_text").min(),
        col("field_name").min(),
        cases,
    ]);
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

/// Counts `cases` (staging rows, at least [`super::INPUT_COLUMNS`]) for every one of
/// `periods`.
pub fn partial(cases: &DataFrame, periods: &[Period], agencies: &Agencies) -> Result<Partial> {
    let all: Vec<(usize, Period)> = periods.iter().copied().enumerate().collect();
    let (still, moved) = attribution::split(cases)?;
    let mut parts = vec![count(still.lazy(), agencies, &all, periods.len(), true)?];
    if moved.height() > 0 {
        // Held now: counted once, under the agency holding them.
        parts.push(count(
            moved.clone().lazy(),
            agencies,
            &[],
            periods.len(),
            true,
        )?);
        for (i, p) in &all {
            let then = attribution::as_of(&moved, p)?;
            parts.push(count(
                then.lazy(),
                agencies,
                &[(*i, *p)],
                periods.len(),
                false,
            )?);
        }
    }
    merged(parts, periods.len())
}

/// Several partial counts as one.
fn merged(parts: Vec<Partial>, n: usize) -> Result<Partial> {
    let mut parts = parts;
    if parts.len() == 1 {
        if let Some(only) = parts.pop() {
            return Ok(only);
        }
    }
    let (counts, used) = sums(n, col("_cases").sum());
    let (c, u): (Vec<LazyFrame>, Vec<LazyFrame>) = parts
        .into_iter()
        .map(|p| (p.counts.lazy(), p.used.lazy()))
        .unzip();
    Ok(Partial {
        counts: per(
            concat(c, UnionArgs::default())?,
            "field_code",
            counts,
            "summing partial counts",
        )?,
        used: per(
            concat(u, UnionArgs::default())?,
            "procedure_code",
            used,
            "summing partial uses",
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

/// Gathers the partial counts of every slice.
pub struct Accumulator {
    periods: Vec<Period>,
    counts: Vec<LazyFrame>,
    used: Vec<LazyFrame>,
}

/// The partial counts of all slices, summed.
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
            let p = partial(&empty_staging()?, &self.periods, &Agencies::default())?;
            self.add(p);
        }
        let (counts, used) = sums(self.periods.len(), col("_cases").sum());
        let all = concat(self.counts, UnionArgs::default())?;
        let counts = per(all, "field_code", counts, "summing the slices' counts")?;
        let all = concat(self.used, UnionArgs::default())?;
        let used = per(
            all,
            "procedure_code",
            used,
            "summing the slices' procedures",
        )?;
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
        let df = self
            .counts
            .clone()
            .lazy()
            .group_by([col("agency_code")])
            .agg([col(column).sum()])
            .filter(col(column).gt(lit(0i64)))
            .collect()?;
        let codes = df.column("agency_code")?.str()?;
        let n = df.column(column)?.i64()?;
        Ok(codes
            .iter()
            .zip(n.iter())
            .filter_map(|(c, n)| Some((c?.to_string(), n? as u64)))
            .collect())
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

//! The partial counts of all of staging as frames ([`Totals`]), and the tables of each period
//! from them.

use std::collections::BTreeMap;

use polars::prelude::*;

use super::{suffix, Group, Partial};
use crate::domain::period::Period;
use crate::domain::rules::counted_names;
use crate::error::Result;
use crate::kpi::attribution::Agencies;
use crate::kpi::tables::period_tables;
use crate::kpi::{KpiTables, Stamp};
use crate::normalise::Procedure;

impl Partial {
    /// The sums, as frames.
    pub fn total(self, periods: &[Period]) -> Result<Totals> {
        Ok(Totals {
            periods: periods.to_vec(),
            counts: self.counts_frame()?,
            used: self.used_frame()?,
        })
    }

    /// Per agency × field: `<measure>#<i>` and `_outside#<i>` for each period, names, `_cases`.
    fn counts_frame(&self) -> Result<DataFrame> {
        let mut groups: Vec<(&str, Option<&str>, &Group, usize)> = self
            .groups
            .iter()
            .enumerate()
            .map(|(at, ((a, f), g))| (self.code(*a).unwrap_or_default(), self.code(*f), g, at))
            .collect();
        groups.sort_unstable_by(|x, y| (x.0, x.1).cmp(&(y.0, y.1)));
        let mut cols = vec![
            Column::new(
                "agency_code".into(),
                groups.iter().map(|g| g.0).collect::<Vec<_>>(),
            ),
            Column::new(
                "field_code".into(),
                groups.iter().map(|g| g.1).collect::<Vec<_>>(),
            ),
        ];
        for i in 0..self.periods {
            let names = counted_names().into_iter().chain(["_outside"]);
            for (m, name) in names.enumerate() {
                let v: Vec<i64> = groups
                    .iter()
                    .map(|g| self.counts[self.span(g.3, i).start + m])
                    .collect();
                cols.push(Column::new(format!("{name}{}", suffix(i)).into(), v));
            }
        }
        let names: Vec<Option<&str>> = groups.iter().map(|g| self.code(g.2.agency_name)).collect();
        let fields: Vec<Option<&str>> = groups.iter().map(|g| self.code(g.2.field_name)).collect();
        cols.extend([
            Column::new("agency_name_text".into(), names),
            Column::new("field_name".into(), fields),
            Column::new(
                "_cases".into(),
                groups.iter().map(|g| g.2.cases).collect::<Vec<_>>(),
            ),
        ]);
        Ok(DataFrame::new(groups.len(), cols)?)
    }

    /// Per agency × procedure: `_used#<i>` for each period, in no order: it is read as a set
    /// (`tables::catalog_by_level`), and sorting its tens of thousands of code pairs was a
    /// twentieth of a run.
    fn used_frame(&self) -> Result<DataFrame> {
        let used: Vec<(&str, Option<&str>, &[i64])> = self
            .used
            .iter()
            .map(|((a, p), u)| (self.code(a).unwrap_or_default(), self.code(p), u))
            .collect();
        let mut cols = vec![
            Column::new(
                "agency_code".into(),
                used.iter().map(|u| u.0).collect::<Vec<_>>(),
            ),
            Column::new(
                "procedure_code".into(),
                used.iter().map(|u| u.1).collect::<Vec<_>>(),
            ),
        ];
        for i in 0..self.periods {
            let v: Vec<i64> = used.iter().map(|u| u.2[i]).collect();
            cols.push(Column::new(format!("_used{}", suffix(i)).into(), v));
        }
        Ok(DataFrame::new(used.len(), cols)?)
    }
}

/// The partial counts of all slices, summed, as frames: `counts` per agency × field
/// (`<measure>#<i>` and `_outside#<i>` for each period `i`, `agency_name_text`, `field_name`,
/// `_cases`) and `used` per agency × procedure (`_used#<i>`).
pub struct Totals {
    periods: Vec<Period>,
    counts: DataFrame,
    used: DataFrame,
}

impl Totals {
    /// The frames, for tests: `used` sorted by its codes.
    #[cfg(test)]
    pub fn frames(&self) -> (DataFrame, DataFrame) {
        let used = self
            .used
            .sort(["agency_code", "procedure_code"], Default::default())
            .expect("the used frame has its code columns");
        (self.counts.clone(), used)
    }

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

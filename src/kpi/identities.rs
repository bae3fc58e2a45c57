//! The identities of `kpi.md`, checked on every row of both case tables of every period: a
//! run where one breaks publishes nothing.

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::domain::period::Period;
use crate::domain::rules;
use crate::error::Result;

/// One identity checked over one table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityCheck {
    pub period: String,
    pub table: String,
    pub identity: String,
    pub rows: u64,
    pub failures: u64,
}

/// Checks the identities of `kpi.md` on every row of a case table.
pub fn check_identities(
    period: &Period,
    table: &str,
    df: &DataFrame,
) -> Result<Vec<IdentityCheck>> {
    // Each identity's failing rows, counted in one pass (a row where it is null fails
    // nothing, as a filter would drop it), nothing of the table copied.
    let identities = rules::identities();
    let failing: Vec<Expr> = identities
        .iter()
        .enumerate()
        .map(|(i, (_, holds))| {
            holds
                .clone()
                .not()
                .cast(DataType::UInt64)
                .sum()
                .alias(format!("i{i}"))
        })
        .collect();
    let failing = df.clone().lazy().select(failing).collect()?;
    let mut out = vec![];
    for (i, (name, _)) in identities.iter().enumerate() {
        let failures = failing.column(&format!("i{i}"))?.u64()?.get(0).unwrap_or(0);
        out.push(IdentityCheck {
            period: period.id.to_string(),
            table: table.into(),
            identity: (*name).into(),
            rows: df.height() as u64,
            failures,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_broken_identity_is_caught() {
        let t = crate::kpi::tables_of(
            &[
                json!({"MaHoSo":"A","MaDonVi":"X","TrangThaiHoSo":"9","NgayTiepNhan":"20240701080000",
                     "NgayKetThucXuLy":"20240702080000","NgayHenTra":"20240705170000","NgayCapNhat":"20240702090000"}),
            ],
            1,
        );
        let period = t.period;
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

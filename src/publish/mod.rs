//! Stage 6: publish. Each period's three KPI partitions and its report, each replaced by one
//! write through [`Store::publish`] (`outputs.md`: a reader sees the old file or the new one),
//! and the rejects of a run ([`rejects`]).

pub mod dim;
pub mod rejects;

use bytes::Bytes;

use polars::prelude::DataFrame;

use crate::error::Result;
use crate::kpi::KpiTables;
use crate::parquet::{blocking, write_table, ParquetEncoder};
use crate::store::{Store, WrittenFile};

/// The KPI tables of a period: name in `kpi/` and frame.
fn tables(t: &KpiTables) -> [(&'static str, &polars::prelude::DataFrame); 5] {
    [
        ("cases_by_agency", &t.by_agency),
        ("cases_by_level", &t.by_level),
        ("catalog_by_level", &t.catalog),
        ("cases_by_agency_restated", &t.restated.by_agency),
        ("cases_by_level_restated", &t.restated.by_level),
    ]
}

/// The tables every published period has.
pub const TABLES: [&str; 5] = [
    "cases_by_agency",
    "cases_by_level",
    "catalog_by_level",
    "cases_by_agency_restated",
    "cases_by_level_restated",
];

/// Where a KPI table of a period lives.
pub fn kpi_path(table: &str, period: &str) -> String {
    format!("kpi/{table}/period={period}/part-0.parquet")
}

/// The KPI partitions of one period, then its report.
pub async fn kpi_tables(
    store: &Store,
    enc: &ParquetEncoder,
    t: &KpiTables,
) -> Result<Vec<WrittenFile>> {
    let id = t.period.id.to_string();
    // Each file encoded on a blocking thread of its own, all at once: the cores are free after
    // the count. Each is published atomically and on its own, as before, every one is waited
    // for, and a failure fails the period.
    let paths: Vec<(String, &DataFrame)> = tables(t)
        .into_iter()
        .map(|(table, df)| (kpi_path(table, &id), df))
        .collect();
    let written = paths
        .iter()
        .map(|(path, df)| write_table(store, enc, path, (*df).clone()));
    let (written, html) =
        futures::future::join(futures::future::join_all(written), report(store, t)).await;
    written.into_iter().chain([html]).collect()
}

/// The period's report for people, `reports/period=<id>/index.html`.
pub async fn report(store: &Store, t: &KpiTables) -> Result<WrittenFile> {
    let generated = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let tables = t.clone();
    let html = blocking(move || crate::report::html(&tables, &tables.run_id, &generated)).await?;
    let path = format!("reports/period={}/index.html", t.period.id);
    let len = html.len() as u64;
    store.publish(&path, Bytes::from(html)).await?;
    Ok(WrittenFile {
        path,
        bytes: len,
        rows: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kpi_partitions_are_hive_paths() {
        assert_eq!(
            kpi_path("cases_by_level", "2024-Q3"),
            "kpi/cases_by_level/period=2024-Q3/part-0.parquet"
        );
    }
}

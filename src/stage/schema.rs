//! The staging table `cases/` (see `schemas/cases.json`): its columns, and how its cases are
//! split into buckets — `cases/bucket=NN/part-0.parquet`, one file per bucket, each case in
//! the bucket of its id for life, so an upsert rewrites only the buckets its records fall in.

use std::collections::BTreeMap;

use polars::prelude::*;
use sha2::Sha256;

use crate::error::Result;

/// The staging table `cases/`: column name and type, in file order. See `schemas/cases.json`.
pub fn staging_schema() -> Vec<(&'static str, DataType)> {
    let ts = DataType::Datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC));
    vec![
        ("case_id", DataType::String),
        ("agency_code", DataType::String),
        ("agency_name_text", DataType::String),
        ("procedure_code", DataType::String),
        ("procedure_name", DataType::String),
        ("field_code", DataType::String),
        ("field_name", DataType::String),
        ("channel", DataType::Int32),
        ("applicant_kind", DataType::Int32),
        ("applicant_key", DataType::String),
        ("status", DataType::Int32),
        ("submitted_at", ts.clone()),
        ("accepted_at", ts.clone()),
        ("due_at", ts.clone()),
        ("extended_due_at", ts.clone()),
        ("processed_at", ts.clone()),
        ("returned_at", ts.clone()),
        ("refused_at", ts.clone()),
        ("updated_at", ts),
        ("supplement_requests", DataType::Int64),
        ("paid_online", DataType::Boolean),
        ("digitized", DataType::Boolean),
        ("submitted_date", DataType::Date),
        ("accepted_date", DataType::Date),
        ("refused_date", DataType::Date),
        ("end_date", DataType::Date),
        ("due_date", DataType::Date),
        ("source_run_id", DataType::String),
    ]
}

/// An empty staging table: the columns of [`staging_schema`], no rows.
pub fn empty_staging() -> Result<DataFrame> {
    let cols: Vec<Column> = staging_schema()
        .into_iter()
        .map(|(n, dt)| Column::full_null(n.into(), 0, &dt))
        .collect();
    Ok(DataFrame::new(0, cols)?)
}

/// Number of staging buckets (`cases/bucket=NN/part-0.parquet`). A case stays in its bucket for
/// life, so an upsert rewrites only the buckets its new records fall in.
pub const BUCKETS: u32 = 16;

/// The bucket of a case id: stable across runs, platforms and versions.
pub fn bucket_of(case_id: &str) -> u32 {
    use sha2::Digest;
    let h = Sha256::digest(case_id.as_bytes());
    u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % BUCKETS
}

/// Splits newly normalised cases by bucket.
pub fn by_bucket(cases: &DataFrame) -> Result<BTreeMap<u32, DataFrame>> {
    let ids = cases.column("case_id")?.str()?.clone();
    let buckets: Vec<u32> = ids.iter().map(|id| bucket_of(id.unwrap_or(""))).collect();
    let mut with = cases.clone();
    with.with_column(Column::new("_bucket".into(), buckets))?;
    let mut out = BTreeMap::new();
    for part in with.partition_by(["_bucket"], true)? {
        let b = part.column("_bucket")?.u32()?.get(0).unwrap_or(0);
        out.insert(b, part.drop("_bucket")?);
    }
    Ok(out)
}

/// Where bucket `bucket` lives.
pub fn bucket_path(bucket: u32) -> String {
    format!("cases/bucket={bucket:02}/part-0.parquet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_cover_every_case() {
        // Pinned: a case never moves bucket across versions, platforms or runs.
        assert_eq!(
            bucket_of("000.00.15.H57-240615-0001"),
            bucket_of("000.00.15.H57-240615-0001")
        );
        let ids: Vec<String> = (0..2000).map(|i| format!("H{i}")).collect();
        let mut seen = std::collections::BTreeSet::new();
        for id in &ids {
            let b = bucket_of(id);
            assert!(b < BUCKETS);
            seen.insert(b);
        }
        assert_eq!(seen.len(), BUCKETS as usize, "2,000 ids reach every bucket");
        let df = df!("case_id" => &ids, "x" => (0..2000).collect::<Vec<i32>>()).unwrap();
        let parts = by_bucket(&df).unwrap();
        assert_eq!(parts.values().map(|p| p.height()).sum::<usize>(), 2000);
        for (b, p) in &parts {
            let ids = p.column("case_id").unwrap().str().unwrap();
            assert!(ids.iter().flatten().all(|id| bucket_of(id) == *b));
            assert_eq!(p.get_column_names(), ["case_id", "x"]);
        }
        assert_eq!(bucket_path(3), "cases/bucket=03/part-0.parquet");
        assert_eq!(empty_staging().unwrap().width(), staging_schema().len());
    }
}

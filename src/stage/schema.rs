//! The staging table `cases/` (see `schemas/cases.json`): its columns, and its cases split by
//! the partition of their id ([`super::layout`]).

use std::collections::BTreeMap;

use polars::prelude::*;

use super::layout::Partition;
use crate::error::Result;
use crate::wire::local_date;
use chrono::NaiveDate;
use polars::chunked_array::builder::{AnonymousOwnedListBuilder, ListBuilderTrait};

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
        ("transfers", transfers_type()),
        ("source_run_id", DataType::String),
    ]
}

/// `transfers`: a list of `{from_agency, to_agency, transferred_on}`, the date local. (A zoned
/// timestamp inside a list of structs trips polars 0.55 when a column holds one row.)
fn transfers_type() -> DataType {
    DataType::List(Box::new(DataType::Struct(vec![
        Field::new("from_agency".into(), DataType::String),
        Field::new("to_agency".into(), DataType::String),
        Field::new("transferred_on".into(), DataType::Date),
    ])))
}

/// One hand-over of a case, as staged.
#[derive(Debug, Clone, PartialEq)]
pub struct StagedTransfer {
    pub from: String,
    pub to: Option<String>,
    /// `NgayChuyen`, epoch microseconds.
    pub at: i64,
}

/// The `transfers` column: for each row, the list of its hand-overs as structs
/// `{from_agency, to_agency, transferred_at}` (an empty list for most rows).
pub fn transfers_column(all: &[StagedTransfer], counts: &[u32]) -> Result<Column> {
    let items = StructChunked::from_series(
        "item".into(),
        all.len(),
        [
            Series::new(
                "from_agency".into(),
                all.iter().map(|t| t.from.as_str()).collect::<Vec<_>>(),
            ),
            Series::new(
                "to_agency".into(),
                all.iter().map(|t| t.to.as_deref()).collect::<Vec<_>>(),
            ),
            Series::new(
                "transferred_on".into(),
                all.iter()
                    .map(|t| (local_date(t.at) - NaiveDate::default()).num_days() as i32)
                    .collect::<Vec<_>>(),
            )
            .cast(&DataType::Date)?,
        ]
        .iter(),
    )?
    .into_series();
    let mut list = AnonymousOwnedListBuilder::new(
        "transfers".into(),
        counts.len(),
        Some(items.dtype().clone()),
    );
    let mut at = 0i64;
    for n in counts {
        if *n == 0 {
            list.append_empty();
        } else {
            list.append_series(&items.slice(at, *n as usize))?;
            at += *n as i64;
        }
    }
    Ok(list.finish().into_series().into_column())
}

/// A staging bucket read back, in today's columns: a column an earlier motcua did not write
/// (`transfers`, before agency history) is added empty, so staging never needs rebuilding.
pub fn conform(mut df: DataFrame) -> Result<DataFrame> {
    let h = df.height();
    for (name, dtype) in staging_schema() {
        if df.column(name).is_err() {
            let col = match &dtype {
                DataType::List(_) => transfers_column(&[], &vec![0; h])?,
                _ => Column::full_null(name.into(), h, &dtype),
            };
            df.with_column(col.with_name(name.into()))?;
        }
    }
    let names: Vec<&str> = staging_schema().iter().map(|(n, _)| *n).collect();
    let mut extra: Vec<String> = df
        .get_column_names()
        .iter()
        .filter(|c| !names.contains(&c.as_str()))
        .map(|c| c.to_string())
        .collect();
    let mut order: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    order.append(&mut extra);
    Ok(df.select(order)?)
}

/// The staging columns as a polars schema.
pub fn staging_polars_schema() -> Schema {
    staging_schema()
        .into_iter()
        .map(|(n, dt)| Field::new(n.into(), dt))
        .collect()
}

/// A frame of staged (or spilled) rows in exactly today's staging columns: missing ones added
/// ([`conform`]), others dropped, each of its type.
pub fn to_staging(df: DataFrame) -> Result<DataFrame> {
    let df = conform(df)?;
    let cols: Vec<Column> = staging_schema()
        .into_iter()
        .map(|(n, dt)| {
            let c = df.column(n)?;
            match c.dtype() == &dt {
                true => Ok(c.clone()),
                false => c.cast(&dt),
            }
        })
        .collect::<PolarsResult<_>>()?;
    Ok(DataFrame::new(df.height(), cols)?)
}

/// An empty staging table: the columns of [`staging_schema`], no rows.
pub fn empty_staging() -> Result<DataFrame> {
    let cols: Vec<Column> = staging_schema()
        .into_iter()
        .map(|(n, dt)| Column::full_null(n.into(), 0, &dt))
        .collect();
    Ok(DataFrame::new(0, cols)?)
}

/// The staging columns and `_order`, the arrival sequence of a record in its run: what the
/// spill holds.
pub fn spill_schema() -> Schema {
    let mut schema: Schema = staging_schema()
        .into_iter()
        .map(|(n, dt)| Field::new(n.into(), dt))
        .collect();
    schema.insert(ORDER.into(), DataType::Int64);
    schema
}

/// The arrival order column of new records.
pub const ORDER: &str = "_order";

/// Splits newly normalised cases by staging partition.
pub fn by_partition(cases: &DataFrame) -> Result<BTreeMap<Partition, DataFrame>> {
    let ids = cases.column("case_id")?.str()?;
    let mut rows: BTreeMap<Partition, Vec<IdxSize>> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        rows.entry(Partition::of(id.unwrap_or("")))
            .or_default()
            .push(i as IdxSize);
    }
    // Rows are taken, not partitioned: polars 0.55 turns the columns of a one-row partition
    // into scalars, and cannot write a scalar list of structs with a zoned timestamp. They are
    // taken in one gather, partition after partition, and each partition is a slice of it (a
    // view): a gather per partition was a hundred gathers of every column per batch, which
    // kept polars' threads busy for a twelfth of a pull.
    let grouped: Vec<IdxSize> = rows.values().flatten().copied().collect();
    let grouped = cases.take(&IdxCa::from_vec("rows".into(), grouped))?;
    let mut out = BTreeMap::new();
    let mut at = 0;
    for (p, idx) in rows {
        out.insert(p, grouped.slice(at, idx.len()));
        at += idx.len() as i64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_split_by_partition_cover_every_case() {
        let ids: Vec<String> = (0..2000)
            .map(|i| match i % 3 {
                0 => format!("H{i}"),
                _ => format!("X-2407{:02}-{i:06}", 1 + i % 28),
            })
            .collect();
        let df = df!("case_id" => &ids, "x" => (0..2000).collect::<Vec<i32>>()).unwrap();
        let parts = by_partition(&df).unwrap();
        assert_eq!(parts.values().map(|p| p.height()).sum::<usize>(), 2000);
        for (p, df) in &parts {
            let ids = df.column("case_id").unwrap().str().unwrap();
            assert!(ids.iter().flatten().all(|id| Partition::of(id) == *p));
            assert_eq!(df.get_column_names(), ["case_id", "x"]);
        }
        assert_eq!(parts.len(), 16 + 4, "16 hash buckets and July's four");
        assert_eq!(empty_staging().unwrap().width(), staging_schema().len());
        assert_eq!(spill_schema().len(), staging_schema().len() + 1);
    }
}

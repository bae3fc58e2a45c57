//! `dim/agencies/part-0.parquet` (`agencies.md`, "Outputs"): the agency catalog with its
//! history, for BI tools to join to `cases_by_agency` — one file, replaced by each run.

use chrono::NaiveDate;
use polars::prelude::*;

use crate::domain::agency::Catalog;
use crate::error::Result;
use crate::parquet::{write_table, ParquetEncoder};
use crate::store::{Store, WrittenFile};

pub const PATH: &str = "dim/agencies/part-0.parquet";

/// The catalog as a frame: one row per agency, in code order.
pub fn frame(catalog: &Catalog) -> Result<DataFrame> {
    let mut a: Vec<_> = catalog.all().iter().collect();
    a.sort_by(|x, y| x.code.cmp(&y.code));
    let days = |d: Option<NaiveDate>| d.map(|d| (d - NaiveDate::default()).num_days() as i32);
    let date = |name: &str, v: Vec<Option<i32>>| Column::new(name.into(), v).cast(&DataType::Date);
    let successors: ListChunked = a
        .iter()
        .map(|x| Some(Series::new("".into(), x.successors.clone())))
        .collect();
    let df = DataFrame::new(
        a.len(),
        vec![
            Column::new(
                "agency_code".into(),
                a.iter().map(|x| x.code.as_str()).collect::<Vec<_>>(),
            ),
            Column::new(
                "agency_name".into(),
                a.iter().map(|x| x.name.as_deref()).collect::<Vec<_>>(),
            ),
            Column::new(
                "level".into(),
                a.iter().map(|x| x.level().as_str()).collect::<Vec<_>>(),
            ),
            Column::new(
                "parent_code".into(),
                a.iter().map(|x| x.parent.as_deref()).collect::<Vec<_>>(),
            ),
            date("valid_from", a.iter().map(|x| days(x.valid_from)).collect())?,
            date("valid_to", a.iter().map(|x| days(x.valid_to)).collect())?,
            successors
                .cast(&DataType::List(Box::new(DataType::String)))?
                .with_name("successor_codes".into())
                .into_column(),
            Column::new(
                "main_successor".into(),
                a.iter().map(|x| x.main_successor()).collect::<Vec<_>>(),
            ),
        ],
    )?;
    Ok(df)
}

/// Writes the catalog.
pub async fn agencies(
    store: &Store,
    enc: &ParquetEncoder,
    catalog: &Catalog,
) -> Result<WrittenFile> {
    write_table(store, enc, PATH, frame(catalog)?).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::agency::Agency;

    #[test]
    fn the_catalog_as_a_table_keeps_its_history() {
        let c = Catalog::new(vec![
            Agency {
                code: "H1".into(),
                cap: Some(2),
                valid_to: "2025-07-01".parse().ok(),
                successors: vec!["X1".into(), "P9".into()],
                ..Default::default()
            },
            Agency {
                code: "A0".into(),
                name: Some("Sở A".into()),
                cap: Some(1),
                ..Default::default()
            },
        ]);
        let df = frame(&c).unwrap();
        let s = |c: &str, i: usize| {
            df.column(c)
                .unwrap()
                .str()
                .unwrap()
                .get(i)
                .map(str::to_string)
        };
        assert_eq!(s("agency_code", 0).as_deref(), Some("A0"));
        assert_eq!(s("level", 1).as_deref(), Some("district"));
        assert_eq!(s("main_successor", 1).as_deref(), Some("X1"));
        assert_eq!(s("main_successor", 0), None);
        assert_eq!(df.column("valid_to").unwrap().dtype(), &DataType::Date);
        let list = df
            .column("successor_codes")
            .unwrap()
            .list()
            .unwrap()
            .get_as_series(1)
            .unwrap();
        assert_eq!(
            list.str().unwrap().iter().flatten().collect::<Vec<_>>(),
            ["X1", "P9"]
        );
    }
}

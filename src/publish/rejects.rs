//! The rejects of a run, `quality/rejects/run_id=<run>/part-0.parquet`: one row per rejected
//! record with its reason and where its raw copy is — no personal data (codes, reasons, dates
//! and raw locations only).

use polars::prelude::*;

use crate::error::Result;
use crate::normalise::Reject;
use crate::parquet::{utc_micros, write_table, ParquetEncoder};
use crate::store::{Store, WrittenFile};

/// Where the rejects of run `run_id` live.
pub fn path(run_id: &str) -> String {
    format!("quality/rejects/run_id={run_id}/part-0.parquet")
}

/// Writes the rejects of run `run_id` (an empty file when there are none).
pub async fn publish(
    store: &Store,
    enc: &ParquetEncoder,
    rejects: &[Reject],
    run_id: &str,
) -> Result<WrittenFile> {
    write_table(store, enc, &path(run_id), frame(rejects, run_id)?).await
}

/// The rejects of a run as a frame (no personal data: codes, reasons, dates and raw locations).
pub fn frame(rejects: &[Reject], run_id: &str) -> Result<DataFrame> {
    let df = DataFrame::new(
        rejects.len(),
        vec![
            Column::new(
                "record_key".into(),
                rejects
                    .iter()
                    .map(|r| r.record_key.clone())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "reason".into(),
                rejects.iter().map(|r| r.reason.code()).collect::<Vec<_>>(),
            ),
            Column::new(
                "detail".into(),
                rejects.iter().map(|r| r.detail.clone()).collect::<Vec<_>>(),
            ),
            utc_micros("updated_at", rejects.iter().map(|r| r.updated_at).collect()),
            Column::new(
                "raw_path".into(),
                rejects
                    .iter()
                    .map(|r| r.raw_path.clone())
                    .collect::<Vec<_>>(),
            ),
            Column::new(
                "raw_index".into(),
                rejects.iter().map(|r| r.raw_index).collect::<Vec<_>>(),
            ),
            Column::new("run_id".into(), vec![run_id; rejects.len()]),
        ],
    )?;
    Ok(df)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::reject::RejectReason;

    #[test]
    fn a_reject_row_names_its_reason_and_raw_copy() {
        let r = Reject {
            record_key: Some("HS-1".into()),
            reason: RejectReason::UnreadableDate,
            detail: "not a date in any accepted shape: NgayTra=\"32/07/2024\"".into(),
            raw_path: "raw/run_id=r/v1-hoso/000003_page=1.json.gz".into(),
            raw_index: 7,
            updated_at: Some(0),
        };
        let df = frame(&[r], "r").unwrap();
        assert_eq!(df.height(), 1);
        let s = |c: &str| {
            df.column(c)
                .unwrap()
                .str()
                .unwrap()
                .get(0)
                .unwrap()
                .to_string()
        };
        assert_eq!(s("reason"), "unreadable_date");
        assert_eq!(s("run_id"), "r");
        assert_eq!(
            df.column("raw_index").unwrap().i64().unwrap().get(0),
            Some(7)
        );
        assert_eq!(path("r"), "quality/rejects/run_id=r/part-0.parquet");
        assert_eq!(frame(&[], "r").unwrap().height(), 0);
    }
}

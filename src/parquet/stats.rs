//! What a Parquet file's statistics tell of a row group without decoding it: the KPI count
//! (`kpi::scan`) skips what cannot count and hand-overs where there are none.

use super::ParquetFile;

impl ParquetFile {
    /// Whether, by its statistics, the leaf `leaf` of the nested column `root` has no value at
    /// all in row group `rg` (neither a least nor a greatest): every one is null or there is
    /// none. `false` whenever that cannot be told.
    pub fn leaf_without_values(&self, rg: usize, root: &str, leaf: &str) -> bool {
        use polars_parquet::parquet::statistics::Statistics as S;
        let Some(group) = self.metadata.row_groups.get(rg) else {
            return false;
        };
        let Some(mut chunks) = group.columns_under_root_iter(root) else {
            return false;
        };
        let Some(chunk) = chunks.find(|c| {
            c.descriptor()
                .path_in_schema
                .last()
                .is_some_and(|l| l.as_str() == leaf)
        }) else {
            return false;
        };
        match chunk.statistics(&self.metadata.footer_buf) {
            Some(Ok(S::Binary(s))) => s.min_value.is_none() && s.max_value.is_none(),
            Some(Ok(S::Int32(s))) => s.min_value.is_none() && s.max_value.is_none(),
            Some(Ok(S::Int64(s))) => s.min_value.is_none() && s.max_value.is_none(),
            Some(Ok(S::Boolean(s))) => s.min_value.is_none() && s.max_value.is_none(),
            _ => false,
        }
    }

    /// Whether, by its statistics, every value of the 32-bit integer (or `Date`) column
    /// `column` in row group `rg` is null or later than `day`: its least value is later, or it
    /// has no least value and is null on every row. `false` whenever that cannot be told (no
    /// such row group or column, no statistics, another type, unreadable statistics).
    pub fn all_null_or_after(&self, rg: usize, column: &str, day: i32) -> bool {
        use polars_parquet::parquet::statistics::Statistics;
        let Some(group) = self.metadata.row_groups.get(rg) else {
            return false;
        };
        let Some(mut chunks) = group.columns_under_root_iter(column) else {
            return false;
        };
        let (Some(chunk), None) = (chunks.next(), chunks.next()) else {
            return false;
        };
        match chunk.statistics(&self.metadata.footer_buf) {
            Some(Ok(Statistics::Int32(s))) => match (s.min_value, s.max_value) {
                (Some(min), Some(_)) => min > day,
                (None, None) => s.null_count == Some(group.num_rows() as i64),
                _ => false,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use polars::prelude::*;

    use crate::parquet::{ParquetEncoder, ParquetFile};

    /// A nested leaf with no value in a row group is told from one with some; a leaf or column
    /// the file does not have never is.
    #[test]
    fn statistics_tell_leaves_without_values() {
        use crate::stage::schema::{transfers_column, StagedTransfer};
        let t = StagedTransfer {
            from: "A".into(),
            to: None,
            at: 0,
        };
        // Rows 0–2 none; row 4 one, without a receiving agency.
        let df = DataFrame::new(
            6,
            vec![transfers_column(&[t], &[0, 0, 0, 0, 1, 0]).unwrap()],
        )
        .unwrap();
        let enc = ParquetEncoder { row_group_rows: 3 };
        let f = ParquetFile::open(Bytes::from(enc.encode(df).unwrap())).unwrap();
        for leaf in ["from_agency", "to_agency", "transferred_on"] {
            assert!(f.leaf_without_values(0, "transfers", leaf), "{leaf}");
        }
        assert!(!f.leaf_without_values(1, "transfers", "from_agency"));
        assert!(!f.leaf_without_values(1, "transfers", "transferred_on"));
        assert!(f.leaf_without_values(1, "transfers", "to_agency"));
        assert!(!f.leaf_without_values(0, "transfers", "missing"));
        assert!(!f.leaf_without_values(0, "missing", "from_agency"));
        assert!(!f.leaf_without_values(2, "transfers", "from_agency"));
    }

    /// The statistics tell a row group whose values are all null or later than a day, and
    /// never claim it of one that has a value on or before it, of another type, or of a
    /// column or row group the file does not have.
    #[test]
    fn statistics_tell_row_groups_all_null_or_after_a_day() {
        let day = |v: Vec<Option<i32>>| Column::new("x".into(), v).cast(&DataType::Date).unwrap();
        let df = DataFrame::new(
            6,
            vec![
                day(vec![Some(10), Some(20), None, Some(30), None, Some(40)]).with_name("d".into()),
                day(vec![None; 6]).with_name("n".into()),
                Column::new("s".into(), ["a", "b", "c", "d", "e", "f"]),
                Column::new("i".into(), [5i32, 6, 7, 8, 9, 10]),
            ],
        )
        .unwrap();
        let enc = ParquetEncoder { row_group_rows: 3 };
        let f = ParquetFile::open(Bytes::from(enc.encode(df).unwrap())).unwrap();
        assert_eq!(f.row_group_rows(), [3, 3]);
        assert!(f.all_null_or_after(0, "d", 9));
        assert!(!f.all_null_or_after(0, "d", 10));
        assert!(!f.all_null_or_after(0, "d", 25));
        assert!(f.all_null_or_after(1, "d", 29));
        assert!(!f.all_null_or_after(1, "d", 30));
        assert!(f.all_null_or_after(0, "n", i32::MAX) && f.all_null_or_after(1, "n", 0));
        assert!(f.all_null_or_after(1, "i", 7) && !f.all_null_or_after(1, "i", 8));
        assert!(!f.all_null_or_after(0, "s", 0));
        assert!(!f.all_null_or_after(0, "missing", 0));
        assert!(!f.all_null_or_after(2, "d", 0));
    }
}

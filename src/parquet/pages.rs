//! Page headers checked against the footer before polars decodes them. polars-parquet trusts a
//! data page's value count: given a damaged one (negative, or far beyond the row group) its
//! frame reader sizes a validity bitmap by it, and the allocation of 2^61 bytes aborts the
//! process, which no `catch_unwind` contains. So every data page must count at least nothing,
//! the pages of a chunk must add up to the footer's count, and a flat column (no lists) must
//! count one value per row of its row group.

use std::io::Cursor;

use polars_buffer::Buffer;
use polars_parquet::parquet::page::{CompressedPage, DataPageHeader};
use polars_parquet::parquet::read::PageReader;
use polars_parquet::read::ColumnChunkMetadata;

use super::ParquetFile;
use crate::error::{Error, Result};

impl ParquetFile {
    /// Checks the page headers of `columns` (every column when `None`) in the row groups
    /// holding rows `offset .. offset + len`, before polars reads them.
    pub(super) fn check_pages(
        &self,
        columns: Option<&[&str]>,
        (offset, len): (usize, usize),
    ) -> Result<()> {
        let buffer = self.buffer()?;
        let mut at = 0;
        for (rg, group) in self.metadata.row_groups.iter().enumerate() {
            let rows = group.num_rows();
            let read = at < offset.saturating_add(len) && offset < at + rows;
            at += rows;
            if !read {
                continue;
            }
            for c in group.parquet_columns() {
                let name = c.descriptor().path_in_schema.first();
                if columns
                    .is_some_and(|cs| !cs.iter().any(|n| Some(*n) == name.map(|n| n.as_str())))
                {
                    continue;
                }
                let r = c.byte_range();
                let (start, end) = (r.start as usize, r.end as usize);
                let chunk = (start <= end && end <= buffer.len())
                    .then(|| buffer.clone().sliced(start..end))
                    .ok_or_else(|| "a column chunk beyond the file's end".to_string());
                chunk
                    .and_then(|chunk| check_chunk(c, chunk, rows))
                    .map_err(|e| {
                        Error::Internal(format!(
                            "reading Parquet: the file is damaged (row group {rg}, column {}: {e})",
                            name.map_or("?", |n| n.as_str())
                        ))
                    })?;
            }
        }
        Ok(())
    }
}

/// The values counted so far of one column chunk, page by page.
pub(super) struct Tally {
    /// The footer's count for the chunk.
    total: i64,
    seen: i64,
}

impl Tally {
    /// A chunk of a row group of `rows` rows, as its footer describes it.
    pub(super) fn of(meta: &ColumnChunkMetadata, rows: usize) -> Result<Tally, String> {
        let total = meta.num_values();
        let flat = meta.descriptor().descriptor.max_rep_level == 0;
        let rows = i64::try_from(rows).unwrap_or(i64::MAX);
        if total < 0 || (flat && total != rows) {
            return Err(format!(
                "the footer counts {total} values in a column chunk of {rows} rows"
            ));
        }
        Ok(Tally { total, seen: 0 })
    }

    /// Takes in one data page's header.
    pub(super) fn page(&mut self, header: &DataPageHeader) -> Result<(), String> {
        let (values, nulls, rows) = match header {
            DataPageHeader::V1(h) => (h.num_values, 0, 0),
            DataPageHeader::V2(h) => (h.num_values, h.num_nulls, h.num_rows),
        };
        let fits = values >= 0 && (0..=values).contains(&nulls) && (0..=values).contains(&rows);
        self.seen = self.seen.saturating_add(values.into());
        if !fits || self.seen > self.total {
            return Err(format!(
                "a data page counts {values} values ({nulls} null, {rows} rows) where its column \
                 chunk has {} in all",
                self.total
            ));
        }
        Ok(())
    }

    /// Checks the pages counted every value of the chunk.
    pub(super) fn end(&self) -> Result<(), String> {
        if self.seen != self.total {
            return Err(format!(
                "the data pages count {} values, the footer {}",
                self.seen, self.total
            ));
        }
        Ok(())
    }
}

/// Checks the page headers of the column chunk `chunk` (its bytes, described by `meta`) of a
/// row group of `rows` rows.
pub(super) fn check_chunk(
    meta: &ColumnChunkMetadata,
    chunk: Buffer<u8>,
    rows: usize,
) -> Result<(), String> {
    let mut tally = Tally::of(meta, rows)?;
    for page in PageReader::new(Cursor::new(chunk), meta, vec![], usize::MAX) {
        if let CompressedPage::Data(d) = page.map_err(|e| e.to_string())? {
            tally.page(d.header())?;
        }
    }
    tally.end()
}

#[cfg(test)]
mod tests {
    use super::super::*;

    /// Every byte of the column chunks of a file flipped three ways: the frame reader gives
    /// an error or a frame, the flat reader of a list's leaf an error or a leaf, and none
    /// panics nor aborts (a damaged page header once claimed
    /// 2^61 values and polars tried to allocate them).
    #[test]
    fn damaged_pages_are_errors_when_read_whole() {
        let n = 300usize;
        let lists: Vec<Series> = (0..n)
            .map(|i| Series::new("".into(), vec![i as i32; i % 3]))
            .collect();
        let df = df!(
            "agency" => (0..n).map(|i| format!("agency-{}", i % 13)).collect::<Vec<_>>(),
            "day" => (0..n).map(|i| (i % 5 != 0).then_some(i as i32)).collect::<Vec<_>>(),
            "moves" => lists,
        )
        .unwrap();
        let bytes = ParquetEncoder {
            row_group_rows: 300,
        }
        .encode(df.clone())
        .unwrap();
        let f = ParquetFile::open(Bytes::from(bytes.clone())).unwrap();
        assert!(f.read(None, (0, n)).unwrap().equals_missing(&df));
        let group = &f.metadata.row_groups[0];
        let columns = group.parquet_columns();
        let start = columns[0].byte_range().start as usize;
        let end = columns[columns.len() - 1].byte_range().end as usize;
        // The list's leaf read flat (`leaves.rs`) too: every item, each row started once.
        let leaf: Vec<String> = columns[2]
            .descriptor()
            .path_in_schema
            .iter()
            .map(|s| s.to_string())
            .collect();
        let leaf: Vec<&str> = leaf.iter().map(|s| s.as_str()).collect();
        let flat = f.leaf_of_group(0, &leaf).unwrap().unwrap();
        assert_eq!(
            flat.values,
            LeafValues::Int32(
                (0..n as i32)
                    .flat_map(|i| vec![i; (i % 3) as usize])
                    .collect()
            )
        );
        assert_eq!(flat.rep.iter().filter(|r| **r == 0).count(), n);
        let (mut errors, mut read) = (0, 0);
        for at in start..end {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                let Ok(f) = ParquetFile::open(Bytes::from(b.clone())) else {
                    continue;
                };
                // Read flat, a damaged leaf is an error or a leaf, never a panic.
                let _ = f.leaf_of_group(0, &leaf);
                match (f.read(None, (0, n)), decode(Bytes::from(b))) {
                    (Ok(_), Ok(_)) => read += 1,
                    _ => errors += 1,
                }
            }
        }
        assert!(errors > 0 && read > 0, "{errors} errors, {read} read");
    }
}

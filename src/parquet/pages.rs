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

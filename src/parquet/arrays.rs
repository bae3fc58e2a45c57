//! One column chunk of one row group decoded as an arrow array, without building a frame: what
//! the KPI count reads row by row (`kpi::columns`). A string column whose data pages are all
//! dictionary-encoded (as staging writes them) can come as its dictionary and a key per row,
//! so a reader that groups by it looks up each distinct value once per row group, not each
//! row's text.

use std::io::Cursor;
use std::sync::Arc;

use polars_arrow::array::{Array, DictionaryArray, Utf8ViewArray};
use polars_arrow::datatypes::{ArrowDataType, Field, IntegerType, Metadata, DTYPE_CATEGORICAL_NEW};
use polars_buffer::Buffer;
use polars_parquet::parquet::compression::{Compression, DecompressionContext};
use polars_parquet::parquet::page::{DataPageHeader, Page};
use polars_parquet::parquet::read::{decompress, BasicDecompressor, PageMetaData, PageReader};
use polars_parquet::read::{column_iter_to_arrays, ColumnChunkMetadata};
use polars_parquet_format::thrift::protocol::TCompactOutputProtocol;
use polars_parquet_format::{DictionaryPageHeader, Encoding, PageHeader, PageType};

use super::pages::{check_chunk, Tally};
use super::{ParquetFile, Source};
use crate::error::{Doing, Error, Result};

/// A string column chunk as decoded: by dictionary keys, or (a chunk not wholly
/// dictionary-encoded, or a column of another writer) as views of each row's text.
pub enum Strings {
    Dictionary(DictionaryArray<u32>),
    Views(Utf8ViewArray),
}

impl ParquetFile {
    /// The whole file as a buffer the decoders slice column chunks from (a local file is
    /// mapped, not read).
    pub(super) fn buffer(&self) -> Result<Buffer<u8>> {
        match &self.source {
            Source::Bytes(b) => Ok(Buffer::from_owner(b.clone())),
            Source::Path(p) => {
                let what = || format!("mapping {}", p.display());
                let f = std::fs::File::open(p).doing_with(what)?;
                // SAFETY: scratch files are ours and not written while read.
                let map = unsafe { memmap2::Mmap::map(&f) }.doing_with(what)?;
                Ok(Buffer::from_owner(map))
            }
        }
    }

    /// The arrow field of top-level column `name`, as polars reads it.
    fn field(&self, name: &str) -> Result<Field> {
        let schema = match self.arrow.get() {
            Some(s) => s,
            None => {
                let s = polars_io::parquet::read::infer_schema(&self.metadata)
                    .doing("reading a Parquet file's schema")?;
                self.arrow.get_or_init(|| s)
            }
        };
        schema
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("the Parquet file has no column {name}")))
    }

    /// Column `name` of row group `rg` decoded as `field` says, in one array.
    fn decode(&self, buffer: &Buffer<u8>, rg: usize, field: Field) -> Result<Box<dyn Array>> {
        let name = field.name.to_string();
        let chunks = self
            .metadata
            .row_groups
            .get(rg)
            .and_then(|g| g.columns_under_root_iter(&name))
            .ok_or_else(|| Error::Internal(format!("no column {name} in row group {rg}")))?;
        let rows = self.metadata.row_groups[rg].num_rows();
        let mut columns = vec![];
        let mut types = vec![];
        for c in chunks {
            let r = c.byte_range();
            let (start, end) = (r.start as usize, r.end as usize);
            if start > end || end > buffer.len() {
                return Err(Error::Internal(format!(
                    "column {name} of row group {rg} lies beyond the file's end"
                )));
            }
            let (meta, pages) = decompressed(c, buffer.clone().sliced(start..end), rows)
                .doing_with(|| format!("decompressing column {name} of row group {rg}"))?;
            let reader =
                PageReader::new_with_page_meta(Cursor::new(pages), meta, vec![], usize::MAX);
            columns.push(BasicDecompressor::new(reader, vec![]));
            types.push(&c.descriptor().descriptor.primitive_type);
        }
        let what = format!("decoding column {name} of row group {rg}");
        let (arrays, _) =
            super::contained(&what, || column_iter_to_arrays(columns, types, field, None))?;
        if arrays.len() > 1 {
            let parts: Vec<&dyn Array> = arrays.iter().map(|a| a.as_ref()).collect();
            return polars_arrow::compute::concatenate::concatenate(&parts)
                .doing_with(|| format!("joining column {name} of row group {rg}"));
        }
        arrays
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal(format!("column {name} decoded to nothing")))
    }

    /// Column `name` of row group `rg`, as polars reads it.
    pub fn column_of_group(&self, rg: usize, name: &str) -> Result<Box<dyn Array>> {
        self.decode(&self.buffer()?, rg, self.field(name)?)
    }

    /// The string column `name` of row group `rg`: by its dictionary when every data page
    /// of the chunk is dictionary-encoded, else as views.
    pub fn strings_of_group(&self, rg: usize, name: &str) -> Result<Strings> {
        let buffer = self.buffer()?;
        let field = self.field(name)?;
        if field.dtype != ArrowDataType::Utf8View {
            return Err(Error::Internal(format!("column {name} is not of strings")));
        }
        let mut md = Metadata::new();
        md.insert(DTYPE_CATEGORICAL_NEW.into(), "".into());
        let dictionary = Field {
            dtype: ArrowDataType::Dictionary(
                IntegerType::UInt32,
                Box::new(ArrowDataType::Utf8View),
                false,
            ),
            metadata: Some(Arc::new(md)),
            ..field.clone()
        };
        // A chunk with a plainly encoded page (a dictionary grown too large) is refused by
        // the dictionary decoder; it is read as views.
        if let Ok(a) = self.decode(&buffer, rg, dictionary) {
            if let Some(d) = a.as_any().downcast_ref::<DictionaryArray<u32>>() {
                return Ok(Strings::Dictionary(d.clone()));
            }
        }
        let a = self.decode(&buffer, rg, field)?;
        a.as_any()
            .downcast_ref::<Utf8ViewArray>()
            .cloned()
            .map(Strings::Views)
            .ok_or_else(|| Error::Internal(format!("column {name} did not decode as strings")))
    }
}

thread_local! {
    /// This thread's zstd context, reused from one page to the next.
    static CONTEXT: std::cell::RefCell<DecompressionContext> =
        const { std::cell::RefCell::new(DecompressionContext::Unset) };
}

/// The column chunk `chunk` (described by `meta`) with every page decompressed, as the pages
/// of an uncompressed chunk. polars-parquet's decoder makes a zstd context for every column
/// chunk it reads (5 % of a count, making and freeing them); this thread's one is reused.
/// Version 2 data pages (which motcua does not write) are left to polars-parquet. Every data
/// page's header is checked on the way (`pages.rs`), the chunk being of a row group of `rows`.
pub(super) fn decompressed(
    meta: &ColumnChunkMetadata,
    chunk: Buffer<u8>,
    rows: usize,
) -> polars::prelude::PolarsResult<(PageMetaData, Buffer<u8>)> {
    let damaged = |e: String| {
        polars::prelude::PolarsError::ComputeError(format!("the file is damaged: {e}").into())
    };
    let mut page_meta = PageMetaData::from(meta);
    if meta.compression() == Compression::Uncompressed {
        check_chunk(meta, chunk.clone(), rows).map_err(damaged)?;
        return Ok((page_meta, chunk));
    }
    let mut tally = Tally::of(meta, rows).map_err(damaged)?;
    let original = chunk.clone();
    let mut reader = PageReader::new(Cursor::new(chunk), meta, vec![], usize::MAX);
    // Room as the footer says, within reason (a damaged footer may claim anything).
    let room = usize::try_from(meta.uncompressed_size())
        .unwrap_or(0)
        .min(1 << 26);
    let mut out: Vec<u8> = Vec::with_capacity(room);
    let size = |n: usize| {
        i32::try_from(n).map_err(|_| {
            polars::prelude::PolarsError::ComputeError("a Parquet page over 2 GiB".into())
        })
    };
    let reframed = CONTEXT.with_borrow_mut(|context| {
        for page in reader.by_ref() {
            let page = decompress(page?, &mut vec![], context)?;
            let (header, body): (PageHeader, &[u8]) = match &page {
                Page::Dict(d) => {
                    let h = DictionaryPageHeader::new(
                        d.num_values as i32,
                        Encoding::PLAIN,
                        d.is_sorted,
                    );
                    let size = size(d.buffer.len())?;
                    let header = PageHeader::new(
                        PageType::DICTIONARY_PAGE,
                        size,
                        size,
                        None,
                        None,
                        None,
                        h,
                        None,
                    );
                    (header, &d.buffer)
                }
                Page::Data(d) => {
                    tally.page(d.header()).map_err(damaged)?;
                    let size = size(d.buffer().len())?;
                    let header = match d.header() {
                        DataPageHeader::V1(h) => {
                            // polars-parquet unwraps these later: a damaged one is an error here.
                            let known = |e: Encoding| {
                                polars_parquet::parquet::encoding::Encoding::try_from(e).is_ok()
                            };
                            let encodings = [
                                h.encoding,
                                h.definition_level_encoding,
                                h.repetition_level_encoding,
                            ];
                            if !encodings.into_iter().all(known) {
                                return Err(polars::prelude::PolarsError::ComputeError(
                                    "a Parquet page of an unknown encoding".into(),
                                ));
                            }
                            PageHeader::new(
                                PageType::DATA_PAGE,
                                size,
                                size,
                                None,
                                h.clone(),
                                None,
                                None,
                                None,
                            )
                        }
                        // Not written by motcua: left to polars-parquet whole.
                        DataPageHeader::V2(_) => return Ok(false),
                    };
                    (header, d.buffer())
                }
            };
            header
                .write_to_out_protocol(&mut TCompactOutputProtocol::new(&mut out))
                .map_err(|e| polars::prelude::PolarsError::ComputeError(e.to_string().into()))?;
            out.extend_from_slice(body);
        }
        tally.end().map_err(damaged)?;
        Ok::<_, polars::prelude::PolarsError>(true)
    })?;
    if !reframed {
        check_chunk(meta, original.clone(), rows).map_err(damaged)?;
        return Ok((page_meta, original));
    }
    page_meta.column_start = 0;
    page_meta.compression = Compression::Uncompressed;
    Ok((page_meta, Buffer::from(out)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parquet::ParquetEncoder;
    use polars::prelude::*;

    #[test]
    fn string_columns_decode_by_their_dictionary_as_their_text() {
        let n = 1000;
        let agency: Vec<Option<String>> = (0..n)
            .map(|i| (i % 7 != 3).then(|| format!("agency-{}", i % 13)))
            .collect();
        // Distinct on every row: still one dictionary per chunk as written.
        let ids: Vec<String> = (0..n).map(|i| format!("case-{i:06}")).collect();
        let dates: Vec<Option<i32>> = (0..n).map(|i| (i % 5 != 0).then_some(i as i32)).collect();
        let df = df!(
            "agency" => agency.clone(),
            "id" => ids.clone(),
            "day" => dates.clone(),
        )
        .unwrap();
        let enc = ParquetEncoder {
            row_group_rows: 300,
        };
        let f = ParquetFile::open(enc.encode(df.clone()).unwrap().into()).unwrap();
        let mut at = 0;
        for (rg, rows) in f.row_group_rows().into_iter().enumerate() {
            for (name, want) in [
                ("agency", agency[at..at + rows].to_vec()),
                ("id", ids[at..at + rows].iter().cloned().map(Some).collect()),
            ] {
                let got: Vec<Option<String>> = match f.strings_of_group(rg, name).unwrap() {
                    Strings::Dictionary(d) => {
                        let values = d.values().as_any().downcast_ref::<Utf8ViewArray>().unwrap();
                        d.keys_iter()
                            .map(|k| k.map(|k| values.value(k).to_string()))
                            .collect()
                    }
                    Strings::Views(v) => v.iter().map(|s| s.map(str::to_string)).collect(),
                };
                assert_eq!(got, want, "{name} of row group {rg}");
            }
            let day = f.column_of_group(rg, "day").unwrap();
            let day = day
                .as_any()
                .downcast_ref::<polars_arrow::array::PrimitiveArray<i32>>()
                .unwrap();
            assert_eq!(
                day.iter().map(|d| d.copied()).collect::<Vec<_>>(),
                dates[at..at + rows]
            );
            at += rows;
        }
        assert_eq!(at, n);
        // Written plainly (as scratch files are): the same text, by views.
        let mut w = crate::parquet::RowGroupWriter::new(
            Vec::new(),
            df.schema(),
            300,
            crate::parquet::Compression::Lz4,
        )
        .unwrap();
        w.push(df.clone()).unwrap();
        let plain = ParquetFile::open(w.finish().unwrap().into()).unwrap();
        match plain.strings_of_group(1, "agency").unwrap() {
            Strings::Views(v) => assert_eq!(
                v.iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>(),
                agency[300..600]
            ),
            Strings::Dictionary(_) => panic!("a plain chunk decoded by dictionary"),
        }
        // As staging writes them: by dictionary.
        assert!(matches!(
            f.strings_of_group(0, "agency"),
            Ok(Strings::Dictionary(_))
        ));
        assert!(f.strings_of_group(0, "day").is_err());
        assert!(f.column_of_group(9, "day").is_err());
    }

    /// Bytes of a column chunk damaged anywhere: an error or (a damaged value) some array,
    /// never a panic.
    #[test]
    fn damaged_column_chunks_are_errors_not_panics() {
        let n = 500;
        let df = df!(
            "agency" => (0..n).map(|i| format!("agency-{}", i % 13)).collect::<Vec<_>>(),
            "day" => (0..n).map(|i: i32| (i % 5 != 0).then_some(i)).collect::<Vec<_>>(),
        )
        .unwrap();
        let bytes = ParquetEncoder {
            row_group_rows: 500,
        }
        .encode(df)
        .unwrap();
        let f = ParquetFile::open(bytes.clone().into()).unwrap();
        let group = &f.metadata.row_groups[0];
        let start = group.parquet_columns()[0].byte_range().start as usize;
        let end = group.parquet_columns()[1].byte_range().end as usize;
        let (mut errors, mut read) = (0, 0);
        for at in start..end {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                let Ok(f) = ParquetFile::open(b.into()) else {
                    continue;
                };
                match (f.strings_of_group(0, "agency"), f.column_of_group(0, "day")) {
                    (Ok(_), Ok(_)) => read += 1,
                    _ => errors += 1,
                }
            }
        }
        assert!(errors > 0 && read > 0, "{errors} errors, {read} read");
    }
}

//! One leaf of a nested column (`transfers.list.element.from_agency`) read flat: its
//! repetition and definition levels and its values, straight from the pages. Rebuilding the
//! nested arrow array instead cost polars-parquet about 400 instructions a row — a fifth of a
//! cold KPI count at a million cases — for a column where three cases in a hundred have a
//! value. Only plainly encoded values with RLE levels are read here (what staging writes);
//! anything else is `None`, for the caller to read the column through polars.

use std::io::Cursor;

use polars_parquet::parquet::compression::DecompressionContext;
use polars_parquet::parquet::encoding::hybrid_rle::HybridRleDecoder;
use polars_parquet::parquet::encoding::plain_byte_array::BinaryIter;
use polars_parquet::parquet::encoding::Encoding;
use polars_parquet::parquet::page::{split_buffer, DataPageHeader, Page};
use polars_parquet::parquet::read::{decompress, PageReader};
use polars_parquet::parquet::schema::types::PhysicalType;

use super::arrays::decompressed;
use super::ParquetFile;
use crate::error::{Error, Result};

/// A leaf's values: those of the entries defined at its deepest level, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum LeafValues {
    Strings(Vec<String>),
    Int32(Vec<i32>),
}

/// One leaf column chunk of a row group, flat.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    pub max_def: u32,
    pub max_rep: u32,
    /// Per entry: its repetition level (0 starts a row).
    pub rep: Vec<u32>,
    /// Per entry: its definition level; `max_def` has a value.
    pub def: Vec<u32>,
    pub values: LeafValues,
}

impl Leaf {
    fn len(&self) -> usize {
        match &self.values {
            LeafValues::Strings(v) => v.len(),
            LeafValues::Int32(v) => v.len(),
        }
    }
}

/// Bits a level of at most `max` takes (RLE hybrid's bit width).
fn bits(max: u32) -> u32 {
    u32::BITS - max.leading_zeros()
}

fn damaged(path: &str, rg: usize, what: &str) -> Error {
    Error::Internal(format!(
        "reading Parquet: the file is damaged (row group {rg}, column {path}: {what})"
    ))
}

impl ParquetFile {
    /// The leaf at `path` (`["transfers", "list", "element", "from_agency"]`) of row group
    /// `rg`, flat; `None` when the file has no such leaf or it is not of 32-bit integers or
    /// strings, plainly encoded with RLE levels (read it through polars then). A damaged
    /// chunk is an error.
    pub fn leaf_of_group(&self, rg: usize, path: &[&str]) -> Result<Option<Leaf>> {
        let Some(group) = self.metadata.row_groups.get(rg) else {
            return Ok(None);
        };
        let Some(chunk) = group.parquet_columns().iter().find(|c| {
            c.descriptor()
                .path_in_schema
                .iter()
                .map(|s| s.as_str())
                .eq(path.iter().copied())
        }) else {
            return Ok(None);
        };
        let name = path.join(".");
        let d = &chunk.descriptor().descriptor;
        let strings = match d.primitive_type.physical_type {
            PhysicalType::ByteArray => true,
            PhysicalType::Int32 => false,
            _ => return Ok(None),
        };
        let (Ok(max_def), Ok(max_rep)) = (
            u32::try_from(d.max_def_level),
            u32::try_from(d.max_rep_level),
        ) else {
            return Err(damaged(&name, rg, "negative levels"));
        };
        let buffer = self.buffer()?;
        let r = chunk.byte_range();
        let (start, end) = (r.start as usize, r.end as usize);
        if start > end || end > buffer.len() {
            return Err(damaged(&name, rg, "beyond the file's end"));
        }
        let rows = group.num_rows();
        let (meta, pages) = decompressed(chunk, buffer.sliced(start..end), rows)
            .map_err(|e| damaged(&name, rg, &e.to_string()))?;
        let reader = PageReader::new_with_page_meta(Cursor::new(pages), meta, vec![], usize::MAX);
        let mut leaf = Leaf {
            max_def,
            max_rep,
            rep: vec![],
            def: vec![],
            values: match strings {
                true => LeafValues::Strings(vec![]),
                false => LeafValues::Int32(vec![]),
            },
        };
        let mut context = DecompressionContext::Unset;
        for page in reader {
            let page = page.map_err(|e| damaged(&name, rg, &e.to_string()))?;
            let page = decompress(page, &mut vec![], &mut context)
                .map_err(|e| damaged(&name, rg, &e.to_string()))?;
            let Page::Data(page) = page else {
                // A dictionary: its values are not plainly encoded in the data pages.
                return Ok(None);
            };
            if page.encoding() != Encoding::Plain {
                return Ok(None);
            }
            if let DataPageHeader::V1(h) = page.header() {
                let rle = polars_parquet_format::Encoding::RLE;
                let levels_rle = (max_def == 0 || h.definition_level_encoding == rle)
                    && (max_rep == 0 || h.repetition_level_encoding == rle);
                if !levels_rle {
                    return Ok(None);
                }
            }
            let n = page.num_values();
            let split = split_buffer(&page).map_err(|e| damaged(&name, rg, &e.to_string()))?;
            let levels = |data: &[u8], max: u32| -> Result<Vec<u32>> {
                if max == 0 {
                    return Ok(vec![0; n]);
                }
                let l = HybridRleDecoder::new(data, bits(max), n)
                    .collect()
                    .map_err(|e| damaged(&name, rg, &e.to_string()))?;
                // The greatest level, without stopping early: a loop the compiler vectorises.
                if l.len() != n || l.iter().fold(0, |m, v| m.max(*v)) > max {
                    return Err(damaged(&name, rg, "levels out of range"));
                }
                Ok(l)
            };
            let (rep, def) = (levels(split.rep, max_rep)?, levels(split.def, max_def)?);
            let present = def.iter().filter(|d| **d == max_def).count();
            let short = || damaged(&name, rg, "fewer values than its levels say");
            match &mut leaf.values {
                LeafValues::Strings(v) => {
                    for s in BinaryIter::new(split.values, Some(present)).take(present) {
                        let s = s.map_err(|e| damaged(&name, rg, &e.to_string()))?;
                        v.push(String::from_utf8_lossy(s).into_owned());
                    }
                }
                LeafValues::Int32(v) => {
                    let bytes = split.values.get(..present * 4).ok_or_else(short)?;
                    v.extend(
                        bytes
                            .chunks_exact(4)
                            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                    );
                }
            }
            // The first page's levels are moved in (staging writes one page per chunk).
            for (all, more) in [(&mut leaf.rep, rep), (&mut leaf.def, def)] {
                if all.is_empty() {
                    *all = more;
                } else {
                    all.extend(more);
                }
            }
            let expected = leaf.def.iter().filter(|d| **d == max_def).count();
            if leaf.len() != expected {
                return Err(short());
            }
        }
        let starts = leaf.rep.iter().filter(|r| **r == 0).count();
        if starts != rows || leaf.rep.first().is_some_and(|r| *r != 0) {
            return Err(damaged(
                &name,
                rg,
                "its levels do not make its row group's rows",
            ));
        }
        Ok(Some(leaf))
    }
}

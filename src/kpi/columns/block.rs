//! A chunk's columns as [`Lanes`](crate::domain::lanes::Lanes) take them, [`LANES`] rows at
//! a time ([`Columns::block`]): the values as slices of the columns, and where each is
//! present or set as one word of bits per block, made once per chunk ([`words`], [`set`]).

use polars_arrow::array::BooleanArray;
use polars_arrow::bitmap::Bitmap;

use super::Columns;
use crate::domain::lanes::{Block, LANES};

/// The bits of `b` for `rows` rows, a word per [`LANES`] (all set when there is no bitmap).
pub(super) fn words(b: Option<&Bitmap>, rows: usize) -> Vec<u64> {
    let n = rows.div_ceil(LANES);
    let Some(b) = b else {
        return vec![u64::MAX; n];
    };
    let chunks = b.chunks::<u64>();
    let (last, partial) = (chunks.remainder(), chunks.remainder_len() > 0);
    let mut w: Vec<u64> = chunks.collect();
    if partial {
        w.push(last);
    }
    w.resize(n, 0);
    w
}

/// Where a flag is set: its value, where present.
pub(super) fn set(f: &BooleanArray, rows: usize) -> Vec<u64> {
    let values = words(Some(f.values()), rows);
    let valid = words(f.validity(), rows);
    values.iter().zip(valid).map(|(v, p)| v & p).collect()
}

impl<'a> Columns<'a> {
    /// The cases of rows `start..` (`start` a multiple of [`LANES`]), up to [`LANES`] of
    /// them, as [`Columns::case`] reads each; those of `live` to count. Of a chunk whose
    /// cases count in no period, none.
    pub(in crate::kpi) fn block(&self, start: usize, live: u64) -> Block<'_> {
        let w = start / LANES;
        let end = (start + LANES).min(self.agency.len());
        let word = |v: &[u64]| v.get(w).copied().unwrap_or(0);
        let rows = |v: &'a [i32]| v.get(start..end).unwrap_or(&[]);
        let supplements = self.supplements.values().get(start..end).unwrap_or(&[]);
        Block {
            ints: std::array::from_fn(|k| (rows(self.ints[k]), word(&self.present[k]))),
            supplements: (supplements, word(&self.present[7])),
            paid_online: word(&self.set[0]),
            digitized: word(&self.set[1]),
            live: if self.counted { live } else { 0 },
        }
    }
}

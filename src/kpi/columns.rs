//! The columns of a staging slice the counting reads ([`super::INPUT_COLUMNS`]), as arrow
//! arrays read a row at a time: decoded straight from a row group of a staging file
//! ([`Decoded::of_group`]) or borrowed from a frame ([`Decoded::of_frame`]), so nothing is
//! copied out of them.
//!
//! The string columns the count groups by are coded ([`Coded`]): a key per row into the
//! chunk's distinct values, and each value's id in the [`Partial`]. Staging writes them
//! dictionary-encoded, so their keys are the file's own and each distinct value's text is
//! looked up once per row group; other strings are keyed by their views.

use polars::prelude::*;
use polars_arrow::array::{Array, BooleanArray, PrimitiveArray, Utf8ViewArray};
use polars_arrow::datatypes::ArrowDataType;

use super::partial::{Partial, ABSENT};
use crate::domain::agency::Transfer;
use crate::domain::rules::Case;
use crate::error::{Error, Result};
use crate::parquet::{ParquetFile, Strings};

mod block;
use block::{set, words};

/// The string columns the count reads, in [`Decoded::strings`]' order.
pub(super) const STRING_COLUMNS: [&str; 5] = [
    "agency_code",
    "field_code",
    "procedure_code",
    "agency_name_text",
    "field_name",
];
/// Status, channel, then the dates of [`Case`] in its order: 32-bit columns.
const INT_COLUMNS: [&str; 7] = [
    "status",
    "channel",
    "submitted_date",
    "accepted_date",
    "refused_date",
    "end_date",
    "due_date",
];
const FLAG_COLUMNS: [&str; 2] = ["paid_online", "digitized"];

/// Of a row group that counts in no period (`scan`), what is read: who holds each case.
const HOLDER_STRINGS: [usize; 4] = [0, 1, 3, 4];

/// One chunk of staging rows (a row group, or a frame's chunk) as the count reads it.
pub(super) struct Decoded {
    rows: usize,
    /// Whether its columns but who holds each case were read (else they are null: the
    /// cases count in no period).
    counted: bool,
    strings: [Strings; 5],
    ints: [PrimitiveArray<i32>; 7],
    supplements: PrimitiveArray<i64>,
    flags: [BooleanArray; 2],
    /// The rows handed over at least once, in row order, with their hand-overs.
    pub moved: Vec<(usize, Vec<Transfer>)>,
}

fn downcast<A: Clone + 'static>(a: &dyn Array, name: &str) -> Result<A> {
    a.as_any().downcast_ref::<A>().cloned().ok_or_else(|| {
        Error::Internal(format!(
            "the staging column {name} is of type {:?}, not the staging schema's",
            a.dtype()
        ))
    })
}

impl Decoded {
    pub(super) fn rows(&self) -> usize {
        self.rows
    }

    /// Whether its cases may count in a period (else only who holds them was read).
    pub(super) fn counted(&self) -> bool {
        self.counted
    }

    /// Row group `rg` of staging file `f`. Of a row group that counts in no period
    /// (`!counted`) only who holds each case is decoded, the other columns empty: read as
    /// cases of which nothing is known ([`Columns::case`]), the same count
    /// (`rules::COUNTING_DATES`). Hand-overs
    /// are decoded only when `handed_over` and the file has them.
    pub(super) fn of_group(
        f: &ParquetFile,
        rg: usize,
        counted: bool,
        handed_over: bool,
    ) -> Result<Decoded> {
        let rows = f.row_group_rows().get(rg).copied().unwrap_or(0);
        // Columns not read are empty, never null arrays of `rows`: polars makes those from a
        // shared zeroed region that it writes, 8 MiB, when first asked.
        let mut strings: [Strings; 5] = std::array::from_fn(|_| {
            Strings::Views(Utf8ViewArray::new_empty(ArrowDataType::Utf8View))
        });
        for (k, name) in STRING_COLUMNS.iter().enumerate() {
            if counted || HOLDER_STRINGS.contains(&k) {
                strings[k] = f.strings_of_group(rg, name)?;
            }
        }
        let column = |name: &str| f.column_of_group(rg, name);
        let (ints, supplements, flags) = if counted {
            let mut ints = vec![];
            for name in INT_COLUMNS {
                ints.push(downcast::<PrimitiveArray<i32>>(
                    column(name)?.as_ref(),
                    name,
                )?);
            }
            let s = "supplement_requests";
            let supplements = downcast::<PrimitiveArray<i64>>(column(s)?.as_ref(), s)?;
            let mut flags = vec![];
            for name in FLAG_COLUMNS {
                flags.push(downcast::<BooleanArray>(column(name)?.as_ref(), name)?);
            }
            (ints, supplements, flags)
        } else {
            (
                vec![PrimitiveArray::new_empty(ArrowDataType::Int32); 7],
                PrimitiveArray::new_empty(ArrowDataType::Int64),
                vec![BooleanArray::new_empty(ArrowDataType::Boolean); 2],
            )
        };
        let moved = match handed_over && f.columns().iter().any(|c| c == "transfers") {
            true => match super::attribution::moved_rows_of_group(f, rg)? {
                Some(moved) => moved,
                None => {
                    let lists = f.column_of_group(rg, "transfers")?;
                    let s = Series::try_from((PlSmallStr::from("transfers"), lists))?;
                    super::attribution::moved_rows(&DataFrame::new(rows, vec![s.into()])?)?
                }
            },
            false => vec![],
        };
        Ok(Decoded {
            rows,
            counted,
            strings,
            ints: fixed(ints)?,
            supplements,
            flags: fixed(flags)?,
            moved,
        })
    }

    /// Each chunk of the staging rows `df` (at least [`super::INPUT_COLUMNS`], `transfers`
    /// aside), borrowed.
    pub(super) fn of_frame(df: &DataFrame) -> Result<Vec<Decoded>> {
        let mut df = df.clone();
        let mut out = vec![];
        for chunk in df.split_chunks() {
            let first = |name: &str| -> Result<Box<dyn Array>> {
                let s = chunk.column(name)?.as_materialized_series().rechunk();
                let s = s.to_physical_repr();
                s.chunks()
                    .first()
                    .cloned()
                    .ok_or_else(|| Error::Internal(format!("the column {name} has no values")))
            };
            let mut strings = vec![];
            for name in STRING_COLUMNS {
                strings.push(Strings::Views(downcast(first(name)?.as_ref(), name)?));
            }
            let mut ints = vec![];
            for name in INT_COLUMNS {
                ints.push(downcast(first(name)?.as_ref(), name)?);
            }
            let s = "supplement_requests";
            let supplements = downcast(first(s)?.as_ref(), s)?;
            let mut flags = vec![];
            for name in FLAG_COLUMNS {
                flags.push(downcast(first(name)?.as_ref(), name)?);
            }
            let moved = match chunk.column("transfers") {
                Ok(_) => super::attribution::moved_rows(&chunk)?,
                Err(_) => vec![],
            };
            out.push(Decoded {
                rows: chunk.height(),
                counted: true,
                strings: fixed(strings)?,
                ints: fixed(ints)?,
                supplements,
                flags: fixed(flags)?,
                moved,
            });
        }
        Ok(out)
    }
}

fn fixed<T, const N: usize>(v: Vec<T>) -> Result<[T; N]> {
    v.try_into()
        .map_err(|_| Error::Internal("a staging chunk lost a column".into()))
}

/// A string column of a chunk as a key per row into its distinct values (0: null), and
/// each key's id in a [`Partial`] ([`ABSENT`] for null), interned when first asked for.
pub(super) struct Coded<'a> {
    /// The distinct values' texts: the dictionary, or the column itself.
    values: &'a Utf8ViewArray,
    keys: Vec<u32>,
    /// Per key (0 aside): where in `values` its text is.
    at: Vec<u32>,
    /// Per key: its id, or [`UNSET`] until interned.
    ids: Vec<u32>,
}

/// The id of a key not interned yet.
const UNSET: u32 = u32::MAX - 1;

impl<'a> Coded<'a> {
    /// Codes `strings`; nothing is interned yet.
    pub(super) fn of(strings: &'a Strings) -> Result<Coded<'a>> {
        match strings {
            Strings::Dictionary(d) => {
                let values: &Utf8ViewArray = d
                    .values()
                    .as_any()
                    .downcast_ref()
                    .ok_or_else(|| Error::Internal("a dictionary not of strings".into()))?;
                let n = values.len() as u32;
                let k = d.keys();
                // A key beyond the dictionary (a damaged file) is marked, and refused below.
                let key = |k: u32| if k < n { k + 1 } else { u32::MAX };
                let keys: Vec<u32> = match k.validity() {
                    None => k.values().iter().map(|k| key(*k)).collect(),
                    Some(v) => k
                        .values()
                        .iter()
                        .zip(v.iter())
                        .map(|(k, valid)| if valid { key(*k) } else { 0 })
                        .collect(),
                };
                if keys.contains(&u32::MAX) {
                    return Err(Error::Internal(
                        "a dictionary-encoded column with a key beyond its dictionary".into(),
                    ));
                }
                let at = std::iter::once(0).chain(0..n).collect();
                Ok(Coded::new(values, keys, at))
            }
            Strings::Views(v) => {
                // Equal views in one array are equal strings (the same inline bytes, or the
                // same bytes of the same buffer): each distinct one is hashed once.
                let mut seen: PlHashMap<u128, u32> = PlHashMap::default();
                let mut last: Option<(u128, u32)> = None;
                let mut keys = Vec::with_capacity(v.len());
                let mut at = vec![0];
                for row in 0..v.len() {
                    if !v.is_valid(row) {
                        keys.push(0);
                        continue;
                    }
                    let view = v.views()[row].as_u128();
                    let key = match last {
                        Some((l, k)) if l == view => k,
                        _ => *seen.entry(view).or_insert_with(|| {
                            at.push(row as u32);
                            at.len() as u32 - 1
                        }),
                    };
                    last = Some((view, key));
                    keys.push(key);
                }
                Ok(Coded::new(v, keys, at))
            }
        }
    }

    fn new(values: &'a Utf8ViewArray, keys: Vec<u32>, at: Vec<u32>) -> Coded<'a> {
        let mut ids = vec![UNSET; at.len()];
        ids[0] = ABSENT;
        Coded {
            values,
            keys,
            at,
            ids,
        }
    }

    /// Every key interned in `partial`.
    pub(super) fn interned(mut self, partial: &mut Partial) -> Coded<'a> {
        for k in 1..self.ids.len() {
            self.ids[k] = partial.id(Some(self.values.value(self.at[k] as usize)));
        }
        self
    }

    /// Rows coded.
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// Distinct keys (null one of them).
    pub(super) fn distinct(&self) -> usize {
        self.ids.len()
    }

    /// The key of row `row`.
    #[inline]
    pub(super) fn key(&self, row: usize) -> u32 {
        self.keys[row]
    }

    /// The id of key `key`, interned ([`Coded::interned`]).
    #[inline]
    pub(super) fn id_of(&self, key: u32) -> u32 {
        self.ids[key as usize]
    }

    /// The id of row `row`, interned ([`Coded::interned`]).
    #[inline]
    pub(super) fn id(&self, row: usize) -> u32 {
        self.id_of(self.key(row))
    }

    /// The id of row `row`, interned in `partial` now if it was not.
    /// A row beyond those coded (a column not read: `Decoded::counted`) is [`ABSENT`].
    pub(super) fn id_in(&mut self, row: usize, partial: &mut Partial) -> u32 {
        let Some(k) = self.keys.get(row).map(|k| *k as usize) else {
            return ABSENT;
        };
        if self.ids[k] == UNSET {
            self.ids[k] = partial.id(Some(self.values.value(self.at[k] as usize)));
        }
        self.ids[k]
    }
}

/// The columns of a chunk as the count reads them: strings coded, the rest borrowed.
pub(in crate::kpi) struct Columns<'a> {
    pub agency: Coded<'a>,
    pub field: Coded<'a>,
    /// Interned as used (few procedures of a chunk are counted as received).
    pub procedure: Coded<'a>,
    pub agency_name: Coded<'a>,
    pub field_name: Coded<'a>,
    /// Whether the cases may count in a period (else only who holds them was read).
    counted: bool,
    ints: [&'a [i32]; 7],
    valid: [Option<&'a polars_arrow::bitmap::Bitmap>; 7],
    supplements: &'a PrimitiveArray<i64>,
    paid: &'a BooleanArray,
    digitized: &'a BooleanArray,
    /// Per [`LANES`] rows, a word of bits: where each of `ints` then the supplement requests
    /// is present, and where each flag is set (of a chunk counted).
    present: [Vec<u64>; 8],
    set: [Vec<u64>; 2],
}

impl<'a> Columns<'a> {
    /// The columns of `d`, its strings but procedures interned in `partial`.
    pub(super) fn of(d: &'a Decoded, partial: &mut Partial) -> Result<Columns<'a>> {
        let [a, f, p, an, fnm] = &d.strings;
        let unequal = || Error::Internal("staging columns of unequal length".into());
        // Every column read by row index below has a value for every row (a damaged chunk
        // may decode to fewer).
        let short = d.ints.iter().any(|i| i.len() != d.rows)
            || d.supplements.len() != d.rows
            || d.flags.iter().any(|f| f.len() != d.rows);
        if d.counted && short {
            return Err(unequal());
        }
        let cols = Columns {
            agency: Coded::of(a)?.interned(partial),
            field: Coded::of(f)?.interned(partial),
            procedure: Coded::of(p)?,
            agency_name: Coded::of(an)?.interned(partial),
            field_name: Coded::of(fnm)?.interned(partial),
            counted: d.counted,
            ints: std::array::from_fn(|k| d.ints[k].values().as_slice()),
            valid: std::array::from_fn(|k| d.ints[k].validity()),
            supplements: &d.supplements,
            paid: &d.flags[0],
            digitized: &d.flags[1],
            present: std::array::from_fn(|k| match (k, d.counted) {
                (_, false) => vec![],
                (7, true) => words(d.supplements.validity(), d.rows),
                (k, true) => words(d.ints[k].validity(), d.rows),
            }),
            set: match d.counted {
                true => [set(&d.flags[0], d.rows), set(&d.flags[1], d.rows)],
                false => [vec![], vec![]],
            },
        };
        let coded = [
            &cols.agency,
            &cols.field,
            &cols.agency_name,
            &cols.field_name,
        ];
        let procedures = cols.procedure.len() == d.rows || !d.counted;
        if coded.iter().any(|c| c.len() != d.rows) || !procedures {
            return Err(unequal());
        }
        Ok(cols)
    }

    #[inline]
    fn int(&self, k: usize, i: usize) -> Option<i32> {
        match self.valid[k] {
            Some(v) if !v.get_bit(i) => None,
            _ => Some(self.ints[k][i]),
        }
    }

    /// The case of row `i`: of a chunk whose cases count in no period, one of which nothing
    /// is known.
    pub(in crate::kpi) fn case(&self, i: usize) -> Case {
        if !self.counted {
            return Case::default();
        }
        Case {
            status: self.int(0, i),
            channel: self.int(1, i),
            sub: self.int(2, i),
            acc: self.int(3, i),
            refd: self.int(4, i),
            end: self.int(5, i),
            due: self.int(6, i),
            supplement_requests: self.supplements.get(i),
            paid_online: self.paid.get(i),
            digitized: self.digitized.get(i),
        }
    }
}

#[cfg(test)]
mod tests;

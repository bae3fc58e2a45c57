//! Attribution (`agencies.md`, "KPIs: one agency per case per period"): the agency catalog as
//! the KPIs need it — each agency's validity beside the cases — and, for the few cases handed
//! over between agencies, the agency each counts under in a period.

use chrono::NaiveDate;
use polars::prelude::*;

use crate::domain::agency::{agency_on, Catalog, Transfer};
use crate::domain::rules::days;
use crate::error::Result;

/// The agency catalog of a run, as the KPIs need it.
#[derive(Default)]
pub struct Agencies {
    pub catalog: Catalog,
}

impl Agencies {
    pub fn new(catalog: Catalog) -> Result<Agencies> {
        Ok(Agencies { catalog })
    }
}

/// Each agency's validity as days since 1970, looked up once per code.
pub struct ValidityCache<'c> {
    catalog: &'c Catalog,
    /// Per agency, by its id in the counting: its validity as days, once looked up.
    seen: Vec<Option<(Option<i32>, Option<i32>)>>,
}

impl<'c> ValidityCache<'c> {
    pub fn new(agencies: &'c Agencies) -> Self {
        ValidityCache {
            catalog: &agencies.catalog,
            seen: Vec::new(),
        }
    }

    /// Whether `agency`, of id `id` in the counting (each id one code), exists on `day` (an
    /// agency the catalog does not know, or knows without dates, always does).
    pub fn valid(&mut self, id: u32, agency: &str, day: i32) -> bool {
        let at = id as usize;
        if self.seen.len() <= at {
            self.seen.resize(at + 1, None);
        }
        let (from, to) = match self.seen[at] {
            Some(v) => v,
            None => {
                let v = self.catalog.get(agency).map_or((None, None), |a| {
                    (a.valid_from.map(days), a.valid_to.map(days))
                });
                self.seen[at] = Some(v);
                v
            }
        };
        from.is_none_or(|f| f <= day) && to.is_none_or(|t| day < t)
    }
}

/// The date of a polars `Date` (days since 1970-01-01).
fn day(days: i32) -> Option<NaiveDate> {
    NaiveDate::default().checked_add_signed(chrono::Duration::days(days as i64))
}

/// Rows handed over at least once, in row order, each with its hand-overs.
pub type Moved = Vec<(usize, Vec<Transfer>)>;

/// The rows of `cases` handed over at least once, in row order, with their hand-overs.
pub fn moved_rows(cases: &DataFrame) -> Result<Moved> {
    let lists = cases.column("transfers")?.list()?;
    let mut out = vec![];
    let mut row = 0;
    for arr in lists.downcast_iter() {
        let offsets = arr.offsets();
        if offsets.first() != offsets.last() {
            // The hand-overs of the chunk's rows, field by field, once; each row's are a run.
            let items = Series::try_from((PlSmallStr::from("transfers"), arr.values().clone()))?;
            let Some(fields) = Fields::of(&items)? else {
                row += arr.len();
                continue;
            };
            for (i, w) in offsets.buffer().windows(2).enumerate() {
                let (from, to) = (w[0] as usize, w[1] as usize);
                if to > from && arr.validity().is_none_or(|v| v.get_bit(i)) {
                    out.push((row + i, (from..to).filter_map(|k| fields.get(k)).collect()));
                }
            }
        }
        row += arr.len();
    }
    Ok(out)
}

/// The rows of row group `rg` of staging file `f` handed over at least once, in row order,
/// with their hand-overs — as [`moved_rows`] finds them in the decoded column — read from the
/// leaves of `transfers` flat (`parquet::leaves`); `None` when the leaves are not as staging
/// writes them (read the column whole then).
pub fn moved_rows_of_group(f: &crate::parquet::ParquetFile, rg: usize) -> Result<Option<Moved>> {
    use crate::parquet::LeafValues as V;
    let leaf = |name: &str| f.leaf_of_group(rg, &["transfers", "list", "element", name]);
    let (Some(from), Some(to), Some(on)) = (
        leaf("from_agency")?,
        leaf("to_agency")?,
        leaf("transferred_on")?,
    ) else {
        return Ok(None);
    };
    let typed = matches!(
        (&from.values, &to.values, &on.values),
        (V::Strings(_), V::Strings(_), V::Int32(_))
    );
    let shaped = |l: &crate::parquet::Leaf| l.max_def == 4 && l.max_rep == 1;
    if !(typed && shaped(&from) && shaped(&to) && shaped(&on)) {
        return Ok(None);
    }
    // The three leaves describe the same lists and elements (compared whole, without
    // stopping early, so that the compiler vectorises it).
    let same = |l: &crate::parquet::Leaf| {
        l.rep == from.rep
            && l.def.len() == from.def.len()
            && l.def
                .iter()
                .zip(&from.def)
                .fold(true, |ok, (a, b)| ok & ((*a).min(3) == (*b).min(3)))
    };
    if !(same(&to) && same(&on)) {
        return Err(crate::error::Error::Internal(
            "reading Parquet: the file is damaged (the leaves of transfers disagree)".into(),
        ));
    }
    let (from_def, to_def, on_def, rep) = (from.def, to.def, on.def, from.rep);
    let (V::Strings(from_v), V::Strings(to_v), V::Int32(on_v)) =
        (from.values, to.values, on.values)
    else {
        return Ok(None);
    };
    let (mut from_v, mut to_v) = (from_v.into_iter(), to_v.into_iter());
    let mut on_v = on_v.into_iter();
    // Levels as staging's schema makes them: 0 a null list, 1 an empty one, 2 a null element,
    // 3 an element with this leaf null, 4 a value; a row starts at repetition 0. Only the
    // elements (2 and over) are visited; the rows between are counted by their starts.
    let mut out: Moved = vec![];
    let (mut row, mut counted_to) = (0usize, 0usize);
    let elements = from_def.iter().enumerate().filter(|(_, d)| **d >= 2);
    for (k, df) in elements {
        // Rows started after the first entry, up to and with this one.
        let starts = rep[counted_to.max(1)..=k]
            .iter()
            .filter(|r| **r == 0)
            .count();
        row += starts;
        counted_to = k + 1;
        let (dt, dn) = (to_def[k], on_def[k]);
        let f_v = (*df == 4).then(|| from_v.next()).flatten();
        let t_v = (dt == 4).then(|| to_v.next()).flatten();
        let o_v = (dn == 4).then(|| on_v.next()).flatten();
        if out.last().is_none_or(|(r, _)| *r != row) {
            out.push((row, vec![]));
        }
        if let (Some(from), Some(on)) = (f_v, o_v.and_then(day)) {
            if let Some((_, t)) = out.last_mut() {
                t.push(Transfer { from, to: t_v, on });
            }
        }
    }
    Ok(Some(out))
}

/// The agency of a case held by `now` with `transfers`, on `on` (days since 1970).
pub fn agency_on_day<'a>(now: &'a str, transfers: &'a [Transfer], on: i32) -> &'a str {
    match day(on) {
        Some(d) => agency_on(now, transfers, d),
        None => now,
    }
}

/// The fields of a run of staged hand-overs.
struct Fields {
    from: StringChunked,
    to: Option<StringChunked>,
    /// Days since 1970.
    on: Int32Chunked,
}

impl Fields {
    /// `None` when the hand-overs lack their giving agency or date (none to follow).
    fn of(items: &Series) -> Result<Option<Fields>> {
        let fields = items.struct_()?.fields_as_series();
        let field = |name: &str| fields.iter().find(|f| f.name().as_str() == name).cloned();
        let (Some(from), Some(on)) = (field("from_agency"), field("transferred_on")) else {
            return Ok(None);
        };
        // The list hands its struct fields over physical or as dates.
        let on = on.cast(&DataType::Int32)?.i32()?.rechunk().into_owned();
        let to = field("to_agency")
            .map(|t| t.str().map(|t| t.rechunk().into_owned()))
            .transpose()?;
        Ok(Some(Fields {
            from: from.str()?.rechunk().into_owned(),
            to,
            on,
        }))
    }

    /// Hand-over `k`, when it has its giving agency and a date.
    fn get(&self, k: usize) -> Option<Transfer> {
        Some(Transfer {
            from: self.from.get(k)?.to_string(),
            to: self.to.as_ref().and_then(|t| t.get(k)).map(str::to_string),
            on: day(self.on.get(k)?)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::schema::{transfers_column, StagedTransfer};

    fn staged(from: &str, to: Option<&str>, day: &str) -> StagedTransfer {
        let d: NaiveDate = day.parse().unwrap();
        let at = d.and_hms_opt(3, 0, 0).unwrap().and_utc().timestamp_micros();
        StagedTransfer {
            from: from.into(),
            to: to.map(str::to_string),
            at,
        }
    }

    fn transfer(from: &str, to: Option<&str>, day: &str) -> Transfer {
        Transfer {
            from: from.into(),
            to: to.map(str::to_string),
            on: day.parse().unwrap(),
        }
    }

    /// Read flat from the leaves of each row group of a staging file, the rows handed over and
    /// their hand-overs are those found in the column decoded whole: rows moved once, twice,
    /// never, a null list, hand-overs with and without a receiving agency, row groups with
    /// none.
    #[test]
    fn moved_rows_read_from_the_leaves_are_those_of_the_decoded_column() {
        let n = 2_000;
        let mut all = vec![];
        let counts: Vec<u32> = (0..n)
            .map(|k| match k % 37 {
                0 if k < 1_500 => 2,
                5 | 11 if k < 1_500 => 1,
                _ => 0,
            })
            .collect();
        for (k, c) in counts.iter().enumerate() {
            for j in 0..*c {
                let to = (k % 3 != 0).then_some("B");
                let day = ["2024-03-01", "2024-08-20", "2025-07-01"][(k + j as usize) % 3];
                all.push(staged(&format!("A{}", k % 7), to, day));
            }
        }
        let mut df = DataFrame::new(n, vec![transfers_column(&all, &counts).unwrap()]).unwrap();
        // A null list in the middle, as no staging writes but a reader must bear.
        let dtype = df.column("transfers").unwrap().dtype().clone();
        let null = Series::full_null("transfers".into(), 1, &dtype).into_column();
        let mut with_null = df.slice(0, 400);
        with_null
            .vstack_mut(&DataFrame::new(1, vec![null]).unwrap())
            .unwrap();
        with_null.vstack_mut(&df.slice(400, n)).unwrap();
        df = with_null;
        df.rechunk_mut();
        let enc = crate::parquet::ParquetEncoder {
            row_group_rows: 300,
        };
        let f = crate::parquet::ParquetFile::open(enc.encode(df).unwrap().into()).unwrap();
        let groups = f.row_group_rows();
        assert_eq!(groups.len(), 7);
        let mut moved = 0;
        for (rg, rows) in groups.iter().enumerate() {
            let lists = f.column_of_group(rg, "transfers").unwrap();
            let s = Series::try_from((PlSmallStr::from("transfers"), lists)).unwrap();
            let whole = moved_rows(&DataFrame::new(*rows, vec![s.into()]).unwrap()).unwrap();
            let flat = moved_rows_of_group(&f, rg).unwrap();
            assert_eq!(flat.as_ref(), Some(&whole), "row group {rg}");
            moved += whole.len();
        }
        assert_eq!(moved, counts.iter().filter(|c| **c > 0).count());
    }

    #[test]
    fn moved_rows_are_found_in_every_chunk_with_their_hand_overs() {
        let frame = |all: &[StagedTransfer], counts: &[u32]| {
            DataFrame::new(counts.len(), vec![transfers_column(all, counts).unwrap()]).unwrap()
        };
        // Three chunks: rows 0–2 (row 1 moved twice), row 3 (not moved), rows 4–5 (row 5 moved;
        // row 4 a null list, as no staging writes but a reader must bear).
        let mut df = frame(
            &[
                staged("A", Some("B"), "2024-03-01"),
                staged("B", None, "2024-08-20"),
            ],
            &[0, 2, 0],
        );
        df.vstack_mut(&frame(&[], &[0])).unwrap();
        let moved = frame(&[staged("C", Some("D"), "2025-07-01")], &[1]);
        let dtype = moved.column("transfers").unwrap().dtype().clone();
        let null = Series::full_null("transfers".into(), 1, &dtype).into_column();
        let mut last = DataFrame::new(1, vec![null]).unwrap();
        last.vstack_mut(&moved).unwrap();
        last.rechunk_mut();
        df.vstack_mut(&last).unwrap();
        assert!(df.first_col_n_chunks() >= 3);
        assert_eq!(df.height(), 6);

        let moved = moved_rows(&df).unwrap();
        assert_eq!(
            moved,
            vec![
                (
                    1,
                    vec![
                        transfer("A", Some("B"), "2024-03-01"),
                        transfer("B", None, "2024-08-20"),
                    ]
                ),
                (5, vec![transfer("C", Some("D"), "2025-07-01")]),
            ]
        );
    }
}

//! The columns of a staging slice the counting reads ([`super::INPUT_COLUMNS`]), read in place:
//! each column in one chunk (a row group, as read), borrowed as its array and read a row at a
//! time, so nothing is copied out of the decoded slice.

use polars::prelude::*;

use super::partial::{Partial, ABSENT};
use crate::domain::rules::Case;
use crate::error::Result;

/// The columns of a slice the counting reads, each in one chunk (a slice is a row group, so
/// they mostly are already): [`Columns`] reads them row by row from there.
pub(super) struct Chunks<'a> {
    strings: [std::borrow::Cow<'a, StringChunked>; 5],
    ints: [std::borrow::Cow<'a, Int32Chunked>; 7],
    supplements: std::borrow::Cow<'a, Int64Chunked>,
    flags: [std::borrow::Cow<'a, BooleanChunked>; 2],
}

impl<'a> Chunks<'a> {
    pub(super) fn of(df: &'a DataFrame) -> Result<Chunks<'a>> {
        let string = |name: &str| -> Result<_> { Ok(df.column(name)?.str()?.rechunk()) };
        let date = |name: &str| -> Result<_> { Ok(df.column(name)?.date()?.physical().rechunk()) };
        let int = |name: &str| -> Result<_> { Ok(df.column(name)?.i32()?.rechunk()) };
        let flag = |name: &str| -> Result<_> { Ok(df.column(name)?.bool()?.rechunk()) };
        Ok(Chunks {
            strings: [
                string("agency_code")?,
                string("field_code")?,
                string("procedure_code")?,
                string("agency_name_text")?,
                string("field_name")?,
            ],
            ints: [
                int("status")?,
                int("channel")?,
                date("submitted_date")?,
                date("accepted_date")?,
                date("refused_date")?,
                date("end_date")?,
                date("due_date")?,
            ],
            supplements: df.column("supplement_requests")?.i64()?.rechunk(),
            flags: [flag("paid_online")?, flag("digitized")?],
        })
    }
}

/// The columns read of a row group that counts in no period: who holds each case.
pub(super) const HOLDER_COLUMNS: [&str; 5] = [
    "agency_code",
    "agency_name_text",
    "field_code",
    "field_name",
    "transfers",
];

/// Adds to a slice read with only who holds its cases (`scan`: cases that count in no
/// period) the other columns the count reads, all null, of their staging types: counted as
/// cases of which nothing is known (`rules::COUNTING_DATES`).
pub(super) fn fill_uncounted(df: &mut DataFrame) -> Result<()> {
    let rows = df.height();
    for (name, dtype) in crate::stage::schema::staging_schema() {
        if super::INPUT_COLUMNS.contains(&name) && name != "transfers" && df.column(name).is_err() {
            df.with_column(Column::full_null(name.into(), rows, &dtype))?;
        }
    }
    Ok(())
}

/// The one array of a column in one chunk.
fn array<T: PolarsDataType>(ca: &ChunkedArray<T>) -> Result<&T::Array> {
    ca.downcast_iter().next().ok_or_else(|| {
        crate::error::Error::Internal(format!("the column {} has no values", ca.name()))
    })
}

type Strings = <StringType as PolarsDataType>::Array;
type Ints = <Int32Type as PolarsDataType>::Array;
type Longs = <Int64Type as PolarsDataType>::Array;
type Flags = <BooleanType as PolarsDataType>::Array;

/// The columns of a slice the counting reads, borrowed as arrays and read a row at a time:
/// nothing is copied out of the decoded slice (copying each column into vectors faulted in
/// four gigabytes over a count of ten million cases).
pub(super) struct Columns<'a> {
    pub agency: &'a Strings,
    pub field: &'a Strings,
    pub procedure: &'a Strings,
    pub agency_name: &'a Strings,
    pub field_name: &'a Strings,
    /// status, channel, then the dates of [`Case`] in its order.
    ints: [&'a Ints; 7],
    supplements: &'a Longs,
    paid: &'a Flags,
    digitized: &'a Flags,
}

impl<'a> Columns<'a> {
    pub(super) fn of(c: &'a Chunks<'a>) -> Result<Columns<'a>> {
        let [a, f, p, an, fnm] = &c.strings;
        let i = &c.ints;
        Ok(Columns {
            agency: array(a)?,
            field: array(f)?,
            procedure: array(p)?,
            agency_name: array(an)?,
            field_name: array(fnm)?,
            ints: [
                array(&i[0])?,
                array(&i[1])?,
                array(&i[2])?,
                array(&i[3])?,
                array(&i[4])?,
                array(&i[5])?,
                array(&i[6])?,
            ],
            supplements: array(&c.supplements)?,
            paid: array(&c.flags[0])?,
            digitized: array(&c.flags[1])?,
        })
    }

    /// The case of row `i`.
    pub(super) fn case(&self, i: usize) -> Case {
        let [status, channel, sub, acc, refd, end, due] = self.ints.map(|a| a.get(i));
        Case {
            status,
            channel,
            sub,
            acc,
            refd,
            end,
            due,
            supplement_requests: self.supplements.get(i),
            paid_online: self.paid.get(i),
            digitized: self.digitized.get(i),
        }
    }
}

/// The ids of one string column's values within one chunk, remembered by their views: equal
/// views in one array are equal strings (the same inline bytes, or the same bytes of the same
/// buffer), and a dictionary-encoded column decodes each value of its dictionary to one view,
/// so a chunk hashes each distinct value's text once, not each row's.
#[derive(Default)]
pub(super) struct Interned {
    last: Option<(u128, u32)>,
    seen: PlHashMap<u128, u32>,
}

impl Interned {
    /// The id, in `partial`, of row `row` of `strings` ([`ABSENT`] when null).
    pub(super) fn id(
        &mut self,
        strings: &<StringType as PolarsDataType>::Array,
        row: usize,
        partial: &mut Partial,
    ) -> u32 {
        let Some(text) = strings.get(row) else {
            return ABSENT;
        };
        let view = strings.views()[row].as_u128();
        if let Some((v, id)) = self.last {
            if v == view {
                return id;
            }
        }
        let id = match self.seen.get(&view) {
            Some(id) => *id,
            None => {
                let id = partial.id(Some(text));
                self.seen.insert(view, id);
                id
            }
        };
        self.last = Some((view, id));
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::period::Period;
    use crate::domain::period::{Convention, PeriodId};
    use crate::kpi::attribution::Agencies;
    use crate::kpi::partial::partial;
    use crate::normalise::{Normaliser, PiiKey};

    /// The cases of a small demo province, normalised as staging holds them.
    fn demo_cases() -> DataFrame {
        let d = crate::demo::generator::generate(7, 0.03);
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
        n.add_records("raw/x", &d.cases);
        n.finish().unwrap().cases
    }

    #[test]
    fn cases_in_many_chunks_count_as_in_one() {
        let cases = demo_cases();
        let periods: Vec<Period> = ["2024-Q3", "2024-07", "2024"]
            .map(|p| p.parse::<PeriodId>().unwrap().resolve(Convention::Decree09))
            .to_vec();
        let agencies = Agencies::default();
        let counted = |df: &DataFrame| {
            let t = partial(df, &periods, &agencies)
                .unwrap()
                .total(&periods)
                .unwrap();
            let (c, u) = t.frames();
            (c.clone(), u.clone())
        };
        let mut one = cases.clone();
        one.rechunk_mut();
        // Three chunks of unequal length, as a slice of three row groups is read.
        let h = cases.height();
        let mut three = cases.slice(0, h / 5);
        three
            .vstack_mut(&cases.slice((h / 5) as i64, h / 2))
            .unwrap();
        three
            .vstack_mut(&cases.slice((h / 5 + h / 2) as i64, h))
            .unwrap();
        assert_eq!(three.first_col_n_chunks(), 3);
        // Columns chunked differently from each other.
        let mut mixed = three.clone();
        let status = mixed.column("status").unwrap().rechunk();
        mixed.with_column(status).unwrap();

        let (counts, used) = counted(&one);
        let received: i64 = counts
            .column("received_new#0")
            .unwrap()
            .i64()
            .unwrap()
            .sum()
            .unwrap();
        assert!(received > 100, "the demo quarter has cases: {received}");
        for df in [&three, &mixed] {
            let (c, u) = counted(df);
            assert!(c.equals_missing(&counts), "{c}\n{counts}");
            assert!(u.equals_missing(&used));
        }
    }
}

//! The typed column builder: one vector per staging column, filled record by record, then
//! handed over as a frame in the order of [`crate::stage::schema::staging_schema`].

use std::borrow::Cow;

use chrono::NaiveDate;
use polars::prelude::*;
use polars_arrow::array::MutableBinaryViewArray;

use super::pii::ApplicantKey;
use crate::error::{Doing, Result};
use crate::parquet::utc_micros;
pub use crate::stage::schema::{transfers_column, StagedTransfer};

/// One valid record, normalised: the values of one staging row. Its text is borrowed from
/// the response body where it needed no change.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CaseRow<'a> {
    pub case_id: Option<Cow<'a, str>>,
    pub agency_code: Option<Cow<'a, str>>,
    pub agency_name_text: Option<Cow<'a, str>>,
    pub procedure_code: Option<Cow<'a, str>>,
    pub procedure_name: Option<Cow<'a, str>>,
    pub field_code: Option<Cow<'a, str>>,
    pub field_name: Option<Cow<'a, str>>,
    pub channel: Option<i32>,
    pub applicant_kind: Option<i32>,
    pub applicant_key: Option<ApplicantKey>,
    pub status: Option<i32>,
    pub submitted_at: Option<i64>,
    pub accepted_at: Option<i64>,
    pub due_at: Option<i64>,
    pub extended_due_at: Option<i64>,
    pub processed_at: Option<i64>,
    pub returned_at: Option<i64>,
    pub refused_at: Option<i64>,
    pub updated_at: Option<i64>,
    pub supplement_requests: i64,
    pub paid_online: Option<bool>,
    pub digitized: Option<bool>,
    pub submitted_date: Option<NaiveDate>,
    pub accepted_date: Option<NaiveDate>,
    pub refused_date: Option<NaiveDate>,
    pub end_date: Option<NaiveDate>,
    pub due_date: Option<NaiveDate>,
    /// `DanhSachChuyenDonVi`, oldest first.
    pub transfers: Vec<StagedTransfer>,
}

/// A text column, built in Arrow's layout as the records come: each value is copied once,
/// from the body into the column (values of up to 12 bytes into the column's views).
type Texts = MutableBinaryViewArray<str>;

/// The staging columns of the records normalised so far, and their arrival order.
#[derive(Default)]
pub struct CaseColumns {
    strings: [Texts; 7],
    applicant_key: Texts,
    ints: [Vec<Option<i32>>; 3],
    instants: [Vec<Option<i64>>; 8],
    supplement_requests: Vec<Option<i64>>,
    flags: [Vec<Option<bool>>; 2],
    dates: [Vec<Option<i32>>; 5],
    /// The transfers of every row, one after another; `transfer_counts` says how many are
    /// each row's.
    transfers: Vec<StagedTransfer>,
    transfer_counts: Vec<u32>,
    /// The runs that pulled the rows, in order, and how many rows each (one run, mostly).
    source_runs: Vec<(String, usize)>,
    order: Vec<i64>,
}

/// Days since 1970-01-01, the physical value of a polars `Date`.
fn days(d: Option<NaiveDate>) -> Option<i32> {
    d.map(|d| (d - NaiveDate::default()).num_days() as i32)
}

impl CaseColumns {
    /// Records held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Appends one row, pulled by run `run_id`, arrived `order`-th.
    pub fn push(&mut self, r: CaseRow, run_id: &str, order: i64) {
        let strings = [
            r.case_id,
            r.agency_code,
            r.agency_name_text,
            r.procedure_code,
            r.procedure_name,
            r.field_code,
            r.field_name,
        ];
        for (v, x) in self.strings.iter_mut().zip(strings) {
            v.push(x);
        }
        self.applicant_key.push(r.applicant_key);
        for (v, x) in self
            .ints
            .iter_mut()
            .zip([r.channel, r.applicant_kind, r.status])
        {
            v.push(x);
        }
        let instants = [
            r.submitted_at,
            r.accepted_at,
            r.due_at,
            r.extended_due_at,
            r.processed_at,
            r.returned_at,
            r.refused_at,
            r.updated_at,
        ];
        for (v, x) in self.instants.iter_mut().zip(instants) {
            v.push(x);
        }
        self.supplement_requests.push(Some(r.supplement_requests));
        for (v, x) in self.flags.iter_mut().zip([r.paid_online, r.digitized]) {
            v.push(x);
        }
        let dates = [
            r.submitted_date,
            r.accepted_date,
            r.refused_date,
            r.end_date,
            r.due_date,
        ];
        for (v, x) in self.dates.iter_mut().zip(dates) {
            v.push(days(x));
        }
        self.transfer_counts.push(r.transfers.len() as u32);
        self.transfers.extend(r.transfers);
        add_run(&mut self.source_runs, run_id, 1);
        self.order.push(order);
    }

    /// Makes room for `n` more rows in every column.
    pub fn reserve(&mut self, n: usize) {
        fn all<T>(a: &mut [Vec<T>], n: usize) {
            a.iter_mut().for_each(|v| v.reserve(n));
        }
        self.strings.iter_mut().for_each(|v| v.reserve(n));
        self.applicant_key.reserve(n);
        all(&mut self.ints, n);
        all(&mut self.instants, n);
        self.supplement_requests.reserve(n);
        all(&mut self.flags, n);
        all(&mut self.dates, n);
        self.transfer_counts.reserve(n);
        self.order.reserve(n);
    }

    /// Appends `other`'s rows after these, its arrival order shifted by `offset`.
    pub fn append(&mut self, other: CaseColumns, offset: i64) {
        fn all<T>(a: &mut [Vec<T>], b: impl IntoIterator<Item = Vec<T>>) {
            for (x, y) in a.iter_mut().zip(b) {
                x.extend(y);
            }
        }
        // Text is not copied: the other column's buffers are taken over, its views shifted.
        for (x, y) in self.strings.iter_mut().zip(other.strings) {
            x.extend_from_array(&y.freeze());
        }
        self.applicant_key
            .extend_from_array(&other.applicant_key.freeze());
        all(&mut self.ints, other.ints);
        all(&mut self.instants, other.instants);
        self.supplement_requests.extend(other.supplement_requests);
        all(&mut self.flags, other.flags);
        all(&mut self.dates, other.dates);
        self.transfers.extend(other.transfers);
        self.transfer_counts.extend(other.transfer_counts);
        for (run, rows) in &other.source_runs {
            add_run(&mut self.source_runs, run, *rows);
        }
        self.order
            .extend(other.order.into_iter().map(|i| i + offset));
    }

    /// The rows as a frame: the staging columns in file order, then `_order`.
    pub fn frame(self) -> Result<DataFrame> {
        let n = self.len();
        let [case_id, agency_code, agency_name_text, procedure_code, procedure_name, field_code, field_name] =
            self.strings;
        let [channel, applicant_kind, status] = self.ints;
        let [submitted_at, accepted_at, due_at, extended_due_at, processed_at, returned_at, refused_at, updated_at] =
            self.instants;
        let [paid_online, digitized] = self.flags;
        let [submitted_date, accepted_date, refused_date, end_date, due_date] = self.dates;
        let s =
            |name: &str, v: Texts| StringChunked::with_chunk(name.into(), v.freeze()).into_column();
        let i = |name: &str, v: Vec<Option<i32>>| Column::new(name.into(), v);
        let d = |name: &str, v: Vec<Option<i32>>| Column::new(name.into(), v).cast(&DataType::Date);
        let columns = vec![
            s("case_id", case_id),
            s("agency_code", agency_code),
            s("agency_name_text", agency_name_text),
            s("procedure_code", procedure_code),
            s("procedure_name", procedure_name),
            s("field_code", field_code),
            s("field_name", field_name),
            i("channel", channel),
            i("applicant_kind", applicant_kind),
            s("applicant_key", self.applicant_key),
            i("status", status),
            utc_micros("submitted_at", submitted_at),
            utc_micros("accepted_at", accepted_at),
            utc_micros("due_at", due_at),
            utc_micros("extended_due_at", extended_due_at),
            utc_micros("processed_at", processed_at),
            utc_micros("returned_at", returned_at),
            utc_micros("refused_at", refused_at),
            utc_micros("updated_at", updated_at),
            Column::new("supplement_requests".into(), self.supplement_requests),
            Column::new("paid_online".into(), paid_online),
            Column::new("digitized".into(), digitized),
            d("submitted_date", submitted_date)?,
            d("accepted_date", accepted_date)?,
            d("refused_date", refused_date)?,
            d("end_date", end_date)?,
            d("due_date", due_date)?,
            transfers_column(&self.transfers, &self.transfer_counts)?,
            runs_column(&self.source_runs),
            Column::new("_order".into(), self.order),
        ];
        DataFrame::new(n, columns).doing("building the staging frame")
    }
}

/// Adds `rows` rows pulled by `run` after those of `runs`.
fn add_run(runs: &mut Vec<(String, usize)>, run: &str, rows: usize) {
    match runs.last_mut() {
        Some((last, n)) if last == run => *n += rows,
        _ => runs.push((run.to_string(), rows)),
    }
}

/// `source_run_id`: each run's id repeated for its rows (the id's bytes held once per run).
fn runs_column(runs: &[(String, usize)]) -> Column {
    let mut ids = Texts::with_capacity(runs.iter().map(|(_, rows)| rows).sum());
    for (run, rows) in runs {
        ids.extend_constant(*rows, Some(run.as_str()));
    }
    StringChunked::with_chunk("source_run_id".into(), ids.freeze()).into_column()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stage::schema::staging_schema;

    #[test]
    fn the_frame_has_the_staging_schema_and_appends_keep_order() {
        let row = |id: &'static str| CaseRow {
            case_id: Some(id.into()),
            status: Some(9),
            updated_at: Some(1_720_000_000_000_000),
            accepted_date: "2024-07-01".parse().ok(),
            supplement_requests: 2,
            paid_online: Some(true),
            ..Default::default()
        };
        let mut a = CaseColumns::default();
        a.push(row("A"), "r1", 1);
        a.push(row("B"), "r1", 2);
        let mut b = CaseColumns::default();
        b.push(row("C"), "r2", 1);
        a.append(b, 2);
        let df = a.frame().unwrap();
        let want: Vec<(String, DataType)> = staging_schema()
            .into_iter()
            .map(|(n, t)| (n.to_string(), t))
            .chain([("_order".to_string(), DataType::Int64)])
            .collect();
        let got: Vec<(String, DataType)> = df
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.dtype().clone()))
            .collect();
        assert_eq!(got, want);
        let order: Vec<i64> = df
            .column("_order")
            .unwrap()
            .i64()
            .unwrap()
            .iter()
            .flatten()
            .collect();
        assert_eq!(order, [1, 2, 3]);
        let runs = df.column("source_run_id").unwrap().str().unwrap();
        assert_eq!(runs.get(2), Some("r2"));
        let acc = df
            .column("accepted_date")
            .unwrap()
            .date()
            .unwrap()
            .physical()
            .get(0);
        assert_eq!(acc, Some(19_905), "2024-07-01 is day 19,905");
    }
}

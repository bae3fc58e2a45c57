//! Stage 3: normalise and reject.
//!
//! Every case record of a pulled page is read into typed columns ([`columns`]): each date shape
//! of `source-api.md` in Vietnam time, text trimmed and NFC-normalised, enums from strings or
//! numbers, personal data dropped or keyed ([`pii`]). The reject rules of
//! [`crate::domain::reject`] split off the unusable records with their reason. The records go
//! on in batches, by staging partition, to a scratch folder ([`spill`]); the stage that merges
//! them into `cases/` is [`crate::stage`]. Agencies and the procedure catalog are read by
//! [`catalog`].

pub mod catalog;
pub mod columns;
pub mod pii;
mod scratch;
pub mod spill;

use std::borrow::Cow;
use std::collections::BTreeMap;

use polars::prelude::DataFrame;
use serde_json::Value;

pub use catalog::{agencies, procedures, Agency, Procedure};
pub use columns::{CaseColumns, CaseRow, StagedTransfer};
pub use pii::PiiKey;
pub use spill::{Batches, Spill, Spilled, BATCH_RECORDS};

use crate::domain::reject::{reject, Case, RejectReason};
use crate::error::Result;
use crate::wire::record::Records;
use crate::wire::{
    local_date, records_of, scalar_enum, scalar_flag, scalar_instant, scalar_str, scalar_text,
    CasePage, CaseRecord, Scalar, TransferRecord,
};

/// One rejected record, for `quality/rejects/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub record_key: Option<String>,
    pub reason: RejectReason,
    pub detail: String,
    pub raw_path: String,
    pub raw_index: i64,
    pub updated_at: Option<i64>,
}

/// Counts kept for the run record.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub records: u64,
    pub valid: u64,
    pub rejected: u64,
    /// By [`RejectReason::code`].
    pub rejected_by_reason: BTreeMap<String, u64>,
}

impl Stats {
    fn add(&mut self, other: Stats) {
        self.records += other.records;
        self.valid += other.valid;
        self.rejected += other.rejected;
        for (k, v) in other.rejected_by_reason {
            *self.rejected_by_reason.entry(k).or_default() += v;
        }
    }
}

/// Reads pulled pages into typed, PII-free columns, splitting off rejects.
pub struct Normaliser {
    key: PiiKey,
    run_id: String,
    cols: CaseColumns,
    rejects: Vec<Reject>,
    pub stats: Stats,
}

/// What normalising produced, in one frame (for tests and small inputs).
pub struct Normalised {
    /// Valid records in arrival order (several versions of a case possible); column `_order`
    /// holds the arrival sequence.
    pub cases: DataFrame,
    pub rejects: Vec<Reject>,
    pub stats: Stats,
}

/// The dates of one record as read, and those that could not be read.
#[derive(Default)]
struct Dates {
    submitted: Option<i64>,
    accepted: Option<i64>,
    due: Option<i64>,
    processed: Option<i64>,
    returned: Option<i64>,
    refused: Option<i64>,
    updated: Option<i64>,
    /// Latest non-empty `NgayHenTraMoi` of the supplement requests.
    extended_due: Option<i64>,
    supplements: i64,
    /// `(field, value as served)`.
    unreadable: Vec<(String, String)>,
}

impl Dates {
    fn read(&mut self, field: &str, v: Option<Scalar>) -> Option<i64> {
        match scalar_instant(v) {
            Ok(t) => t,
            Err(shown) => {
                self.unreadable.push((field.to_string(), shown));
                None
            }
        }
    }

    /// Every date field of `rec`, supplement requests included.
    fn of(rec: &mut CaseRecord) -> Dates {
        let mut d = Dates::default();
        d.submitted = d.read("NgayNopHoSo", rec.submitted.take());
        d.accepted = d.read("NgayTiepNhan", rec.accepted.take());
        d.due = d.read("NgayHenTra", rec.due.take());
        d.processed = d.read("NgayKetThucXuLy", rec.processed.take());
        d.returned = d.read("NgayTra", rec.returned.take());
        d.refused = d.read("NgayTuChoi", rec.refused.take());
        d.updated = d.read("NgayCapNhat", rec.updated.take());
        for (j, item) in rec.supplements.take().into_iter().flatten().enumerate() {
            let field = |f: &str| format!("DanhSachHoSoBoSung[{j}].{f}");
            d.supplements += 1;
            d.read(&field("NgayYeuCauBoSung"), item.requested);
            d.read(&field("NgayBoSung"), item.supplied);
            let t = d.read(&field("NgayHenTraMoi"), item.new_due);
            d.extended_due = d.extended_due.max(t);
        }
        d
    }
}

impl Normaliser {
    pub fn new(key: PiiKey, run_id: &str) -> Self {
        Normaliser {
            key,
            run_id: run_id.to_string(),
            cols: CaseColumns::default(),
            rejects: vec![],
            stats: Default::default(),
        }
    }

    /// Adds the records of one `/v1/hoso` page (its `data` array), landed at `raw_path`.
    pub fn add_records(&mut self, raw_path: &str, records: &[Value]) {
        for (i, rec) in records.iter().enumerate() {
            self.add_record(raw_path, i as i64, &mut CaseRecord::of(rec));
        }
    }

    /// Reads a `/v1/hoso` response body straight into typed records (no JSON tree) and adds
    /// them. `None` when the body is not a successful envelope, or a record has a shape the
    /// typed reader does not take (then nothing was added; read it as trees with
    /// [`Normaliser::add_records`]).
    pub fn add_page(&mut self, raw_path: &str, body: &[u8]) -> Option<usize> {
        let page: CasePage = crate::wire::from_json(body).ok()?;
        if !page.succeeded() {
            return None;
        }
        let mut records = page.data.unwrap_or_default().0;
        let n = records.len();
        for (i, rec) in records.iter_mut().enumerate() {
            self.add_record(raw_path, i as i64, rec);
        }
        Some(n)
    }

    /// Judges a `/v1/hoso` body as the pull did ([`crate::wire::classify_body`]) and, when it
    /// is usable, normalises it, reading it once for both (a replay of `raw/` does so): typed,
    /// or as JSON trees when a record has an odd shape. Whether it was usable.
    pub fn add_if_usable(&mut self, raw_path: &str, body: &[u8]) -> bool {
        let (verdict, records) = crate::wire::classify_reading::<Records>(body);
        if !matches!(verdict, crate::wire::BodyVerdict::Usable { .. }) {
            return false;
        }
        self.add_read(raw_path, records, body);
        true
    }

    /// Normalises a usable `/v1/hoso` body whose records were read already (`None`: a record
    /// has a shape the typed reader does not take, so they are read again as JSON trees).
    pub fn add_read(&mut self, raw_path: &str, records: Option<Records>, body: &[u8]) {
        match records {
            Some(mut records) => {
                // Read in place: a record is large, and is not moved to be read.
                for (i, rec) in records.0.iter_mut().enumerate() {
                    self.add_record(raw_path, i as i64, rec);
                }
            }
            None => self.add_records(raw_path, &records_of(body)),
        }
    }

    /// Normalises a usable `/v1/hoso` body: typed, or as JSON trees when a record has an odd
    /// shape.
    pub fn add_body(&mut self, raw_path: &str, body: &[u8]) {
        if self.add_page(raw_path, body).is_none() {
            self.add_records(raw_path, &records_of(body));
        }
    }

    fn add_record<'a>(&mut self, raw_path: &str, raw_index: i64, rec: &mut CaseRecord<'a>) {
        self.stats.records += 1;
        let (case, row) = read(rec, &self.key);
        if let Some((reason, detail)) = reject(&case) {
            self.stats.rejected += 1;
            *self
                .stats
                .rejected_by_reason
                .entry(reason.code().to_string())
                .or_default() += 1;
            self.rejects.push(Reject {
                record_key: case.case_id.map(Cow::into_owned),
                reason,
                detail,
                raw_path: raw_path.to_string(),
                raw_index,
                updated_at: case.updated_at,
            });
            return;
        }
        self.stats.valid += 1;
        self.cols.push(row, &self.run_id, self.stats.records as i64);
    }

    /// Makes room for `n` more records, so a batch's columns are not grown by doubling.
    pub fn reserve(&mut self, n: usize) {
        self.cols.reserve(n);
    }

    /// Records normalised and not yet taken as a frame.
    pub fn pending(&self) -> usize {
        self.cols.len()
    }

    /// Appends what `other` normalised after this normaliser's records (its arrival order
    /// continues this one's).
    pub fn absorb(&mut self, other: Normaliser) {
        let offset = self.stats.records as i64;
        self.cols.append(other.cols, offset);
        self.rejects.extend(other.rejects);
        self.stats.add(other.stats);
    }

    /// The records normalised so far as a frame (staging columns and `_order`); they are
    /// then forgotten, the counts and rejects kept.
    pub fn take_frame(&mut self) -> Result<DataFrame> {
        std::mem::take(&mut self.cols).frame()
    }

    pub fn finish(mut self) -> Result<Normalised> {
        Ok(Normalised {
            cases: self.take_frame()?,
            rejects: self.rejects,
            stats: self.stats,
        })
    }

    /// The rejects and counts (taken: the normaliser keeps none), once every frame was taken.
    pub fn take_rejects(&mut self) -> (Vec<Reject>, Stats) {
        (
            std::mem::take(&mut self.rejects),
            std::mem::take(&mut self.stats),
        )
    }
}

/// The hand-overs of a record, oldest first, and the first that cannot be used. Their dates
/// go through `d`, so an unreadable one rejects the record like any unreadable date.
fn transfers(
    items: Option<Vec<TransferRecord>>,
    d: &mut Dates,
) -> (Vec<StagedTransfer>, Option<String>) {
    let mut out = vec![];
    let mut incomplete = None;
    for (j, t) in items.into_iter().flatten().enumerate() {
        let field = format!("DanhSachChuyenDonVi[{j}]");
        let on = d.read(&format!("{field}.NgayChuyen"), t.on);
        let from = scalar_text(t.from);
        match (from, on) {
            (Some(from), Some(at)) => out.push(StagedTransfer {
                from,
                to: scalar_text(t.to),
                at,
            }),
            (None, _) => {
                incomplete.get_or_insert(format!("{field} has no MaDonViCu"));
            }
            (_, None) => {
                incomplete.get_or_insert(format!("{field} has no NgayChuyen"));
            }
        }
    }
    out.sort_by_key(|t| t.at);
    (out, incomplete)
}

/// Reads one record: the terms the reject rules look at, and its staging row.
fn read<'a>(rec: &mut CaseRecord<'a>, key: &PiiKey) -> (Case<'a>, CaseRow<'a>) {
    let mut d = Dates::of(rec);
    let (transfers, incomplete_transfer) = transfers(rec.transfers.take(), &mut d);
    let status_text = scalar_str(rec.status.take());
    let status = status_text.as_deref().and_then(|s| s.parse::<i32>().ok());
    let case = Case {
        case_id: scalar_str(rec.case_id.take()),
        agency_code: scalar_str(rec.agency.take()),
        status,
        status_text,
        updated_at: d.updated,
        accepted_date: d.accepted.map(local_date),
        submitted_date: d.submitted.map(local_date),
        refused_date: d.refused.map(local_date),
        end_date: d.processed.or(d.returned).map(local_date),
        due_date: d.extended_due.or(d.due).map(local_date),
        unreadable: d.unreadable,
        incomplete_transfer,
    };
    let row = CaseRow {
        case_id: case.case_id.clone(),
        agency_code: case.agency_code.clone(),
        agency_name_text: scalar_str(rec.agency_name.take()),
        procedure_code: scalar_str(rec.procedure.take()),
        procedure_name: scalar_str(rec.procedure_name.take()),
        field_code: scalar_str(rec.field.take()),
        field_name: scalar_str(rec.field_name.take()),
        // An enum the source sends in no known shape counts as absent (channel: in person).
        channel: scalar_enum(rec.channel.take()).unwrap_or(None),
        applicant_kind: scalar_enum(rec.applicant_kind.take()).unwrap_or(None),
        applicant_key: scalar_str(rec.id_number.take()).map(|id| key.applicant_key(&id)),
        status,
        submitted_at: d.submitted,
        accepted_at: d.accepted,
        due_at: d.due,
        extended_due_at: d.extended_due,
        processed_at: d.processed,
        returned_at: d.returned,
        refused_at: d.refused,
        updated_at: d.updated,
        supplement_requests: d.supplements,
        paid_online: scalar_flag(rec.paid_online.take()),
        digitized: scalar_flag(rec.digitized.take()),
        submitted_date: case.submitted_date,
        accepted_date: case.accepted_date,
        refused_date: case.refused_date,
        end_date: case.end_date,
        due_date: case.due_date,
        transfers,
    };
    (case, row)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The typed reader and the JSON-tree reader give the same rows and rejects, whatever the
    /// shapes; a record the typed reader does not take leaves it to the tree reader.
    #[test]
    fn typed_pages_read_as_json_trees_do() {
        let body = r#"{"error_code":0,"total":"4","data":[
            {"MaHoSo":" A1 ","MaDonVi":"X","TrangThaiHoSo":9,"KenhThucHien":"2","NgayTiepNhan":"01/07/2024 08:00:00",
             "NgayKetThucXuLy":"2024-07-02T01:00:00Z","NgayHenTra":"20240705170000","NgayCapNhat":"20240702090000",
             "TenTTHC":"Chu\u031bng thu\u031b\u0323c","SoGiayToChuHoSo":46090001234,"DuocThanhToanTrucTuyen":true,
             "DanhSachHoSoBoSung":[{"NgayYeuCauBoSung":"20240701100000","NgayHenTraMoi":"20240708170000"},{}],"ChuHoSo":"Lê Văn A"},
            {"MaHoSo":"A2","MaDonVi":"X","TrangThaiHoSo":"4","NgayTiepNhan":"","NgayCapNhat":"20240702090000","LoaiDoiTuong":1.0},
            {"MaHoSo":"A3","MaDonVi":"X","TrangThaiHoSo":"1","NgayNopHoSo":"20240703080000","NgayCapNhat":"31/02/2024","TenLinhVuc":["x"]},
            {"MaHoSo":null,"MaDonVi":"X","NgayCapNhat":"20240702090000","HoSoCoThanhPhanSoHoa":"1"}
        ]}"#;
        let tree: serde_json::Value = serde_json::from_str(body).unwrap();
        let records = tree["data"].as_array().unwrap().clone();
        let mut typed = Normaliser::new(PiiKey::new(b"k"), "r");
        assert_eq!(typed.add_page("raw/p", body.as_bytes()), Some(4));
        let mut trees = Normaliser::new(PiiKey::new(b"k"), "r");
        trees.add_records("raw/p", &records);
        let (a, b) = (typed.finish().unwrap(), trees.finish().unwrap());
        assert!(a.cases.equals_missing(&b.cases), "{}\n{}", a.cases, b.cases);
        assert_eq!(a.cases.height(), 1);
        assert_eq!(a.rejects, b.rejects);
        assert_eq!(a.rejects.len(), 3);
        // Shapes the typed reader leaves to the tree reader: nothing is added, it says so.
        for odd in [
            r#"{"error_code":"0","data":[{"MaHoSo":"A","DanhSachHoSoBoSung":"none"}]}"#,
            r#"{"error_code":"0","data":[7]}"#,
            r#"{"error_code":"0","data":[{"MaHoSo":"A","MaHoSo":"B"}]}"#,
            r#"{"data":[]}"#,
            r#"{"error_code":"1","data":[]}"#,
        ] {
            let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
            assert_eq!(n.add_page("raw/p", odd.as_bytes()), None, "{odd}");
            assert_eq!(n.pending() + n.rejects.len(), 0);
        }
    }

    /// Judged and read in one pass, a body is judged as `classify_body` judges it and read as
    /// `add_body` reads a usable one: the same rows, rejects and counts.
    #[test]
    fn a_body_judged_as_it_is_read_is_judged_and_read_as_in_two_steps() {
        let good = r#"{"MaHoSo":"A1","MaDonVi":"X","TrangThaiHoSo":"4","NgayTiepNhan":"01/07/2024 08:00:00","NgayCapNhat":"20240702090000"}"#;
        let bad = r#"{"MaHoSo":null,"MaDonVi":"X","NgayCapNhat":"20240702090000"}"#;
        let odd = r#"{"MaHoSo":"A3","MaDonVi":"X","TrangThaiHoSo":"1","DanhSachHoSoBoSung":"none","NgayCapNhat":"20240702090000"}"#;
        for body in [
            format!(r#"{{"error_code":"0","total":2,"data":[{good},{bad}]}}"#),
            format!(r#"{{"error_code":"0","data":[{good},{odd},7]}}"#),
            r#"{"error_code":"0","data":[]}"#.to_string(),
            format!(r#"{{"error_code":"1","data":[{good}]}}"#),
            format!(r#"{{"data":[{good}]}}"#),
            r#"{"error_code":"0","data":null}"#.to_string(),
            format!(r#"{{"error_code":"0","data":[{good}"#),
        ] {
            let usable = matches!(
                crate::wire::classify_body(body.as_bytes()),
                crate::wire::BodyVerdict::Usable { .. }
            );
            let mut once = Normaliser::new(PiiKey::new(b"k"), "r");
            assert_eq!(
                once.add_if_usable("raw/p", body.as_bytes()),
                usable,
                "{body}"
            );
            let mut twice = Normaliser::new(PiiKey::new(b"k"), "r");
            if usable {
                twice.add_body("raw/p", body.as_bytes());
            }
            let (a, b) = (once.finish().unwrap(), twice.finish().unwrap());
            assert!(a.cases.equals_missing(&b.cases), "{body}");
            assert_eq!(a.rejects, b.rejects, "{body}");
            assert_eq!(a.stats.records, b.stats.records, "{body}");
        }
        // And it reads what it judges: the first body gives a row and a reject.
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
        let body = format!(r#"{{"error_code":"0","data":[{good},{bad}]}}"#);
        assert!(n.add_if_usable("raw/p", body.as_bytes()));
        assert_eq!((n.pending(), n.rejects.len()), (1, 1));
    }
}

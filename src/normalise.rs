//! Stage 3: normalise, reject and deduplicate.
//!
//! Every case record of a pulled page is read into typed columns: each date shape of
//! `source-api.md` in Vietnam time, text trimmed and NFC-normalised, enums from strings or
//! numbers, personal data dropped or keyed (`outputs.md`). The reject rules of
//! [`crate::rules::reject`] split off the unusable records with their reason. polars then keeps the
//! latest valid version per case and upserts it into the staging table `cases/`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Asia::Ho_Chi_Minh;
use hmac::{Hmac, Mac};
use polars::prelude::*;
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use std::borrow::Cow;
use unicode_normalization::UnicodeNormalization;

use crate::rules::{self, Case};

// ---------------------------------------------------------------------------------------------
// Value shapes
// ---------------------------------------------------------------------------------------------

/// A value of a record as served: a string (borrowed from the body when it has no escapes), a
/// number, a boolean, or an array or object (kept as its JSON text). `null` and absent are
/// `None` wherever a `Scalar` is optional.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(serde_json::Number),
    Bool(bool),
    Other(String),
}

impl<'a> Scalar<'a> {
    /// The scalar of a parsed JSON value (`None` for absent and `null`).
    pub fn of(v: Option<&'a Value>) -> Option<Scalar<'a>> {
        Some(match v? {
            Value::Null => return None,
            Value::String(s) => Scalar::Str(Cow::Borrowed(s)),
            Value::Number(n) => Scalar::Num(n.clone()),
            Value::Bool(b) => Scalar::Bool(*b),
            other => Scalar::Other(other.to_string()),
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Scalar<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Num(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                serde_json::Number::from_f64(v)
                    .map(Scalar::Num)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                a: A,
            ) -> Result<Self::Value, A::Error> {
                let v = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(a))?;
                Ok(Scalar::Other(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                a: A,
            ) -> Result<Self::Value, A::Error> {
                let v = Value::deserialize(serde::de::value::MapAccessDeserializer::new(a))?;
                Ok(Scalar::Other(v.to_string()))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Trimmed, NFC-normalised text; `""` and `null` are absent. Numbers are read as their text.
pub fn text(v: Option<&Value>) -> Option<String> {
    scalar_text(Scalar::of(v))
}

/// [`text`] of a [`Scalar`].
pub fn scalar_text(v: Option<Scalar>) -> Option<String> {
    let s = match v? {
        Scalar::Str(s) => nfc(s.trim()),
        Scalar::Num(n) => n.to_string(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Other(json) => json,
    };
    let t = s.trim();
    if t.len() == s.len() {
        (!s.is_empty()).then_some(s)
    } else {
        (!t.is_empty()).then(|| t.to_string())
    }
}

/// `s` in Unicode NFC; text already in NFC (all ASCII codes and most names) is only copied.
fn nfc(s: &str) -> String {
    use unicode_normalization::{is_nfc_quick, IsNormalized};
    if s.is_ascii() || is_nfc_quick(s.chars()) == IsNormalized::Yes {
        s.to_string()
    } else {
        s.nfc().collect()
    }
}

/// An enumeration given as `"4"` or `4`. `Err` carries the value as served.
pub fn enum_code(v: Option<&Value>) -> Result<Option<i32>, String> {
    scalar_enum(Scalar::of(v))
}

fn scalar_enum(v: Option<Scalar>) -> Result<Option<i32>, String> {
    match scalar_text(v) {
        None => Ok(None),
        Some(s) => s.parse::<i32>().map(Some).map_err(|_| s),
    }
}

/// A `"0"`/`"1"` flag (also `0`/`1` and `true`/`false`).
pub fn flag(v: Option<&Value>) -> Option<bool> {
    scalar_flag(Scalar::of(v))
}

fn scalar_flag(v: Option<Scalar>) -> Option<bool> {
    match scalar_text(v)?.as_str() {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// A date-time in any shape of `source-api.md`, as microseconds since the epoch (UTC).
/// Local shapes are read in Vietnam time. `Ok(None)` is absent; `Err` is unreadable.
pub fn instant(v: Option<&Value>) -> Result<Option<i64>, String> {
    scalar_instant(Scalar::of(v))
}

pub fn scalar_instant(v: Option<Scalar>) -> Result<Option<i64>, String> {
    let Some(s) = scalar_text(v) else {
        return Ok(None);
    };
    parse_instant(&s).map(Some).ok_or(s)
}

/// Parses `yyyyMMddHHmmss`, `dd/MM/yyyy HH:mm:ss`, `dd/MM/yyyy` (local) or ISO 8601 with an offset.
pub fn parse_instant(s: &str) -> Option<i64> {
    let local = |ndt: NaiveDateTime| {
        Ho_Chi_Minh
            .from_local_datetime(&ndt)
            .single()
            .map(|t| t.timestamp_micros())
    };
    if s.len() == 14 && s.bytes().all(|b| b.is_ascii_digit()) {
        return NaiveDateTime::parse_from_str(s, "%Y%m%d%H%M%S")
            .ok()
            .and_then(local);
    }
    if s.len() == 19 && s.as_bytes()[2] == b'/' {
        return NaiveDateTime::parse_from_str(s, "%d/%m/%Y %H:%M:%S")
            .ok()
            .and_then(local);
    }
    if s.len() == 10 && s.as_bytes()[2] == b'/' {
        return NaiveDate::parse_from_str(s, "%d/%m/%Y")
            .ok()
            .and_then(|d| local(d.and_hms_opt(0, 0, 0)?));
    }
    if s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' {
        return DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_micros());
    }
    None
}

/// An instant (epoch microseconds) as a date-time, clamped to the range chrono represents
/// (±262,000 years: every instant motcua reads or computes lies far inside it).
fn utc(micros: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(micros).unwrap_or(if micros < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// The Vietnam-local calendar date of an instant.
pub fn local_date(micros: i64) -> NaiveDate {
    utc(micros).with_timezone(&Ho_Chi_Minh).date_naive()
}

/// An instant as the source's `yyyyMMddHHmmss` in Vietnam time (for `updated_from`).
pub fn source_timestamp(micros: i64) -> String {
    utc(micros)
        .with_timezone(&Ho_Chi_Minh)
        .format("%Y%m%d%H%M%S")
        .to_string()
}

/// Whether chrono represents the instant `micros` (a value read back from state files is
/// checked with this before it is used).
pub fn in_range(micros: i64) -> bool {
    DateTime::<Utc>::from_timestamp_micros(micros).is_some()
}

// ---------------------------------------------------------------------------------------------
// Personal data
// ---------------------------------------------------------------------------------------------

/// The secret that keys `applicant_key` (HMAC-SHA-256 of `SoGiayToChuHoSo`).
#[derive(Clone)]
pub struct PiiKey(Hmac<Sha256>);

impl PiiKey {
    /// HMAC takes a key of any length: one longer than SHA-256's 64-byte block is hashed
    /// first, a shorter one padded with zeros (RFC 2104), which is done here so that building
    /// the MAC cannot fail.
    pub fn new(secret: &[u8]) -> Self {
        use sha2::Digest;
        let mut block = [0u8; 64];
        if secret.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        PiiKey(Hmac::<Sha256>::new(&block.into()))
    }

    pub fn applicant_key(&self, id_number: &str) -> String {
        let mut mac = self.0.clone();
        mac.update(id_number.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

impl std::fmt::Debug for PiiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PiiKey(<redacted>)")
    }
}

// ---------------------------------------------------------------------------------------------
// Records → columns
// ---------------------------------------------------------------------------------------------

/// The staging table `cases/`: column name and type, in file order. See `schemas/cases.json`.
pub fn staging_schema() -> Vec<(&'static str, DataType)> {
    let ts = DataType::Datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC));
    vec![
        ("case_id", DataType::String),
        ("agency_code", DataType::String),
        ("agency_name_text", DataType::String),
        ("procedure_code", DataType::String),
        ("procedure_name", DataType::String),
        ("field_code", DataType::String),
        ("field_name", DataType::String),
        ("channel", DataType::Int32),
        ("applicant_kind", DataType::Int32),
        ("applicant_key", DataType::String),
        ("status", DataType::Int32),
        ("submitted_at", ts.clone()),
        ("accepted_at", ts.clone()),
        ("due_at", ts.clone()),
        ("extended_due_at", ts.clone()),
        ("processed_at", ts.clone()),
        ("returned_at", ts.clone()),
        ("refused_at", ts.clone()),
        ("updated_at", ts),
        ("supplement_requests", DataType::Int64),
        ("paid_online", DataType::Boolean),
        ("digitized", DataType::Boolean),
        ("submitted_date", DataType::Date),
        ("accepted_date", DataType::Date),
        ("refused_date", DataType::Date),
        ("end_date", DataType::Date),
        ("due_date", DataType::Date),
        ("source_run_id", DataType::String),
    ]
}

/// An empty staging table: the columns of [`staging_schema`], no rows.
pub fn empty_staging() -> Result<DataFrame> {
    let cols: Vec<Column> = staging_schema()
        .into_iter()
        .map(|(n, dt)| Column::full_null(n.into(), 0, &dt))
        .collect();
    Ok(DataFrame::new(0, cols)?)
}

/// A `Timestamp(microsecond, UTC)` column from epoch microseconds. (polars 0.55 drops the time
/// zone when casting a null-free `Int64` column to a zoned `Datetime`, so build it directly.)
pub fn utc_micros(name: &str, values: Vec<Option<i64>>) -> Column {
    Int64Chunked::from_iter_options(name.into(), values.into_iter())
        .into_datetime(TimeUnit::Microseconds, Some(polars::prelude::TimeZone::UTC))
        .into_column()
}

#[derive(Default)]
struct CaseColumns {
    strings: BTreeMap<&'static str, Vec<Option<String>>>,
    ints: BTreeMap<&'static str, Vec<Option<i32>>>,
    instants: BTreeMap<&'static str, Vec<Option<i64>>>,
    dates: BTreeMap<&'static str, Vec<Option<i32>>>,
    supplements: Vec<Option<i64>>,
    flags: BTreeMap<&'static str, Vec<Option<bool>>>,
    order: Vec<i64>,
    len: usize,
}

fn days(d: Option<NaiveDate>) -> Option<i32> {
    d.map(|d| (d - NaiveDate::default()).num_days() as i32)
}

/// The fields of a `/v1/hoso` record that motcua reads (`source-api.md`); every other field —
/// names, phone numbers, addresses of applicants among them — is skipped unread.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CaseRecord<'a> {
    #[serde(rename = "MaHoSo", borrow)]
    pub case_id: Option<Scalar<'a>>,
    #[serde(rename = "MaDonVi", borrow)]
    pub agency: Option<Scalar<'a>>,
    #[serde(rename = "DonViXuLy", borrow)]
    pub agency_name: Option<Scalar<'a>>,
    #[serde(rename = "MaTTHC", borrow)]
    pub procedure: Option<Scalar<'a>>,
    #[serde(rename = "TenTTHC", borrow)]
    pub procedure_name: Option<Scalar<'a>>,
    #[serde(rename = "MaLinhVuc", borrow)]
    pub field: Option<Scalar<'a>>,
    #[serde(rename = "TenLinhVuc", borrow)]
    pub field_name: Option<Scalar<'a>>,
    #[serde(rename = "KenhThucHien", borrow)]
    pub channel: Option<Scalar<'a>>,
    #[serde(rename = "LoaiDoiTuong", borrow)]
    pub applicant_kind: Option<Scalar<'a>>,
    /// Only ever keyed by HMAC (`applicant_key`), never kept.
    #[serde(rename = "SoGiayToChuHoSo", borrow)]
    pub id_number: Option<Scalar<'a>>,
    #[serde(rename = "TrangThaiHoSo", borrow)]
    pub status: Option<Scalar<'a>>,
    #[serde(rename = "NgayNopHoSo", borrow)]
    pub submitted: Option<Scalar<'a>>,
    #[serde(rename = "NgayTiepNhan", borrow)]
    pub accepted: Option<Scalar<'a>>,
    #[serde(rename = "NgayHenTra", borrow)]
    pub due: Option<Scalar<'a>>,
    #[serde(rename = "NgayKetThucXuLy", borrow)]
    pub processed: Option<Scalar<'a>>,
    #[serde(rename = "NgayTra", borrow)]
    pub returned: Option<Scalar<'a>>,
    #[serde(rename = "NgayTuChoi", borrow)]
    pub refused: Option<Scalar<'a>>,
    #[serde(rename = "NgayCapNhat", borrow)]
    pub updated: Option<Scalar<'a>>,
    #[serde(rename = "DuocThanhToanTrucTuyen", borrow)]
    pub paid_online: Option<Scalar<'a>>,
    #[serde(rename = "HoSoCoThanhPhanSoHoa", borrow)]
    pub digitized: Option<Scalar<'a>>,
    /// `DanhSachHoSoBoSung`: an array (a record where it is something else is read as a tree,
    /// where anything but an array counts as no supplement request).
    #[serde(rename = "DanhSachHoSoBoSung", borrow)]
    pub supplements: Option<Vec<Supplement<'a>>>,
}

/// One supplement request of `DanhSachHoSoBoSung`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Supplement<'a> {
    #[serde(rename = "NgayYeuCauBoSung", borrow)]
    pub requested: Option<Scalar<'a>>,
    #[serde(rename = "NgayBoSung", borrow)]
    pub supplied: Option<Scalar<'a>>,
    #[serde(rename = "NgayHenTraMoi", borrow)]
    pub new_due: Option<Scalar<'a>>,
}

impl<'a> CaseRecord<'a> {
    /// The fields of a record already parsed as a JSON tree (any shape).
    pub fn of(rec: &'a Value) -> CaseRecord<'a> {
        let g = |k: &str| Scalar::of(rec.get(k));
        CaseRecord {
            case_id: g("MaHoSo"),
            agency: g("MaDonVi"),
            agency_name: g("DonViXuLy"),
            procedure: g("MaTTHC"),
            procedure_name: g("TenTTHC"),
            field: g("MaLinhVuc"),
            field_name: g("TenLinhVuc"),
            channel: g("KenhThucHien"),
            applicant_kind: g("LoaiDoiTuong"),
            id_number: g("SoGiayToChuHoSo"),
            status: g("TrangThaiHoSo"),
            submitted: g("NgayNopHoSo"),
            accepted: g("NgayTiepNhan"),
            due: g("NgayHenTra"),
            processed: g("NgayKetThucXuLy"),
            returned: g("NgayTra"),
            refused: g("NgayTuChoi"),
            updated: g("NgayCapNhat"),
            paid_online: g("DuocThanhToanTrucTuyen"),
            digitized: g("HoSoCoThanhPhanSoHoa"),
            supplements: match rec.get("DanhSachHoSoBoSung") {
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .map(|it| Supplement {
                            requested: Scalar::of(it.get("NgayYeuCauBoSung")),
                            supplied: Scalar::of(it.get("NgayBoSung")),
                            new_due: Scalar::of(it.get("NgayHenTraMoi")),
                        })
                        .collect(),
                ),
                _ => None,
            },
        }
    }
}

/// A `/v1/hoso` body read the typed way.
#[derive(Deserialize)]
struct Page<'a> {
    #[serde(default, borrow)]
    error_code: Option<Scalar<'a>>,
    #[serde(default, borrow)]
    data: Option<Vec<CaseRecord<'a>>>,
}

/// One rejected record, for `quality/rejects/`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub record_key: Option<String>,
    pub reason: &'static str,
    pub detail: String,
    pub raw_path: String,
    pub raw_index: i64,
    pub updated_at: Option<i64>,
}

/// Counts kept for the run record.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NormaliseStats {
    pub records: u64,
    pub valid: u64,
    pub rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
}

/// Reads pulled pages into typed, PII-free columns, splitting off rejects.
pub struct Normaliser {
    key: PiiKey,
    run_id: String,
    cols: CaseColumns,
    rejects: Vec<Reject>,
    pub stats: NormaliseStats,
}

/// What normalising one pull produced.
pub struct Normalised {
    /// Valid records in arrival order (several versions of a case possible), column `_order`
    /// holds the arrival sequence.
    pub cases: DataFrame,
    pub rejects: Vec<Reject>,
    pub stats: NormaliseStats,
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
            self.add_record(raw_path, i as i64, CaseRecord::of(rec));
        }
    }

    /// Reads a `/v1/hoso` response body straight into typed records (no JSON tree) and adds
    /// them. `None` when the body is not the envelope, or its `error_code` is not "0", or a
    /// record has a shape the typed reader does not take (then nothing was added; read it as a
    /// tree with [`Normaliser::add_records`]).
    pub fn add_page(&mut self, raw_path: &str, body: &[u8]) -> Option<usize> {
        let page: Page = serde_json::from_slice(body).ok()?;
        if scalar_text(page.error_code).as_deref() != Some("0") {
            return None;
        }
        let records = page.data.unwrap_or_default();
        let n = records.len();
        for (i, rec) in records.into_iter().enumerate() {
            self.add_record(raw_path, i as i64, rec);
        }
        Some(n)
    }

    fn add_record(&mut self, raw_path: &str, raw_index: i64, rec: CaseRecord) {
        self.stats.records += 1;
        let mut unreadable: Vec<(String, String)> = vec![];
        let mut date = |field: &str, v: Option<Scalar>| match scalar_instant(v) {
            Ok(t) => t,
            Err(shown) => {
                unreadable.push((field.to_string(), shown));
                None
            }
        };
        let submitted_at = date("NgayNopHoSo", rec.submitted);
        let accepted_at = date("NgayTiepNhan", rec.accepted);
        let due_at = date("NgayHenTra", rec.due);
        let processed_at = date("NgayKetThucXuLy", rec.processed);
        let returned_at = date("NgayTra", rec.returned);
        let refused_at = date("NgayTuChoi", rec.refused);
        let updated_at = date("NgayCapNhat", rec.updated);
        let mut supplements = 0i64;
        let mut extended_due_at: Option<i64> = None;
        if let Some(items) = rec.supplements {
            supplements = items.len() as i64;
            for (j, item) in items.into_iter().enumerate() {
                let field = |f: &str| format!("DanhSachHoSoBoSung[{j}].{f}");
                date(&field("NgayYeuCauBoSung"), item.requested);
                date(&field("NgayBoSung"), item.supplied);
                let t = date(&field("NgayHenTraMoi"), item.new_due);
                extended_due_at = extended_due_at.max(t);
            }
        }
        let (status, status_text) = match scalar_enum(rec.status) {
            Ok(s) => (s, s.map(|s| s.to_string())),
            Err(shown) => (None, Some(shown)),
        };
        let effective_due = extended_due_at.or(due_at);
        let case = Case {
            case_id: scalar_text(rec.case_id),
            agency_code: scalar_text(rec.agency),
            status,
            status_text,
            updated_at,
            accepted_date: accepted_at.map(local_date),
            submitted_date: submitted_at.map(local_date),
            refused_date: refused_at.map(local_date),
            end_date: processed_at.or(returned_at).map(local_date),
            due_date: effective_due.map(local_date),
            unreadable,
        };
        if let Some((reason, detail)) = rules::reject(&case) {
            self.stats.rejected += 1;
            *self
                .stats
                .rejected_by_reason
                .entry(reason.code().to_string())
                .or_default() += 1;
            self.rejects.push(Reject {
                record_key: case.case_id,
                reason: reason.code(),
                detail,
                raw_path: raw_path.to_string(),
                raw_index,
                updated_at: case.updated_at,
            });
            return;
        }
        self.stats.valid += 1;
        let c = &mut self.cols;
        let mut s = |k: &'static str, v: Option<String>| c.strings.entry(k).or_default().push(v);
        s("case_id", case.case_id);
        s("agency_code", case.agency_code);
        s("agency_name_text", scalar_text(rec.agency_name));
        s("procedure_code", scalar_text(rec.procedure));
        s("procedure_name", scalar_text(rec.procedure_name));
        s("field_code", scalar_text(rec.field));
        s("field_name", scalar_text(rec.field_name));
        s(
            "applicant_key",
            scalar_text(rec.id_number).map(|id| self.key.applicant_key(&id)),
        );
        s("source_run_id", Some(self.run_id.clone()));
        let mut n = |k: &'static str, v: Option<i32>| c.ints.entry(k).or_default().push(v);
        // An enum the source sends in no known shape counts as absent (channel: in person).
        n("channel", scalar_enum(rec.channel).unwrap_or(None));
        n(
            "applicant_kind",
            scalar_enum(rec.applicant_kind).unwrap_or(None),
        );
        n("status", case.status);
        let mut i = |k: &'static str, v: Option<i64>| c.instants.entry(k).or_default().push(v);
        i("submitted_at", submitted_at);
        i("accepted_at", accepted_at);
        i("due_at", due_at);
        i("extended_due_at", extended_due_at);
        i("processed_at", processed_at);
        i("returned_at", returned_at);
        i("refused_at", refused_at);
        i("updated_at", updated_at);
        let mut d =
            |k: &'static str, v: Option<NaiveDate>| c.dates.entry(k).or_default().push(days(v));
        d("submitted_date", case.submitted_date);
        d("accepted_date", case.accepted_date);
        d("refused_date", case.refused_date);
        d("end_date", case.end_date);
        d("due_date", case.due_date);
        c.supplements.push(Some(supplements));
        c.flags
            .entry("paid_online")
            .or_default()
            .push(scalar_flag(rec.paid_online));
        c.flags
            .entry("digitized")
            .or_default()
            .push(scalar_flag(rec.digitized));
        c.order.push(self.stats.records as i64);
        c.len += 1;
    }

    /// Records normalised and not yet taken as a frame.
    pub fn pending(&self) -> usize {
        self.cols.len
    }

    /// Appends what `other` normalised after this normaliser's records (its arrival order
    /// continues this one's).
    pub fn absorb(&mut self, other: Normaliser) {
        let offset = self.stats.records as i64;
        let (c, o) = (&mut self.cols, other.cols);
        for (k, v) in o.strings {
            c.strings.entry(k).or_default().extend(v);
        }
        for (k, v) in o.ints {
            c.ints.entry(k).or_default().extend(v);
        }
        for (k, v) in o.instants {
            c.instants.entry(k).or_default().extend(v);
        }
        for (k, v) in o.dates {
            c.dates.entry(k).or_default().extend(v);
        }
        for (k, v) in o.flags {
            c.flags.entry(k).or_default().extend(v);
        }
        c.supplements.extend(o.supplements);
        c.order.extend(o.order.into_iter().map(|i| i + offset));
        c.len += o.len;
        self.rejects.extend(other.rejects);
        let (s, t) = (&mut self.stats, other.stats);
        s.records += t.records;
        s.valid += t.valid;
        s.rejected += t.rejected;
        for (k, v) in t.rejected_by_reason {
            *s.rejected_by_reason.entry(k).or_default() += v;
        }
    }

    /// The records normalised so far as a frame (staging columns and `_order`); they are
    /// then forgotten, the counts and rejects kept.
    pub fn take_frame(&mut self) -> Result<DataFrame> {
        frame(std::mem::take(&mut self.cols))
    }

    pub fn finish(mut self) -> Result<Normalised> {
        Ok(Normalised {
            cases: self.take_frame()?,
            rejects: self.rejects,
            stats: self.stats,
        })
    }

    /// The rejects and counts, once every frame was taken.
    pub fn into_rejects(self) -> (Vec<Reject>, NormaliseStats) {
        (self.rejects, self.stats)
    }
}

fn frame(cols: CaseColumns) -> Result<DataFrame> {
    {
        let mut c = cols;
        let mut columns: Vec<Column> = Vec::new();
        for (name, dtype) in staging_schema() {
            let col = match &dtype {
                DataType::String => {
                    Column::new(name.into(), c.strings.remove(name).unwrap_or_default())
                }
                DataType::Int32 => {
                    Column::new(name.into(), c.ints.remove(name).unwrap_or_default())
                }
                DataType::Int64 => Column::new(name.into(), std::mem::take(&mut c.supplements)),
                DataType::Boolean => {
                    Column::new(name.into(), c.flags.remove(name).unwrap_or_default())
                }
                DataType::Date => {
                    Column::new(name.into(), c.dates.remove(name).unwrap_or_default())
                        .cast(&dtype)?
                }
                DataType::Datetime(..) => {
                    utc_micros(name, c.instants.remove(name).unwrap_or_default())
                }
                other => anyhow::bail!("staging column {name} has unsupported type {other}"),
            };
            columns.push(col);
        }
        columns.push(Column::new("_order".into(), std::mem::take(&mut c.order)));
        DataFrame::new(c.len, columns)
            .map_err(anyhow::Error::from)
            .context("building the staging frame")
    }
}

// ---------------------------------------------------------------------------------------------
// Agencies and the procedure catalog
// ---------------------------------------------------------------------------------------------

/// An agency of `/v1/donvi`.
#[derive(Debug, Clone, PartialEq)]
pub struct Agency {
    pub code: String,
    pub name: Option<String>,
    /// `Cap`: 1 province, 2 district, 3 commune.
    pub cap: Option<i32>,
    pub parent: Option<String>,
}

/// Reads `/v1/donvi` entries; an entry without `MaDonVi` is skipped and counted, a repeated code
/// keeps its first entry.
pub fn agencies(data: &[Value]) -> (Vec<Agency>, u64) {
    let mut seen = std::collections::HashSet::new();
    let mut out = vec![];
    let mut skipped = 0;
    for d in data {
        let Some(code) = text(d.get("MaDonVi")) else {
            skipped += 1;
            continue;
        };
        if !seen.insert(code.clone()) {
            skipped += 1;
            continue;
        }
        out.push(Agency {
            code,
            name: text(d.get("TenDonVi")),
            cap: enum_code(d.get("Cap")).unwrap_or(None),
            parent: text(d.get("MaDonViCha")),
        });
    }
    (out, skipped)
}

/// A procedure of `/v1/tthc`.
#[derive(Debug, Clone, PartialEq)]
pub struct Procedure {
    pub code: String,
    pub name: Option<String>,
    pub field_code: Option<String>,
    pub field_name: Option<String>,
    /// `CapThucHien`: the levels (1, 2, 3) that handle it.
    pub levels: Vec<i32>,
    /// `MucDoDVC`: 2 full online, 1 partly online, 0 none.
    pub online: Option<i32>,
    pub one_stop: bool,
    pub inter_agency: bool,
}

/// Reads `/v1/tthc` entries (`CapThucHien` as an array of strings or numbers, or `"1,2"`).
pub fn procedures(data: &[Value]) -> (Vec<Procedure>, u64) {
    let mut seen = std::collections::HashSet::new();
    let mut out = vec![];
    let mut skipped = 0;
    for d in data {
        let Some(code) = text(d.get("MaTTHC")) else {
            skipped += 1;
            continue;
        };
        if !seen.insert(code.clone()) {
            skipped += 1;
            continue;
        }
        let mut levels: Vec<i32> = match d.get("CapThucHien") {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| enum_code(Some(v)).ok().flatten())
                .collect(),
            other => text(other)
                .map(|s| {
                    s.split([',', ';', ' '])
                        .filter_map(|p| p.trim().parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
        };
        levels.sort_unstable();
        levels.dedup();
        out.push(Procedure {
            code,
            name: text(d.get("TenTTHC")),
            field_code: text(d.get("MaLinhVuc")),
            field_name: text(d.get("TenLinhVuc")),
            levels,
            online: enum_code(d.get("MucDoDVC")).unwrap_or(None),
            one_stop: flag(d.get("MotCua")).unwrap_or(false),
            inter_agency: flag(d.get("LienThong")).unwrap_or(false),
        });
    }
    (out, skipped)
}

// ---------------------------------------------------------------------------------------------
// Deduplicate and upsert (polars)
// ---------------------------------------------------------------------------------------------

/// The row of each case's latest version, in `case_id` order.
///
/// The versions of a case are taken in the order they were pulled (`_order`; rows already
/// staged first), and each replaces the one kept so far if its `NgayCapNhat` is not older
/// (`source-api.md`: the stamp decides; on a tie the later arrival wins) — or if the one kept
/// so far is **untrusted**: stamped after the start of the run that pulled it (read from
/// `source_run_id`), i.e. in the future by a clock error at the source. Such a stamp cannot be
/// compared with real ones, so whatever a later pull brings replaces it: the source serves only
/// a case's current version, and its correction, stamped at the source's own time, is counted.
/// Rejected records never get here, so they never replace a valid version.
pub fn latest_rows(all: &DataFrame) -> Result<IdxCa> {
    let updated: Vec<Option<i64>> = all
        .column("updated_at")?
        .datetime()?
        .physical()
        .iter()
        .collect();
    let untrusted = untrusted(&updated, all.column("source_run_id")?.str()?);
    let keys = DataFrame::new(
        all.height(),
        vec![
            all.column("case_id")?.clone(),
            all.column("_order")?.clone(),
        ],
    )?
    .with_row_index("_row".into(), None)?
    .lazy()
    .sort(
        ["case_id", "_order"],
        SortMultipleOptions::default().with_maintain_order(true),
    )
    .collect()?;
    let ids = keys.column("case_id")?.str()?;
    let rows = keys.column("_row")?.idx()?;
    let mut keep: Vec<IdxSize> = Vec::with_capacity(all.height());
    let mut current: Option<(Option<&str>, usize)> = None;
    for (id, row) in ids.iter().zip(rows.iter()) {
        let row = row.context("a row without its index")? as usize;
        match current {
            Some((kept_id, kept)) if kept_id == id => {
                if untrusted[kept] || updated[row] >= updated[kept] {
                    current = Some((id, row));
                }
            }
            _ => {
                keep.extend(current.map(|(_, kept)| kept as IdxSize));
                current = Some((id, row));
            }
        }
    }
    keep.extend(current.map(|(_, kept)| kept as IdxSize));
    Ok(IdxCa::from_vec("_row".into(), keep))
}

/// Whether each version was stamped after the start of the run that pulled it (ids that are
/// not run ids, as in tests and tools, leave every stamp trusted).
fn untrusted(updated: &[Option<i64>], runs: &StringChunked) -> Vec<bool> {
    let mut starts: std::collections::HashMap<&str, Option<i64>> = Default::default();
    updated
        .iter()
        .zip(runs.iter())
        .map(|(u, run)| {
            let start = run.and_then(|r| {
                *starts
                    .entry(r)
                    .or_insert_with(|| crate::run_id::started_at(r))
            });
            matches!((u, start), (Some(u), Some(s)) if *u > s)
        })
        .collect()
}

/// Number of staging buckets (`cases/bucket=NN/part-0.parquet`). A case stays in its bucket for
/// life, so an upsert rewrites only the buckets its new records fall in.
pub const BUCKETS: u32 = 16;

/// The bucket of a case id: stable across runs, platforms and versions.
pub fn bucket_of(case_id: &str) -> u32 {
    use sha2::Digest;
    let h = Sha256::digest(case_id.as_bytes());
    u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % BUCKETS
}

/// Splits newly normalised cases by bucket.
pub fn by_bucket(cases: &DataFrame) -> Result<BTreeMap<u32, DataFrame>> {
    let ids = cases.column("case_id")?.str()?.clone();
    let buckets: Vec<u32> = ids.iter().map(|id| bucket_of(id.unwrap_or(""))).collect();
    let mut with = cases.clone();
    with.with_column(Column::new("_bucket".into(), buckets))?;
    let mut out = BTreeMap::new();
    for part in with.partition_by(["_bucket"], true)? {
        let b = part.column("_bucket")?.u32()?.get(0).unwrap_or(0);
        out.insert(b, part.drop("_bucket")?);
    }
    Ok(out)
}

/// Records per batch: the normaliser hands its columns to the spill every this many records,
/// so memory holds a batch or two, however large the pull or the replay.
pub const BATCH_RECORDS: usize = 100_000;

/// Normalised records on their way to staging, split by bucket into files of a scratch folder
/// in the system temp dir (never under the output root). Staging then merges one bucket at a
/// time, so memory holds a bucket, not the pull.
pub struct Spill {
    dir: tempfile::TempDir,
    files: BTreeMap<u32, Vec<std::path::PathBuf>>,
    batches: usize,
}

impl Spill {
    pub fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("motcua-spill-")
            .tempdir()
            .context("creating a scratch folder in the system temp dir (set TMPDIR to a folder with room for a pull)")?;
        Ok(Spill {
            dir,
            files: BTreeMap::new(),
            batches: 0,
        })
    }

    /// Splits a batch by bucket and writes each part.
    pub fn add(&mut self, cases: DataFrame) -> Result<()> {
        if cases.height() == 0 {
            return Ok(());
        }
        let n = self.batches;
        self.batches += 1;
        for (bucket, mut part) in by_bucket(&cases)? {
            let path = self.dir.path().join(format!("{bucket:02}-{n:06}.parquet"));
            let file = std::fs::File::create(&path)
                .with_context(|| format!("writing {} (is the temp dir full?)", path.display()))?;
            ParquetWriter::new(file)
                .with_compression(ParquetCompression::Lz4Raw)
                .finish(&mut part)
                .map_err(anyhow::Error::from)
                .with_context(|| format!("writing {} (is the temp dir full?)", path.display()))?;
            self.files.entry(bucket).or_default().push(path);
        }
        Ok(())
    }

    /// The buckets that received records.
    pub fn buckets(&self) -> Vec<u32> {
        self.files.keys().copied().collect()
    }

    /// Every record spilled to `bucket`, with `_order`.
    pub fn read(&self, bucket: u32) -> Result<DataFrame> {
        let mut frames = vec![];
        for path in self.files.get(&bucket).into_iter().flatten() {
            let file = std::fs::File::open(path)
                .with_context(|| format!("reading back {}", path.display()))?;
            frames.push(ParquetReader::new(file).finish()?.lazy());
        }
        if frames.is_empty() {
            let mut df = empty_staging()?;
            df.with_column(Column::new_empty("_order".into(), &DataType::Int64))?;
            return Ok(df);
        }
        Ok(concat(frames, UnionArgs::default())?.collect()?)
    }
}

/// A [`Normaliser`] whose records go to a [`Spill`] in batches of [`BATCH_RECORDS`], written by
/// a thread of its own while normalising goes on.
pub struct Batches {
    normaliser: Normaliser,
    tx: Option<std::sync::mpsc::SyncSender<DataFrame>>,
    writer: Option<std::thread::JoinHandle<Result<Spill>>>,
}

/// What normalising a pull or a replay produced: the spilled records, the rejects, the counts.
pub struct Spilled {
    pub spill: Spill,
    pub rejects: Vec<Reject>,
    pub stats: NormaliseStats,
}

impl Batches {
    pub fn new(key: PiiKey, run_id: &str) -> Result<Self> {
        let mut spill = Spill::new()?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<DataFrame>(1);
        let writer = std::thread::Builder::new()
            .name("motcua-spill".into())
            .spawn(move || {
                for batch in rx {
                    spill.add(batch)?;
                }
                Ok(spill)
            })
            .context("starting the spill thread")?;
        Ok(Batches {
            normaliser: Normaliser::new(key, run_id),
            tx: Some(tx),
            writer: Some(writer),
        })
    }

    /// Normalises a `/v1/hoso` body: typed, or as JSON trees when a record has an odd shape.
    /// A body that is not a successful envelope adds nothing.
    pub fn add_body(&mut self, raw_path: &str, body: &[u8]) -> Result<()> {
        if self.normaliser.add_page(raw_path, body).is_none() {
            if let Ok(env) = serde_json::from_slice::<crate::source::Envelope>(body) {
                if text(env.error_code.as_ref()).as_deref() == Some("0") {
                    self.normaliser
                        .add_records(raw_path, &env.data.unwrap_or_default());
                }
            }
        }
        self.flush_full()
    }

    /// Appends a page normalised elsewhere (in arrival order).
    pub fn absorb(&mut self, other: Normaliser) -> Result<()> {
        self.normaliser.absorb(other);
        self.flush_full()
    }

    fn flush_full(&mut self) -> Result<()> {
        if self.normaliser.pending() >= BATCH_RECORDS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let frame = self.normaliser.take_frame()?;
        let sent = self.tx.as_ref().map(|tx| tx.send(frame));
        if !matches!(sent, Some(Ok(()))) {
            // The writer stopped: its error says why.
            self.tx = None;
            return match self.writer.take().map(|w| w.join()) {
                Some(Ok(Err(e))) => Err(e),
                _ => Err(anyhow::anyhow!("the spill thread stopped")),
            };
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<Spilled> {
        self.flush()?;
        drop(self.tx.take());
        let spill = match self.writer.take().map(|w| w.join()) {
            Some(Ok(r)) => r?,
            _ => anyhow::bail!("the spill thread panicked"),
        };
        let (rejects, stats) = self.normaliser.into_rejects();
        Ok(Spilled {
            spill,
            rejects,
            stats,
        })
    }
}

/// Merges `new` records (with `_order`) into an existing staging bucket; returns the bucket
/// with one row per case and no helper columns, and how many new records were superseded.
pub fn upsert(existing: Option<DataFrame>, new: DataFrame) -> Result<DataFrame> {
    let names: Vec<Expr> = staging_schema().iter().map(|(n, _)| col(*n)).collect();
    let all = match existing {
        None => new,
        Some(old) => {
            // Rows already staged lose a tie on updated_at against anything newly received.
            let old = old
                .lazy()
                .select(names.clone())
                .with_column(lit(-1i64).cast(DataType::Int64).alias("_order"));
            concat([old, new.lazy()], UnionArgs::default())?.collect()?
        }
    };
    // The rows to keep are chosen on the key columns alone, then taken from the wide frame
    // once, in case_id order: one copy of the bucket, not one per sort.
    let rows = latest_rows(&all)?;
    let out = all.lazy().select(names).collect()?.take(&rows)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_date_shape_reads_in_vietnam_time() {
        let want = parse_instant("20240915020000").unwrap();
        assert_eq!(parse_instant("2024-09-14T19:00:00Z"), Some(want));
        assert_eq!(parse_instant("2024-09-15T02:00:00+07:00"), Some(want));
        assert_eq!(parse_instant("15/09/2024 02:00:00"), Some(want));
        assert_eq!(local_date(want).to_string(), "2024-09-15");
        assert_eq!(
            local_date(parse_instant("15/09/2024").unwrap()).to_string(),
            "2024-09-15"
        );
        assert_eq!(source_timestamp(want), "20240915020000");
        for bad in [
            "2024/08/01",
            "32/07/2024 09:00:00",
            "20241301000000",
            "yesterday",
            "2024-09-14",
        ] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }

    #[test]
    fn shapes_of_values() {
        assert_eq!(
            text(Some(&json!("  Chu\u{031b}ng thu\u{031b}\u{0323}c  "))).unwrap(),
            "Chưng thực"
        );
        assert_eq!(text(Some(&json!(""))), None);
        assert_eq!(text(Some(&Value::Null)), None);
        assert_eq!(enum_code(Some(&json!(4))), Ok(Some(4)));
        assert_eq!(enum_code(Some(&json!(" 10 "))), Ok(Some(10)));
        assert_eq!(enum_code(Some(&json!("x"))), Err("x".to_string()));
        assert_eq!(flag(Some(&json!(1))), Some(true));
        assert_eq!(
            instant(Some(&json!("32/07/2024"))),
            Err("32/07/2024".to_string())
        );
    }

    #[test]
    fn applicant_key_is_keyed_and_stable() {
        let a = PiiKey::new(b"k1").applicant_key("046090001234");
        assert_eq!(a, PiiKey::new(b"k1").applicant_key("046090001234"));
        assert_ne!(a, PiiKey::new(b"k2").applicant_key("046090001234"));
        assert_eq!(a.len(), 64);
        assert!(!a.contains("046090001234"));
        // The key block built by hand is HMAC's own, for short and long secrets alike.
        for secret in [&b"k1"[..], &[7u8; 64][..], &[9u8; 200][..]] {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
            mac.update(b"046090001234");
            assert_eq!(
                PiiKey::new(secret).applicant_key("046090001234"),
                hex::encode(mac.finalize().into_bytes())
            );
        }
    }

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

    /// A version stamped in the future (after its run started) is replaced by whatever a
    /// later pull brings — the source's correction, stamped by its own clock, however far
    /// behind ours that runs — while an ordinary stamp still decides against older versions.
    #[test]
    fn a_future_stamp_does_not_outlive_the_correction() {
        let case = |status: i32, updated: &str| {
            json!({"MaHoSo":"A","MaDonVi":"X","TrangThaiHoSo":status,"NgayTiepNhan":"20240701080000",
                   "NgayKetThucXuLy":"20240701090000","NgayCapNhat":updated})
        };
        let stage = |old: Option<DataFrame>, run: &str, recs: Vec<Value>| {
            let mut n = Normaliser::new(PiiKey::new(b"k"), run);
            n.add_records("raw/p", &recs);
            upsert(old, n.finish().unwrap().cases).unwrap()
        };
        let status = |df: &DataFrame| df.column("status").unwrap().i32().unwrap().get(0);
        // Pulled on 2026-11-28, stamped 2099 by a clock error at the source: it replaces the
        // version staged before, as any newer version does.
        let before = stage(
            None,
            "20261127T100000000Z-aaaa",
            vec![case(2, "20240701080000")],
        );
        let future = stage(
            Some(before),
            "20261128T100000000Z-bbbb",
            vec![case(4, "20991231000000")],
        );
        assert_eq!(status(&future), Some(4));
        // Pulled again the next night, unchanged: still there.
        let again = stage(
            Some(future.clone()),
            "20261129T100000000Z-cccc",
            vec![case(4, "20991231000000")],
        );
        assert_eq!(status(&again), Some(4));
        // The correction, stamped by a source clock two years behind ours, replaces it.
        let fixed = stage(
            Some(again),
            "20261130T100000000Z-dddd",
            vec![case(9, "20241203080000")],
        );
        assert_eq!(status(&fixed), Some(9));
        assert_eq!(fixed.height(), 1);
        // Trusted again, the stamp decides: an older version arriving later does not win.
        let older = stage(
            Some(fixed),
            "20261201T100000000Z-eeee",
            vec![case(4, "20241201080000")],
        );
        assert_eq!(status(&older), Some(9));
        // Within one pull, the later of two equal stamps wins, and a greater stamp wins.
        let one = stage(
            None,
            "r",
            vec![
                case(10, "20240702000000"),
                case(9, "20240703000000"),
                case(4, "20240703000000"),
            ],
        );
        assert_eq!(status(&one), Some(4));
        // Ids that are not run ids (tests, tools) leave the stamps trusted.
        let plain = stage(None, "r1", vec![case(4, "20991231000000")]);
        let plain = stage(Some(plain), "r2", vec![case(9, "20240703080000")]);
        assert_eq!(status(&plain), Some(4));
    }

    #[test]
    fn latest_version_wins_and_rejects_never_replace() {
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r1");
        let base = json!({"MaHoSo":"A","MaDonVi":"X","TrangThaiHoSo":"4","NgayTiepNhan":"20240701080000","NgayCapNhat":"20240701090000"});
        let mut newer = base.clone();
        newer["NgayCapNhat"] = json!("20240702090000");
        newer["TrangThaiHoSo"] = json!(9);
        newer["NgayKetThucXuLy"] = json!("20240702080000");
        let mut broken = newer.clone();
        broken["NgayCapNhat"] = json!("20240703090000");
        broken["NgayTra"] = json!("31/02/2024");
        n.add_records("raw/p1", &[newer.clone(), base.clone(), broken]);
        let out = n.finish().unwrap();
        assert_eq!(out.rejects.len(), 1);
        assert_eq!(out.rejects[0].reason, "unreadable_date");
        let staged = upsert(None, out.cases).unwrap();
        assert_eq!(staged.height(), 1);
        assert_eq!(
            staged.column("status").unwrap().i32().unwrap().get(0),
            Some(9)
        );
        // A later run bringing the older version again does not move the case back.
        let mut n = Normaliser::new(PiiKey::new(b"k"), "r2");
        n.add_records("raw/p2", &[base]);
        let again = upsert(Some(staged), n.finish().unwrap().cases).unwrap();
        assert_eq!(
            again.column("status").unwrap().i32().unwrap().get(0),
            Some(9)
        );
    }
}

//! The case record of `/v1/hoso` (`source-api.md`, "The case record"), read typed straight
//! from a body: only the fields motcua uses, strings borrowed where they have no escapes.

use serde::Deserialize;
use serde_json::Value;

use super::scalar::Scalar;
use super::Envelope;

/// A `/v1/hoso` body read the typed way.
pub type CasePage<'a> = Envelope<'a, Records<'a>>;

/// The records of a page, in a vector made room for a page at once: grown by doubling, the
/// vector of a thousand records was copied ten times over and faulted in anew every page.
#[derive(Debug, Default)]
pub struct Records<'a>(pub Vec<CaseRecord<'a>>);

/// Records a page is made room for at first (the pull's pages are a thousand; more grow).
const PAGE_ROOM: usize = 1024;

impl<'de: 'a, 'a> Deserialize<'de> for Records<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Seq<'a> {
            type Value = Vec<CaseRecord<'a>>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of case records")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out =
                    Vec::with_capacity(seq.size_hint().unwrap_or(PAGE_ROOM).min(PAGE_ROOM));
                while let Some(r) = seq.next_element()? {
                    out.push(r);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(Seq(std::marker::PhantomData))
            .map(Records)
    }
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
    /// `DanhSachChuyenDonVi` (`agencies.md`): the hand-overs of the case, oldest first (read
    /// as a tree when it is not an array of objects).
    #[serde(rename = "DanhSachChuyenDonVi", borrow)]
    pub transfers: Option<Vec<TransferRecord<'a>>>,
}

/// One hand-over of `DanhSachChuyenDonVi`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TransferRecord<'a> {
    #[serde(rename = "MaDonViCu", borrow)]
    pub from: Option<Scalar<'a>>,
    #[serde(rename = "MaDonViMoi", borrow)]
    pub to: Option<Scalar<'a>>,
    #[serde(rename = "NgayChuyen", borrow)]
    pub on: Option<Scalar<'a>>,
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
            transfers: match rec.get("DanhSachChuyenDonVi") {
                Some(Value::Array(items)) => Some(
                    items
                        .iter()
                        .map(|it| TransferRecord {
                            from: Scalar::of(it.get("MaDonViCu")),
                            to: Scalar::of(it.get("MaDonViMoi")),
                            on: Scalar::of(it.get("NgayChuyen")),
                        })
                        .collect(),
                ),
                _ => None,
            },
        }
    }
}

//! The reject rules of `kpi.md` ("Terms for one case"): a record that cannot be used is
//! rejected with its reason and kept in `quality/rejects/`, never silently dropped and never
//! counted.

use std::borrow::Cow;

use chrono::NaiveDate;

use super::rules::{is_accepted, is_ended, REFUSED, WAITING};

/// A case record after normalisation (trimmed, NFC, typed, dates read in Vietnam time).
/// Instants are microseconds since the Unix epoch (UTC); `*_date` are local dates. Its text
/// is borrowed from the response body where it needed no change.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Case<'a> {
    pub case_id: Option<Cow<'a, str>>,
    pub agency_code: Option<Cow<'a, str>>,
    pub status: Option<i32>,
    /// The status as served, for reject details (`"11"`, `"abc"`).
    pub status_text: Option<Cow<'a, str>>,
    pub updated_at: Option<i64>,
    /// acc: local date of `NgayTiepNhan`.
    pub accepted_date: Option<NaiveDate>,
    /// sub: local date of `NgayNopHoSo`.
    pub submitted_date: Option<NaiveDate>,
    /// ref: local date of `NgayTuChoi`.
    pub refused_date: Option<NaiveDate>,
    /// end: local date of `NgayKetThucXuLy`, or of `NgayTra` when that is absent.
    pub end_date: Option<NaiveDate>,
    /// due: latest non-empty `NgayHenTraMoi` of the supplement requests, else `NgayHenTra`.
    pub due_date: Option<NaiveDate>,
    /// Date fields present but unreadable: `(field, value as served)`.
    pub unreadable: Vec<(String, String)>,
    /// The first hand-over that cannot be used, and why: `DanhSachChuyenDonVi[1] has no
    /// MaDonViCu`.
    pub incomplete_transfer: Option<String>,
}

/// Why a record is rejected. The codes are stable: they are published in `quality/rejects/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    MissingCaseId,
    MissingAgency,
    MissingUpdatedAt,
    UnreadableDate,
    StatusOutOfRange,
    AcceptedWithoutAcceptanceDate,
    EndedWithoutEndDate,
    WaitingWithoutSubmissionDate,
    RefusedWithoutRefusalDate,
    EndBeforeAcceptance,
    /// A hand-over of `DanhSachChuyenDonVi` without `MaDonViCu` or `NgayChuyen`: the agency
    /// that held the case before it cannot be told (`agencies.md`).
    IncompleteTransfer,
}

impl RejectReason {
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::MissingCaseId => "missing_case_id",
            RejectReason::MissingAgency => "missing_agency_code",
            RejectReason::MissingUpdatedAt => "missing_updated_at",
            RejectReason::UnreadableDate => "unreadable_date",
            RejectReason::StatusOutOfRange => "status_out_of_range",
            RejectReason::AcceptedWithoutAcceptanceDate => "accepted_without_acceptance_date",
            RejectReason::EndedWithoutEndDate => "ended_without_end_date",
            RejectReason::WaitingWithoutSubmissionDate => "waiting_without_submission_date",
            RejectReason::RefusedWithoutRefusalDate => "refused_without_refusal_date",
            RejectReason::EndBeforeAcceptance => "end_before_acceptance",
            RejectReason::IncompleteTransfer => "incomplete_transfer",
        }
    }

    pub const ALL: [RejectReason; 11] = [
        RejectReason::MissingCaseId,
        RejectReason::MissingAgency,
        RejectReason::MissingUpdatedAt,
        RejectReason::UnreadableDate,
        RejectReason::StatusOutOfRange,
        RejectReason::AcceptedWithoutAcceptanceDate,
        RejectReason::EndedWithoutEndDate,
        RejectReason::WaitingWithoutSubmissionDate,
        RejectReason::RefusedWithoutRefusalDate,
        RejectReason::EndBeforeAcceptance,
        RejectReason::IncompleteTransfer,
    ];
}

/// A broken rule: its reason and a detail naming the fields involved.
pub type Rejection = (RejectReason, String);

/// The reject rules of kpi.md, in its order. Returns the first rule the record breaks and a
/// detail naming the fields involved (never personal data: only codes and dates).
pub fn reject(case: &Case) -> Option<Rejection> {
    unusable_fields(case).or_else(|| status_and_dates(case))
}

/// The fields a record cannot do without, and dates that do not read.
fn unusable_fields(case: &Case) -> Option<Rejection> {
    use RejectReason::*;
    if case.case_id.is_none() {
        return Some((MissingCaseId, "MaHoSo is absent".into()));
    }
    if case.agency_code.is_none() {
        return Some((MissingAgency, "MaDonVi is absent".into()));
    }
    if case.updated_at.is_none() && !case.unreadable.iter().any(|(f, _)| f == "NgayCapNhat") {
        return Some((MissingUpdatedAt, "NgayCapNhat is absent".into()));
    }
    if case.unreadable.is_empty() {
        return case
            .incomplete_transfer
            .clone()
            .map(|detail| (IncompleteTransfer, detail));
    }
    let fields: Vec<String> = case
        .unreadable
        .iter()
        .map(|(f, v)| format!("{f}={v:?}"))
        .collect();
    Some((
        UnreadableDate,
        format!("not a date in any accepted shape: {}", fields.join(", ")),
    ))
}

/// A status in 1–10 and the dates it demands, in order.
fn status_and_dates(case: &Case) -> Option<Rejection> {
    use RejectReason::*;
    let status = match case.status {
        Some(s) if (1..=10).contains(&s) => s,
        _ => {
            let shown = case.status_text.as_deref().unwrap_or("absent");
            return Some((
                StatusOutOfRange,
                format!("TrangThaiHoSo={shown:?} is not 1-10"),
            ));
        }
    };
    let rules: [(bool, RejectReason, String); 4] = [
        (
            is_accepted(status) && case.accepted_date.is_none(),
            AcceptedWithoutAcceptanceDate,
            format!("status {status} without NgayTiepNhan"),
        ),
        (
            is_ended(status) && case.end_date.is_none(),
            EndedWithoutEndDate,
            format!("status {status} without NgayKetThucXuLy or NgayTra"),
        ),
        (
            status == WAITING && case.submitted_date.is_none(),
            WaitingWithoutSubmissionDate,
            "status 1 without NgayNopHoSo".into(),
        ),
        (
            status == REFUSED && case.refused_date.is_none(),
            RefusedWithoutRefusalDate,
            "status 3 without NgayTuChoi".into(),
        ),
    ];
    if let Some((_, reason, detail)) = rules.into_iter().find(|(broken, ..)| *broken) {
        return Some((reason, detail));
    }
    match (case.end_date, case.accepted_date) {
        (Some(end), Some(acc)) if end < acc => Some((
            EndBeforeAcceptance,
            format!("end {end} is before acceptance {acc}"),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Option<NaiveDate> {
        Some(s.parse().unwrap())
    }

    fn valid() -> Case<'static> {
        Case {
            case_id: Some("HS".into()),
            agency_code: Some("A".into()),
            status: Some(9),
            status_text: Some("9".into()),
            updated_at: Some(1),
            accepted_date: d("2024-07-01"),
            end_date: d("2024-07-02"),
            ..Default::default()
        }
    }

    #[test]
    fn each_reject_rule_fires_in_kpi_md_order() {
        assert_eq!(reject(&valid()), None);
        let cases: Vec<(Case<'static>, RejectReason)> = vec![
            (
                Case {
                    case_id: None,
                    agency_code: None,
                    ..valid()
                },
                RejectReason::MissingCaseId,
            ),
            (
                Case {
                    agency_code: None,
                    ..valid()
                },
                RejectReason::MissingAgency,
            ),
            (
                Case {
                    updated_at: None,
                    ..valid()
                },
                RejectReason::MissingUpdatedAt,
            ),
            (
                Case {
                    unreadable: vec![("NgayTra".into(), "32/07/2024".into())],
                    ..valid()
                },
                RejectReason::UnreadableDate,
            ),
            (
                Case {
                    status: Some(11),
                    ..valid()
                },
                RejectReason::StatusOutOfRange,
            ),
            (
                Case {
                    status: None,
                    ..valid()
                },
                RejectReason::StatusOutOfRange,
            ),
            (
                Case {
                    accepted_date: None,
                    ..valid()
                },
                RejectReason::AcceptedWithoutAcceptanceDate,
            ),
            (
                Case {
                    end_date: None,
                    ..valid()
                },
                RejectReason::EndedWithoutEndDate,
            ),
            (
                Case {
                    status: Some(1),
                    accepted_date: None,
                    end_date: None,
                    ..valid()
                },
                RejectReason::WaitingWithoutSubmissionDate,
            ),
            (
                Case {
                    status: Some(3),
                    accepted_date: None,
                    end_date: None,
                    ..valid()
                },
                RejectReason::RefusedWithoutRefusalDate,
            ),
            (
                Case {
                    end_date: d("2024-06-30"),
                    ..valid()
                },
                RejectReason::EndBeforeAcceptance,
            ),
            (
                Case {
                    incomplete_transfer: Some("DanhSachChuyenDonVi[0] has no MaDonViCu".into()),
                    status: Some(11),
                    ..valid()
                },
                RejectReason::IncompleteTransfer,
            ),
        ];
        for (case, want) in cases {
            assert_eq!(reject(&case).map(|r| r.0), Some(want), "{case:?}");
        }
    }

    #[test]
    fn an_unreadable_updated_at_is_unreadable_not_missing() {
        let c = Case {
            updated_at: None,
            unreadable: vec![("NgayCapNhat".into(), "x".into())],
            ..valid()
        };
        assert_eq!(reject(&c).unwrap().0, RejectReason::UnreadableDate);
    }
}

//! The domain rules of `kpi.md`, in one place and in its order: terms, reject rules, measures,
//! rates and identities. Read this file side by side with `../shared/spec/kpi.md`.
//!
//! Reject rules run on one normalised record ([`Case`]); measures, rates and identities are
//! polars expressions over the staging table, so the KPI stage is one typed lazy plan.

use chrono::NaiveDate;
use polars::prelude::*;

// ---------------------------------------------------------------------------------------------
// TrangThaiHoSo (source-api.md)
// ---------------------------------------------------------------------------------------------

/// 1 Mới đăng ký: submitted online, not yet accepted.
pub const WAITING: i32 = 1;
/// 3 Không được tiếp nhận: refused at the desk.
pub const REFUSED: i32 = 3;
/// 7 Công dân yêu cầu rút hồ sơ: withdrawn by the applicant.
pub const WITHDRAWN: i32 = 7;
/// 8 Dừng xử lý: processing stopped.
pub const STOPPED: i32 = 8;
/// 9 Đã xử lý xong and 10 Đã trả kết quả: resolved.
pub const PROCESSED: i32 = 9;
pub const RETURNED: i32 = 10;
/// `KenhThucHien` 2: online.
pub const ONLINE: i32 = 2;

/// accepted: status is not 1 and not 3.
pub fn is_accepted(status: i32) -> bool {
    status != WAITING && status != REFUSED
}

/// ended: status is 7, 8, 9 or 10.
pub fn is_ended(status: i32) -> bool {
    (WITHDRAWN..=RETURNED).contains(&status)
}

// ---------------------------------------------------------------------------------------------
// One case, normalised: the terms of kpi.md are its local dates.
// ---------------------------------------------------------------------------------------------

/// A case record after normalisation (trimmed, NFC, typed, dates read in Vietnam time).
/// Instants are microseconds since the Unix epoch (UTC); `*_date` are local dates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Case {
    pub case_id: Option<String>,
    pub agency_code: Option<String>,
    pub status: Option<i32>,
    /// The status as served, for reject details (`"11"`, `"abc"`).
    pub status_text: Option<String>,
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
        }
    }

    pub const ALL: [RejectReason; 10] = [
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
    ];
}

/// The reject rules of kpi.md, in its order. Returns the first rule the record breaks and a
/// detail naming the fields involved (never personal data: only codes and dates).
pub fn reject(case: &Case) -> Option<(RejectReason, String)> {
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
    if !case.unreadable.is_empty() {
        let fields: Vec<String> = case
            .unreadable
            .iter()
            .map(|(f, v)| format!("{f}={v:?}"))
            .collect();
        return Some((
            UnreadableDate,
            format!("not a date in any accepted shape: {}", fields.join(", ")),
        ));
    }
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
    if is_accepted(status) && case.accepted_date.is_none() {
        return Some((
            AcceptedWithoutAcceptanceDate,
            format!("status {status} without NgayTiepNhan"),
        ));
    }
    if is_ended(status) && case.end_date.is_none() {
        return Some((
            EndedWithoutEndDate,
            format!("status {status} without NgayKetThucXuLy or NgayTra"),
        ));
    }
    if status == WAITING && case.submitted_date.is_none() {
        return Some((
            WaitingWithoutSubmissionDate,
            "status 1 without NgayNopHoSo".into(),
        ));
    }
    if status == REFUSED && case.refused_date.is_none() {
        return Some((
            RefusedWithoutRefusalDate,
            "status 3 without NgayTuChoi".into(),
        ));
    }
    if let (Some(end), Some(acc)) = (case.end_date, case.accepted_date) {
        if end < acc {
            return Some((
                EndBeforeAcceptance,
                format!("end {end} is before acceptance {acc}"),
            ));
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Terms over the staging table (column names of `cases/`).
// ---------------------------------------------------------------------------------------------

fn status() -> Expr {
    col("status")
}
fn acc() -> Expr {
    col("accepted_date")
}
fn sub() -> Expr {
    col("submitted_date")
}
fn refd() -> Expr {
    col("refused_date")
}
fn end() -> Expr {
    col("end_date")
}
fn due() -> Expr {
    col("due_date")
}

/// A `Date` literal (`lit(NaiveDate)` alone is a nanosecond timestamp in polars 0.55).
pub fn date(d: NaiveDate) -> Expr {
    lit(d).cast(DataType::Date)
}

/// A null-safe boolean: a comparison with an absent date is false.
fn t(e: Expr) -> Expr {
    e.fill_null(lit(false))
}

fn status_is(codes: &[i32]) -> Expr {
    codes
        .iter()
        .fold(lit(false), |any, c| any.or(status().eq(lit(*c))))
}

/// accepted: status is not 1 and not 3.
pub fn accepted() -> Expr {
    t(status().neq(lit(WAITING)).and(status().neq(lit(REFUSED))))
}

/// ended: status is 7, 8, 9 or 10.
pub fn ended() -> Expr {
    t(status_is(&[WITHDRAWN, STOPPED, PROCESSED, RETURNED]))
}

fn within(e: Expr, f: NaiveDate, l: NaiveDate) -> Expr {
    t(e.clone().gt_eq(date(f)).and(e.lt_eq(date(l))))
}

/// The terms of kpi.md that several measures share, for one period F … L: each a boolean per
/// case. [`Terms::defined`] holds their definitions over the staging columns; the KPI stage
/// evaluates those once per case into columns ([`Terms::named`]) and the measures then read
/// the columns ([`Terms::columns`]), so no condition is computed twice.
#[derive(Clone)]
pub struct Terms {
    /// accepted: status is not 1 and not 3.
    pub accepted: Expr,
    /// ended: status is 7, 8, 9 or 10.
    pub ended: Expr,
    /// accepted, F ≤ acc ≤ L (received_new).
    pub received_new: Expr,
    /// status 9 or 10, F ≤ end ≤ L (resolved in the period, withdrawals aside).
    pub resolved: Expr,
    /// accepted, acc ≤ L, and not (ended with end ≤ L).
    pub in_progress: Expr,
    /// F ≤ end ≤ L.
    pub end_in_period: Expr,
    /// channel 2; absent counts as in person.
    pub online: Expr,
}

const TERM_NAMES: [&str; 7] = [
    "accepted",
    "ended",
    "received_new",
    "resolved",
    "in_progress",
    "end_in_period",
    "online",
];

impl Terms {
    /// The terms over the staging columns for the period F … L.
    pub fn defined(f: NaiveDate, l: NaiveDate) -> Terms {
        let end_in_period = within(end(), f, l);
        Terms {
            accepted: accepted(),
            ended: ended(),
            received_new: accepted().and(within(acc(), f, l)),
            resolved: t(status_is(&[PROCESSED, RETURNED])).and(end_in_period.clone()),
            in_progress: accepted()
                .and(t(acc().lt_eq(date(l))))
                .and(ended().and(t(end().lt_eq(date(l)))).not()),
            end_in_period,
            online: t(col("channel").eq(lit(ONLINE))),
        }
    }

    fn all(self) -> [Expr; 7] {
        [
            self.accepted,
            self.ended,
            self.received_new,
            self.resolved,
            self.in_progress,
            self.end_in_period,
            self.online,
        ]
    }

    /// The definitions as columns named `_<term><suffix>`.
    pub fn named(self, suffix: &str) -> Vec<Expr> {
        self.all()
            .into_iter()
            .zip(TERM_NAMES)
            .map(|(e, n)| e.alias(format!("_{n}{suffix}")))
            .collect()
    }

    /// The terms read from the columns [`Terms::named`] wrote.
    pub fn columns(suffix: &str) -> Terms {
        let c = |n: &str| col(format!("_{n}{suffix}"));
        Terms {
            accepted: c("accepted"),
            ended: c("ended"),
            received_new: c("received_new"),
            resolved: c("resolved"),
            in_progress: c("in_progress"),
            end_in_period: c("end_in_period"),
            online: c("online"),
        }
    }
}

/// The measures of kpi.md for the period F … L: `(name, condition on one case)`, written over
/// the shared terms `t` of that period. Each measure counts the cases whose condition is true.
/// The order is the output column order.
pub fn measures(f: NaiveDate, l: NaiveDate, t_: &Terms) -> Vec<(&'static str, Expr)> {
    let Terms {
        accepted,
        ended,
        received_new,
        resolved,
        in_progress,
        end_in_period,
        online,
    } = t_.clone();
    vec![
        // 4: accepted, F ≤ acc ≤ L, channel 2
        ("received_online", received_new.clone().and(online.clone())),
        // 5: accepted, F ≤ acc ≤ L, channel not 2 (absent counts as in person)
        ("received_offline", received_new.clone().and(online.not())),
        // 4+5
        ("received_new", received_new.clone()),
        // 6: accepted, acc < F, and not (ended with end < F)
        (
            "carried_over",
            accepted
                .and(t(acc().lt(date(f))))
                .and(ended.and(t(end().lt(date(f)))).not()),
        ),
        // 3: received_new + carried_over (summed below, listed here for column order)
        ("received_total", lit(false)),
        // 7: status 7, 9 or 10, F ≤ end ≤ L
        (
            "resolved_total",
            t(status_is(&[WITHDRAWN, PROCESSED, RETURNED])).and(end_in_period.clone()),
        ),
        // 8: status 9 or 10, F ≤ end ≤ L, due present, end < due
        ("resolved_early", resolved.clone().and(t(end().lt(due())))),
        // 9: status 9 or 10, F ≤ end ≤ L, due absent or end = due
        (
            "resolved_on_time",
            resolved.clone().and(due().is_null().or(t(end().eq(due())))),
        ),
        // 10: status 9 or 10, F ≤ end ≤ L, due present, end > due
        ("resolved_overdue", resolved.clone().and(t(end().gt(due())))),
        // resolved_overdue and supplemented
        (
            "resolved_overdue_excused",
            resolved
                .and(t(end().gt(due())))
                .and(t(col("supplement_requests").gt(lit(0i64)))),
        ),
        // status 7, F ≤ end ≤ L
        (
            "resolved_withdrawn",
            t(status().eq(lit(WITHDRAWN))).and(end_in_period.clone()),
        ),
        // status 8, F ≤ end ≤ L
        ("stopped", t(status().eq(lit(STOPPED))).and(end_in_period)),
        // 11: accepted, acc ≤ L, and not (ended with end ≤ L)
        ("in_progress_total", in_progress.clone()),
        // 12: in progress, due absent or due ≥ L
        (
            "in_progress_within",
            in_progress
                .clone()
                .and(due().is_null().or(t(due().gt_eq(date(l))))),
        ),
        // 13: in progress, due present, due < L
        ("in_progress_overdue", in_progress.and(t(due().lt(date(l))))),
        // sub ≤ L, not (acc present and acc ≤ L), not (ref present and ref ≤ L)
        (
            "waiting_acceptance",
            t(sub().lt_eq(date(l)))
                .and(t(acc().lt_eq(date(l))).not())
                .and(t(refd().lt_eq(date(l))).not()),
        ),
        // status 3, F ≤ ref ≤ L
        (
            "refused",
            t(status().eq(lit(REFUSED))).and(within(refd(), f, l)),
        ),
        // counted in received_new and DuocThanhToanTrucTuyen = 1
        (
            "paid_online",
            received_new.clone().and(t(col("paid_online"))),
        ),
        // counted in received_new and HoSoCoThanhPhanSoHoa = 1
        ("digitized", received_new.and(t(col("digitized")))),
    ]
}

/// Names of the count columns, in output order.
pub fn measure_names() -> Vec<&'static str> {
    let d = NaiveDate::default();
    measures(d, d, &Terms::defined(d, d))
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// The measures counted per case (received_total aside: it is the sum of two others, added
/// after aggregation by [`received_total`]).
pub fn counted(f: NaiveDate, l: NaiveDate, terms: &Terms) -> Vec<(&'static str, Expr)> {
    measures(f, l, terms)
        .into_iter()
        .filter(|(n, _)| *n != "received_total")
        .collect()
}

/// received_total = received_new + carried_over, applied after aggregation.
pub fn received_total() -> Expr {
    (col("received_new") + col("carried_over")).alias("received_total")
}

fn ratio(num: Expr, den: Expr) -> Expr {
    when(den.clone().eq(lit(0i64)))
        .then(lit(NULL).cast(DataType::Float64))
        .otherwise(num.cast(DataType::Float64) / den.cast(DataType::Float64))
}

/// The rates of kpi.md over counted columns: fractions in [0, 1], null when the denominator is 0.
pub fn rates() -> Vec<Expr> {
    let early_on_time = col("resolved_early") + col("resolved_on_time");
    vec![
        ratio(col("received_online"), col("received_new")).alias("online_rate"),
        ratio(
            early_on_time.clone(),
            early_on_time.clone() + col("resolved_overdue") - col("resolved_overdue_excused"),
        )
        .alias("on_time_rate"),
        ratio(
            early_on_time.clone() + col("in_progress_within"),
            early_on_time + col("resolved_overdue") + col("in_progress_total"),
        )
        .alias("progress_rate_766"),
    ]
}

/// The three identities of kpi.md, each true on a correct row.
pub fn identities() -> Vec<(&'static str, Expr)> {
    vec![
        (
            "received_total = resolved_total + stopped + in_progress_total",
            col("received_total").eq(col("resolved_total") + col("stopped") + col("in_progress_total")),
        ),
        (
            "resolved_total = resolved_early + resolved_on_time + resolved_overdue + resolved_withdrawn",
            col("resolved_total").eq(col("resolved_early")
                + col("resolved_on_time")
                + col("resolved_overdue")
                + col("resolved_withdrawn")),
        ),
        (
            "in_progress_total = in_progress_within + in_progress_overdue",
            col("in_progress_total").eq(col("in_progress_within") + col("in_progress_overdue")),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Levels
// ---------------------------------------------------------------------------------------------

/// An agency's `Cap` as a level name; `unknown` when the agency is not in the catalog.
pub fn level_name(cap: Option<i32>) -> &'static str {
    match cap {
        Some(1) => "province",
        Some(2) => "district",
        Some(3) => "commune",
        _ => "unknown",
    }
}

/// The order rows appear in: the three levels, `unknown`, then the roll-up `all`.
pub const LEVEL_ORDER: [&str; 5] = ["province", "district", "commune", "unknown", "all"];

// ---------------------------------------------------------------------------------------------
// Procedure-catalog measures: computed in `kpi::catalog_by_level`, defined here.
// ---------------------------------------------------------------------------------------------

/// The catalog measures, in output order: procedures; `MotCua` = 1; `LienThong` = 1;
/// `MucDoDVC` = 2; `MucDoDVC` = 1; at least one case in received_new at the level.
pub const CATALOG_MEASURES: [&str; 6] = [
    "procedures",
    "one_stop",
    "inter_agency",
    "online_full",
    "online_partial",
    "with_cases",
];

/// `MucDoDVC` 2: full online (toàn trình); 1: partly online.
pub const ONLINE_FULL: i32 = 2;
pub const ONLINE_PARTIAL: i32 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Option<NaiveDate> {
        Some(s.parse().unwrap())
    }

    fn valid() -> Case {
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
        let cases: Vec<(Case, RejectReason)> = vec![
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

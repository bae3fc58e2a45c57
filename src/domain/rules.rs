//! The domain rules of `kpi.md`, in its order: the statuses, the terms for one case, the
//! measures of a period, the rates, the identities and the procedure-catalog measures. Read
//! this file side by side with `../shared/spec/kpi.md`; its reject rules are in
//! [`super::reject`], its periods in [`super::period`], its levels in [`super::level`].
//!
//! Measures, rates and identities are polars expressions over the staging table, so the KPI
//! stage is one typed lazy plan.

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

/// A measure: its column name and the condition a case meets to be counted.
pub type Measure = (&'static str, Expr);

/// The measures of kpi.md for the period F … L: `(name, condition on one case)`, written over
/// the shared terms `t` of that period. Each measure counts the cases whose condition is true.
/// The order is the output column order, which is kpi.md's table order.
pub fn measures(f: NaiveDate, l: NaiveDate, t: &Terms) -> Vec<Measure> {
    let mut all = received(f, t);
    all.extend(resolved(t));
    all.extend(in_progress_and_other(f, l, t));
    all
}

/// Columns 3–6: what was received.
fn received(f: NaiveDate, t_: &Terms) -> Vec<Measure> {
    let Terms {
        accepted,
        ended,
        received_new,
        online,
        ..
    } = t_.clone();
    vec![
        // 4: accepted, F ≤ acc ≤ L, channel 2
        ("received_online", received_new.clone().and(online.clone())),
        // 5: accepted, F ≤ acc ≤ L, channel not 2 (absent counts as in person)
        ("received_offline", received_new.clone().and(online.not())),
        // 4+5
        ("received_new", received_new),
        // 6: accepted, acc < F, and not (ended with end < F)
        (
            "carried_over",
            accepted
                .and(t(acc().lt(date(f))))
                .and(ended.and(t(end().lt(date(f)))).not()),
        ),
        // 3: received_new + carried_over (summed after counting, listed here for column order)
        ("received_total", lit(false)),
    ]
}

/// Columns 7–10 and the other endings of a case in the period.
fn resolved(t_: &Terms) -> Vec<Measure> {
    let Terms {
        resolved,
        end_in_period,
        ..
    } = t_.clone();
    vec![
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
    ]
}

/// Columns 11–13, then waiting, refused, paid online and digitized.
fn in_progress_and_other(f: NaiveDate, l: NaiveDate, t_: &Terms) -> Vec<Measure> {
    let Terms {
        received_new,
        in_progress,
        ..
    } = t_.clone();
    vec![
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

/// `num / den` as a fraction, null when the denominator is 0.
pub fn ratio(num: Expr, den: Expr) -> Expr {
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

    /// Each measure over a handful of cases, against the counts `kpi.md` gives by hand.
    #[test]
    fn measures_count_what_kpi_md_says() {
        let d = |s: &str| s.parse::<NaiveDate>().ok();
        let dates =
            |v: Vec<Option<NaiveDate>>| Series::new("x".into(), v).cast(&DataType::Date).unwrap();
        // A: received online in the period, resolved early. B: carried over, in progress and
        // overdue. C: waiting. D: refused in the period. E: withdrawn.
        let df = DataFrame::new(
            5,
            vec![
                Column::new("status".into(), [9, 4, 1, 3, 7]),
                Column::new("channel".into(), [Some(2), Some(1), Some(2), None, Some(1)]),
                dates(vec![
                    d("2024-07-01"),
                    d("2024-05-01"),
                    None,
                    None,
                    d("2024-07-03"),
                ])
                .with_name("accepted_date".into())
                .into(),
                dates(vec![
                    d("2024-07-01"),
                    d("2024-05-01"),
                    d("2024-09-01"),
                    d("2024-07-02"),
                    d("2024-07-03"),
                ])
                .with_name("submitted_date".into())
                .into(),
                dates(vec![None, None, None, d("2024-07-02"), None])
                    .with_name("refused_date".into())
                    .into(),
                dates(vec![d("2024-07-02"), None, None, None, d("2024-07-05")])
                    .with_name("end_date".into())
                    .into(),
                dates(vec![d("2024-07-05"), d("2024-06-01"), None, None, None])
                    .with_name("due_date".into())
                    .into(),
                Column::new("supplement_requests".into(), [0i64, 0, 0, 0, 0]),
                Column::new("paid_online".into(), [Some(true), None, None, None, None]),
                Column::new(
                    "digitized".into(),
                    [Some(true), Some(true), None, None, None],
                ),
            ],
        )
        .unwrap();
        let (f, l) = (d("2024-06-15").unwrap(), d("2024-09-14").unwrap());
        let terms = Terms::defined(f, l);
        let sums: Vec<Expr> = counted(f, l, &terms)
            .into_iter()
            .map(|(n, e)| e.cast(DataType::Int64).sum().alias(n))
            .collect();
        let out = df
            .lazy()
            .select(sums)
            .with_column(received_total())
            .collect()
            .unwrap();
        let got = |n: &str| out.column(n).unwrap().i64().unwrap().get(0).unwrap();
        for (n, want) in [
            ("received_online", 1),
            ("received_offline", 1),
            ("received_new", 2),
            ("carried_over", 1),
            ("received_total", 3),
            ("resolved_total", 2),
            ("resolved_early", 1),
            ("resolved_withdrawn", 1),
            ("in_progress_total", 1),
            ("in_progress_overdue", 1),
            ("in_progress_within", 0),
            ("waiting_acceptance", 1),
            ("refused", 1),
            ("paid_online", 1),
            ("digitized", 1),
        ] {
            assert_eq!(got(n), want, "{n}");
        }
        assert_eq!(measure_names().len(), counted(f, l, &terms).len() + 1);
    }
}

//! The domain rules of `kpi.md`, in its order: the statuses, the terms for one case, the
//! measures of a period, the rates, the identities and the procedure-catalog measures. Read
//! this file side by side with `../shared/spec/kpi.md`; its reject rules are in
//! [`super::reject`], its periods in [`super::period`], its levels in [`super::level`].
//!
//! The measures are plain functions of one case ([`counted`]), which the KPI stage applies to
//! every staged case as it reads them; the rates and identities are polars expressions over
//! the counted rows of a table.

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
// One case, as the measures read it (the staging columns of `cases/`).
// ---------------------------------------------------------------------------------------------

/// A case's status, channel, dates (days since 1970-01-01, local), supplement requests and
/// flags. `None` is absent; a comparison with an absent value is false.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Case {
    pub status: Option<i32>,
    pub channel: Option<i32>,
    /// sub: `submitted_date`.
    pub sub: Option<i32>,
    /// acc: `accepted_date`.
    pub acc: Option<i32>,
    /// ref: `refused_date`.
    pub refd: Option<i32>,
    /// end: `end_date`.
    pub end: Option<i32>,
    /// due: `due_date`.
    pub due: Option<i32>,
    pub supplement_requests: Option<i64>,
    pub paid_online: Option<bool>,
    pub digitized: Option<bool>,
}

/// A period F … L, as days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub f: i32,
    pub l: i32,
}

impl Bounds {
    pub fn of(p: &crate::domain::period::Period) -> Bounds {
        Bounds {
            f: days(p.start),
            l: days(p.end),
        }
    }
}

/// Days since 1970-01-01 (a polars `Date`).
pub fn days(d: NaiveDate) -> i32 {
    (d - NaiveDate::default()).num_days() as i32
}

impl Case {
    /// accepted: status is not 1 and not 3.
    pub fn accepted(&self) -> bool {
        self.status.is_some_and(is_accepted)
    }

    /// ended: status is 7, 8, 9 or 10.
    pub fn ended(&self) -> bool {
        self.status.is_some_and(is_ended)
    }

    /// The day the case counts on in period F … L (`agencies.md`): its end when it ended on or
    /// before L, else L.
    pub fn attribution_day(&self, p: Bounds) -> i32 {
        counted_on(self, p).1
    }
}

use super::logic::OneCase;
pub use super::logic::{Flag, Logic, Val};

/// A `Date` literal (`lit(NaiveDate)` alone is a nanosecond timestamp in polars 0.55).
pub fn date(d: NaiveDate) -> Expr {
    lit(d).cast(DataType::Date)
}

/// The measures of kpi.md, in output (and kpi.md's table) order.
pub const MEASURES: [&str; 19] = [
    "received_online",
    "received_offline",
    "received_new",
    "carried_over",
    "received_total",
    "resolved_total",
    "resolved_early",
    "resolved_on_time",
    "resolved_overdue",
    "resolved_overdue_excused",
    "resolved_withdrawn",
    "stopped",
    "in_progress_total",
    "in_progress_within",
    "in_progress_overdue",
    "waiting_acceptance",
    "refused",
    "paid_online",
    "digitized",
];

/// The measures counted case by case: all but received_total, the sum of two others.
pub const COUNTED: usize = 18;

/// Names of the count columns, in output order.
pub fn measure_names() -> Vec<&'static str> {
    MEASURES.to_vec()
}

/// Names of the counted measures, in the order of [`counted`].
pub fn counted_names() -> Vec<&'static str> {
    MEASURES
        .iter()
        .copied()
        .filter(|n| *n != "received_total")
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The measures, written once over a [`Logic`]: evaluated on one case ([`counted`], the KPI
// stage) and rendered as SQL (`crate::sql`, `motcua sql`) from the same text below.
// ---------------------------------------------------------------------------------------------

/// The terms of kpi.md that several measures share (and attribution reads).
#[derive(Debug, Clone, PartialEq)]
pub struct Terms<B> {
    /// accepted: status is not 1 and not 3.
    pub accepted: B,
    /// ended: status is 7, 8, 9 or 10.
    pub ended: B,
    /// received_new: accepted, F ≤ acc ≤ L.
    pub received_new: B,
    /// F ≤ end ≤ L.
    pub end_in_period: B,
    /// resolved: status 9 or 10, F ≤ end ≤ L (withdrawals aside).
    pub resolved: B,
    /// in progress: accepted, acc ≤ L, and not (ended with end ≤ L).
    pub in_progress: B,
    /// online: channel 2; absent counts as in person.
    pub online: B,
    /// resolved, due present, end > due.
    pub overdue: B,
    /// ended with end ≤ L: the case counts on its end, else on L (`agencies.md`).
    pub ended_by_l: B,
}

/// The shared terms of one case in the period.
pub fn terms<X: Logic>(x: &X) -> Terms<X::B> {
    use Val::*;
    let accepted = x.and(
        x.not(x.absent(Status)),
        x.not(x.status_in(&[WAITING, REFUSED])),
    );
    let ended = x.status_in(&[WITHDRAWN, STOPPED, PROCESSED, RETURNED]);
    let received_new = x.and(accepted.clone(), x.within(Acc));
    let end_in_period = x.within(End);
    let resolved = x.and(x.status_in(&[PROCESSED, RETURNED]), end_in_period.clone());
    let ended_by_l = x.and(ended.clone(), x.le(End, L));
    let in_progress = x.and(
        x.and(accepted.clone(), x.le(Acc, L)),
        x.not(ended_by_l.clone()),
    );
    Terms {
        online: x.eq(Channel, Int(ONLINE)),
        overdue: x.and(resolved.clone(), x.lt(Due, End)),
        accepted,
        ended,
        received_new,
        end_in_period,
        resolved,
        in_progress,
        ended_by_l,
    }
}

/// The counted measures ([`counted_names`]) of one case, from its terms `t`.
pub fn measures<X: Logic>(x: &X, t: &Terms<X::B>) -> [X::B; COUNTED] {
    use Val::*;
    let and = |a: &X::B, b: X::B| x.and(a.clone(), b);
    [
        // 4 received_online: accepted, F ≤ acc ≤ L, channel 2
        and(&t.received_new, t.online.clone()),
        // 5 received_offline: accepted, F ≤ acc ≤ L, channel not 2
        and(&t.received_new, x.not(t.online.clone())),
        // 4+5 received_new
        t.received_new.clone(),
        // 6 carried_over: accepted, acc < F, and not (ended with end < F)
        and(
            &t.accepted,
            x.and(x.lt(Acc, F), x.not(x.and(t.ended.clone(), x.lt(End, F)))),
        ),
        // 7 resolved_total: status 7, 9 or 10, F ≤ end ≤ L
        and(
            &t.end_in_period,
            x.status_in(&[WITHDRAWN, PROCESSED, RETURNED]),
        ),
        // 8 resolved_early: resolved, due present, end < due
        and(&t.resolved, x.lt(End, Due)),
        // 9 resolved_on_time: resolved, due absent or end = due
        and(&t.resolved, x.or(x.absent(Due), x.eq(End, Due))),
        // 10 resolved_overdue: resolved, due present, end > due
        t.overdue.clone(),
        // resolved_overdue_excused: overdue, and the applicant was asked to supplement
        and(&t.overdue, x.lt(Int(0), SupplementRequests)),
        // resolved_withdrawn: status 7, F ≤ end ≤ L
        and(&t.end_in_period, x.status_in(&[WITHDRAWN])),
        // stopped: status 8, F ≤ end ≤ L
        and(&t.end_in_period, x.status_in(&[STOPPED])),
        // 11 in_progress_total
        t.in_progress.clone(),
        // 12 in_progress_within: in progress, due absent or due ≥ L
        and(&t.in_progress, x.or(x.absent(Due), x.le(L, Due))),
        // 13 in_progress_overdue: in progress, due present, due < L
        and(&t.in_progress, x.lt(Due, L)),
        // waiting_acceptance: sub ≤ L, not (acc ≤ L), not (ref ≤ L)
        x.and(
            x.le(Sub, L),
            x.and(x.not(x.le(Acc, L)), x.not(x.le(Ref, L))),
        ),
        // refused: status 3, F ≤ ref ≤ L
        x.and(x.status_in(&[REFUSED]), x.within(Ref)),
        // paid_online: in received_new, DuocThanhToanTrucTuyen = 1
        and(&t.received_new, x.flag(Flag::PaidOnline)),
        // digitized: in received_new, HoSoCoThanhPhanSoHoa = 1
        and(&t.received_new, x.flag(Flag::Digitized)),
    ]
}

/// Which of the counted measures ([`counted_names`]) case `c` meets in the period `p`, and the
/// day it counts on there (`agencies.md`).
#[inline]
pub fn counted_on(c: &Case, p: Bounds) -> ([bool; COUNTED], i32) {
    let x = OneCase { c, p };
    let t = terms(&x);
    let day = match c.end {
        Some(e) if t.ended_by_l => e,
        _ => p.l,
    };
    (measures(&x, &t), day)
}

/// Every measure of a period F … L needs one of these dates on or before L: a case whose four
/// are absent or after L ([`may_count`] false) counts as one of which nothing is known
/// ([`Case::default`]), on L.
pub const COUNTING_DATES: [&str; 4] = [
    "submitted_date",
    "accepted_date",
    "refused_date",
    "end_date",
];

/// Whether case `c` has one of its [`COUNTING_DATES`] on or before `l`.
pub fn may_count(c: &Case, l: i32) -> bool {
    [c.sub, c.acc, c.refd, c.end]
        .iter()
        .any(|d| d.is_some_and(|d| d <= l))
}

/// Which of the counted measures ([`counted_names`]) case `c` meets in the period `p`.
pub fn counted(c: &Case, p: Bounds) -> [bool; COUNTED] {
    counted_on(c, p).0
}

/// Index of received_new in [`counted`] (catalog measures count procedures used by it).
pub const RECEIVED_NEW: usize = 2;

/// received_total = received_new + carried_over ([`RECEIVED_TOTAL`]), after aggregation.
pub fn received_total() -> Expr {
    sum_expr(RECEIVED_TOTAL.1).alias(RECEIVED_TOTAL.0)
}

/// `num / den` as a fraction, null when the denominator is 0 (or either is null).
///
/// Computed value by value rather than as `when(den == 0).then(null)`: polars makes its first
/// null array of a process by zeroing an 8 MiB region it keeps for ever (`Buffer::zeroed`),
/// a tenth of the memory a cold one-million-case KPI run touched.
pub fn ratio(num: Expr, den: Expr) -> Expr {
    map_multiple(
        |c: &mut [Column]| {
            let [num, den] = c else {
                polars_bail!(ComputeError: "a ratio takes 2 columns, not {}", c.len());
            };
            let (num, den) = (num.cast(&DataType::Float64)?, den.cast(&DataType::Float64)?);
            let fraction: Float64Chunked = num
                .f64()?
                .iter()
                .zip(den.f64()?.iter())
                .map(|(n, d)| match (n, d) {
                    (Some(n), Some(d)) if d != 0.0 => Some(n / d),
                    _ => None,
                })
                .collect();
            Ok(fraction.with_name(num.name().clone()).into_column())
        },
        [num, den],
        |_: &Schema, f: &[Field]| {
            let name = f.first().map(|f| f.name().clone()).unwrap_or_default();
            Ok(Field::new(name, DataType::Float64))
        },
    )
}

/// A sum of count columns, each added (`+1`) or subtracted (`-1`).
pub type Sum = &'static [(i64, &'static str)];

/// The rates of kpi.md, as numerator and denominator sums of count columns: fractions in
/// [0, 1], null when the denominator is 0. [`rates`] makes them polars expressions,
/// `crate::sql` SQL.
pub const RATES: [(&str, Sum, Sum); 3] = [
    (
        "online_rate",
        &[(1, "received_online")],
        &[(1, "received_new")],
    ),
    (
        "on_time_rate",
        &[(1, "resolved_early"), (1, "resolved_on_time")],
        &[
            (1, "resolved_early"),
            (1, "resolved_on_time"),
            (1, "resolved_overdue"),
            (-1, "resolved_overdue_excused"),
        ],
    ),
    (
        "progress_rate_766",
        &[
            (1, "resolved_early"),
            (1, "resolved_on_time"),
            (1, "in_progress_within"),
        ],
        &[
            (1, "resolved_early"),
            (1, "resolved_on_time"),
            (1, "resolved_overdue"),
            (1, "in_progress_total"),
        ],
    ),
];

/// received_total, the one measure that is a sum of two others.
pub const RECEIVED_TOTAL: (&str, Sum) = (
    "received_total",
    &[(1, "received_new"), (1, "carried_over")],
);

/// A [`Sum`] of count columns as a polars expression.
fn sum_expr(sum: Sum) -> Expr {
    sum.iter()
        .skip(1)
        .fold(col(sum[0].1), |acc, (sign, name)| match sign {
            -1 => acc - col(*name),
            _ => acc + col(*name),
        })
}

/// The rates of kpi.md over counted columns ([`RATES`]).
pub fn rates() -> Vec<Expr> {
    RATES
        .iter()
        .map(|(name, num, den)| ratio(sum_expr(num), sum_expr(den)).alias(*name))
        .collect()
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
mod tests;

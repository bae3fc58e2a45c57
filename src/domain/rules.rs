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

    /// F ≤ d ≤ L.
    fn within(&self, d: Option<i32>) -> bool {
        d.is_some_and(|d| self.f <= d && d <= self.l)
    }
}

/// Days since 1970-01-01 (a polars `Date`).
pub fn days(d: NaiveDate) -> i32 {
    (d - NaiveDate::default()).num_days() as i32
}

/// a < b, both present.
fn lt(a: Option<i32>, b: Option<i32>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a < b)
}

/// a ≤ b, both present.
fn le(a: Option<i32>, b: Option<i32>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a <= b)
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

    fn status_in(&self, codes: &[i32]) -> bool {
        self.status.is_some_and(|s| codes.contains(&s))
    }

    /// The day the case counts on in period F … L (`agencies.md`): its end when it ended on or
    /// before L, else L.
    pub fn attribution_day(&self, p: Bounds) -> i32 {
        match self.end {
            Some(e) if self.ended() && e <= p.l => e,
            _ => p.l,
        }
    }
}

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

/// Which of the counted measures ([`counted_names`]) case `c` meets in the period `p`.
pub fn counted(c: &Case, p: Bounds) -> [bool; COUNTED] {
    let l = Some(p.l);
    // The terms of kpi.md that several measures share.
    let accepted = c.accepted();
    let ended = c.ended();
    // received_new: accepted, F ≤ acc ≤ L
    let received_new = accepted && p.within(c.acc);
    // F ≤ end ≤ L
    let end_in_period = p.within(c.end);
    // resolved: status 9 or 10, F ≤ end ≤ L (withdrawals aside)
    let resolved = c.status_in(&[PROCESSED, RETURNED]) && end_in_period;
    // in progress: accepted, acc ≤ L, and not (ended with end ≤ L)
    let in_progress = accepted && le(c.acc, l) && !(ended && le(c.end, l));
    // online: channel 2; absent counts as in person
    let online = c.channel == Some(ONLINE);
    let overdue = resolved && lt(c.due, c.end);
    [
        // 4 received_online: accepted, F ≤ acc ≤ L, channel 2
        received_new && online,
        // 5 received_offline: accepted, F ≤ acc ≤ L, channel not 2
        received_new && !online,
        // 4+5 received_new
        received_new,
        // 6 carried_over: accepted, acc < F, and not (ended with end < F)
        accepted && lt(c.acc, Some(p.f)) && !(ended && lt(c.end, Some(p.f))),
        // 7 resolved_total: status 7, 9 or 10, F ≤ end ≤ L
        c.status_in(&[WITHDRAWN, PROCESSED, RETURNED]) && end_in_period,
        // 8 resolved_early: resolved, due present, end < due
        resolved && lt(c.end, c.due),
        // 9 resolved_on_time: resolved, due absent or end = due
        resolved && (c.due.is_none() || (c.end.is_some() && c.end == c.due)),
        // 10 resolved_overdue: resolved, due present, end > due
        overdue,
        // resolved_overdue_excused: overdue, and the applicant was asked to supplement
        overdue && c.supplement_requests.is_some_and(|n| n > 0),
        // resolved_withdrawn: status 7, F ≤ end ≤ L
        c.status == Some(WITHDRAWN) && end_in_period,
        // stopped: status 8, F ≤ end ≤ L
        c.status == Some(STOPPED) && end_in_period,
        // 11 in_progress_total
        in_progress,
        // 12 in_progress_within: in progress, due absent or due ≥ L
        in_progress && (c.due.is_none() || le(l, c.due)),
        // 13 in_progress_overdue: in progress, due present, due < L
        in_progress && lt(c.due, l),
        // waiting_acceptance: sub ≤ L, not (acc ≤ L), not (ref ≤ L)
        le(c.sub, l) && !le(c.acc, l) && !le(c.refd, l),
        // refused: status 3, F ≤ ref ≤ L
        c.status == Some(REFUSED) && p.within(c.refd),
        // paid_online: in received_new, DuocThanhToanTrucTuyen = 1
        received_new && c.paid_online == Some(true),
        // digitized: in received_new, HoSoCoThanhPhanSoHoa = 1
        received_new && c.digitized == Some(true),
    ]
}

/// Index of received_new in [`counted`] (catalog measures count procedures used by it).
pub const RECEIVED_NEW: usize = 2;

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
        let d = |s: &str| s.parse::<NaiveDate>().ok().map(days);
        let case = |status, channel, acc, sub, refd, end, due| Case {
            status: Some(status),
            channel,
            acc,
            sub,
            refd,
            end,
            due,
            supplement_requests: Some(0),
            ..Default::default()
        };
        // A: received online in the period, resolved early. B: carried over, in progress and
        // overdue. C: waiting. D: refused in the period. E: withdrawn.
        let mut a = case(
            9,
            Some(2),
            d("2024-07-01"),
            d("2024-07-01"),
            None,
            d("2024-07-02"),
            d("2024-07-05"),
        );
        a.paid_online = Some(true);
        a.digitized = Some(true);
        let mut b = case(
            4,
            Some(1),
            d("2024-05-01"),
            d("2024-05-01"),
            None,
            None,
            d("2024-06-01"),
        );
        b.digitized = Some(true);
        let c = case(1, Some(2), None, d("2024-09-01"), None, None, None);
        let dd = case(3, None, None, d("2024-07-02"), d("2024-07-02"), None, None);
        let e = case(
            7,
            Some(1),
            d("2024-07-03"),
            d("2024-07-03"),
            None,
            d("2024-07-05"),
            None,
        );
        let p = Bounds {
            f: d("2024-06-15").unwrap(),
            l: d("2024-09-14").unwrap(),
        };
        let mut sums = [0; COUNTED];
        for c in [a, b, c, dd, e] {
            for (s, hit) in sums.iter_mut().zip(counted(&c, p)) {
                *s += hit as i64;
            }
        }
        let got = |n: &str| {
            if n == "received_total" {
                return sums[2] + sums[3];
            }
            sums[counted_names().iter().position(|m| *m == n).unwrap()]
        };
        for (n, want) in [
            ("received_online", 1),
            ("received_offline", 1),
            ("received_new", 2),
            ("carried_over", 1),
            ("received_total", 3),
            ("resolved_total", 2),
            ("resolved_early", 1),
            ("resolved_on_time", 0),
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
        assert_eq!(counted_names().len(), COUNTED);
        assert_eq!(counted_names()[RECEIVED_NEW], "received_new");
        // Absent values: a comparison with them is false.
        let none = Case::default();
        assert!(counted(&none, p).iter().all(|h| !h));
        assert_eq!(a.attribution_day(p), d("2024-07-02").unwrap());
        assert_eq!(b.attribution_day(p), p.l);
    }
}

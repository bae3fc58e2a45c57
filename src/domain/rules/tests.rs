//! The measures of `kpi.md` against counts made by hand.
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

/// [`COUNTING_DATES`]: over every status, channel, due date, supplement count and flag, a
/// case whose submitted, accepted, refused and end dates are each absent or after L counts
/// as a case of which nothing is known; one of them moved to L or earlier makes it count
/// somewhere for some cases, so the rule is not vacuous.
#[test]
fn a_case_dated_only_after_l_counts_as_nothing_known() {
    use rand::{Rng, SeedableRng};
    let p = Bounds { f: 100, l: 190 };
    let nothing = counted_on(&Case::default(), p);
    assert_eq!(nothing, ([false; COUNTED], p.l));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let date = |rng: &mut rand_chacha::ChaCha8Rng, lo: i32| {
        rng.random_bool(0.8).then(|| rng.random_range(lo..lo + 120))
    };
    let mut counted_once_moved = 0;
    for _ in 0..20_000 {
        let mut c = Case {
            status: rng.random_bool(0.95).then(|| rng.random_range(0..12)),
            channel: rng.random_bool(0.9).then(|| rng.random_range(0..4)),
            sub: date(&mut rng, p.l + 1),
            acc: date(&mut rng, p.l + 1),
            refd: date(&mut rng, p.l + 1),
            end: date(&mut rng, p.l + 1),
            due: date(&mut rng, p.f - 60),
            supplement_requests: rng.random_bool(0.9).then(|| rng.random_range(0..3)),
            paid_online: rng.random_bool(0.9).then(|| rng.random_bool(0.5)),
            digitized: rng.random_bool(0.9).then(|| rng.random_bool(0.5)),
        };
        assert_eq!(counted_on(&c, p), nothing, "{c:?}");
        assert!(!may_count(&c, p.l), "{c:?}");
        // The same case with one counting date moved into or before the period.
        let early = Some(rng.random_range(p.f - 30..=p.l));
        match rng.random_range(0..4) {
            0 => c.sub = early,
            1 => c.acc = early,
            2 => c.refd = early,
            _ => c.end = early,
        }
        let counted = counted_on(&c, p) != nothing;
        assert!(may_count(&c, p.l), "{c:?}");
        counted_once_moved += counted as u32;
    }
    assert!(counted_once_moved > 5_000, "{counted_once_moved}");
}

#[test]
fn a_ratio_is_null_where_its_denominator_is_0_or_either_is_null() {
    let df = df!(
        "num" => [Some(1i64), Some(0), Some(3), None, Some(2)],
        "den" => [Some(2i64), Some(0), Some(0), Some(4), None],
    )
    .unwrap();
    let got = df
        .lazy()
        .select([ratio(col("num"), col("den")).alias("r")])
        .collect()
        .unwrap();
    let r = got.column("r").unwrap();
    assert_eq!(r.dtype(), &DataType::Float64);
    let r: Vec<Option<f64>> = r.f64().unwrap().iter().collect();
    assert_eq!(r, [Some(0.5), None, None, None, None]);
}

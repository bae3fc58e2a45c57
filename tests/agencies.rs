//! Agencies over time (`../shared/spec/agencies.md`): its worked example case by case, as was
//! and restated, under both period conventions; cases at agencies outside their validity.

mod common;

use std::collections::BTreeMap;

use common::*;
use motcua::demo::{Chaos, Dataset};
use motcua::domain::period::{Convention, PeriodId};
use motcua::kpi::KpiTables;
use serde_json::{json, Value};

fn agency(code: &str, cap: &str, from: &str, to: &str, successors: &[&str]) -> Value {
    json!({"MaDonVi": code, "TenDonVi": format!("Đơn vị {code}"), "Cap": cap, "MaDonViCha": "",
           "HieuLucTu": from, "HieuLucDen": to, "MaDonViKeThua": successors})
}

/// A resolved or in-progress case; `transfers` as (from, to, yyyyMMdd).
fn case(
    id: &str,
    now: &str,
    acc: &str,
    end: Option<&str>,
    transfers: &[(&str, &str, &str)],
) -> Value {
    let t: Vec<Value> = transfers
        .iter()
        .map(|(f, t, d)| json!({"MaDonViCu": f, "MaDonViMoi": t, "NgayChuyen": format!("{d}000000")}))
        .collect();
    json!({"MaHoSo": id, "MaDonVi": now, "MaTTHC": "1.000001", "MaLinhVuc": "HT", "KenhThucHien": "1",
           "TrangThaiHoSo": if end.is_some() { "9" } else { "4" },
           "NgayNopHoSo": format!("{acc}080000"), "NgayTiepNhan": format!("{acc}090000"),
           "NgayKetThucXuLy": end.map(|e| format!("{e}100000")).unwrap_or_default(),
           "NgayCapNhat": "20251001120000", "DanhSachHoSoBoSung": [], "DanhSachChuyenDonVi": t})
}

/// The worked example: agencies H1, C1, C2, X1, P1, P2 and cases A, B, C, D.
fn worked_example() -> Dataset {
    Dataset {
        agencies: vec![
            agency("H1", "2", "", "20250701", &["X1"]),
            agency("C1", "3", "", "20250701", &["X1"]),
            agency("C2", "3", "", "20250701", &["X1"]),
            agency("X1", "3", "20250701", "", &[]),
            agency("P1", "1", "", "20250301", &["P2"]),
            agency("P2", "1", "20250301", "", &[]),
        ],
        procedures: vec![],
        cases: vec![
            case(
                "A",
                "X1",
                "20250502",
                Some("20250720"),
                &[("H1", "X1", "20250701")],
            ),
            case("B", "C1", "20250620", Some("20250628"), &[]),
            case("C", "P2", "20250210", None, &[("P1", "P2", "20250301")]),
            case("D", "H1", "20250616", Some("20250630"), &[]),
        ],
    }
}

/// What a case adds where it counts: received_new, carried_over, resolved_total,
/// in_progress_total.
type Figures = [i64; 4];
const MEASURES: [&str; 4] = [
    "received_new",
    "carried_over",
    "resolved_total",
    "in_progress_total",
];
const RECEIVED: Figures = [1, 0, 0, 0];
const RECEIVED_IN_PROGRESS: Figures = [1, 0, 0, 1];
const RECEIVED_RESOLVED: Figures = [1, 0, 1, 0];
const CARRIED_RESOLVED: Figures = [0, 1, 1, 0];
const CARRIED_IN_PROGRESS: Figures = [0, 1, 0, 1];

/// agencies.md's table, and the same reasoning under the calendar convention: where each case
/// counts, as was, in each quarter (`None`: in no measure).
fn expected(
    convention: Convention,
    quarter: &str,
) -> Vec<(&'static str, Option<(&'static str, Figures)>)> {
    let _ = RECEIVED;
    match (convention, quarter) {
        (Convention::Decree09, "2025-Q2") => vec![
            ("A", Some(("H1", RECEIVED_IN_PROGRESS))),
            ("B", None),
            ("C", Some(("P2", CARRIED_IN_PROGRESS))),
            ("D", None),
        ],
        (Convention::Decree09, _) => vec![
            ("A", Some(("X1", CARRIED_RESOLVED))),
            ("B", Some(("C1", RECEIVED_RESOLVED))),
            ("C", Some(("P2", CARRIED_IN_PROGRESS))),
            ("D", Some(("H1", RECEIVED_RESOLVED))),
        ],
        (Convention::Calendar, "2025-Q2") => vec![
            ("A", Some(("H1", RECEIVED_IN_PROGRESS))),
            ("B", Some(("C1", RECEIVED_RESOLVED))),
            ("C", Some(("P2", CARRIED_IN_PROGRESS))),
            ("D", Some(("H1", RECEIVED_RESOLVED))),
        ],
        (Convention::Calendar, _) => vec![
            ("A", Some(("X1", CARRIED_RESOLVED))),
            ("B", None),
            ("C", Some(("P2", CARRIED_IN_PROGRESS))),
            ("D", None),
        ],
    }
}

fn level_of(code: &str) -> &'static str {
    match code {
        "H1" => "district",
        "C1" | "C2" | "X1" => "commune",
        _ => "province",
    }
}

/// Restated to 2026-01-01: every agency of the example to the one existing then.
fn restated(code: &str) -> &'static str {
    match code {
        "H1" | "C1" | "C2" | "X1" => "X1",
        _ => "P2",
    }
}

/// The figures of a table, summed by `key` of the case's agency.
fn sums(
    rows: &[(&str, Option<(&str, Figures)>)],
    key: impl Fn(&str) -> String,
) -> BTreeMap<String, Figures> {
    let mut out: BTreeMap<String, Figures> = BTreeMap::new();
    for (_, at) in rows {
        if let Some((agency, f)) = at {
            let e = out.entry(key(agency)).or_default();
            for k in 0..4 {
                e[k] += f[k];
            }
        }
    }
    out
}

/// A table's figures by `key`, rows whose four figures are all zero left out.
fn published(df: &polars::prelude::DataFrame, key: &str) -> BTreeMap<String, Figures> {
    let mut out = BTreeMap::new();
    for i in 0..df.height() {
        let k = cell(df, key, i);
        if k == "all" {
            continue;
        }
        let f: Figures = MEASURES.map(|m| cell(df, m, i).parse::<i64>().unwrap());
        if f != [0; 4] {
            out.insert(k, f);
        }
    }
    out
}

fn all_row(t: &polars::prelude::DataFrame) -> Vec<String> {
    let i = (0..t.height())
        .find(|i| cell(t, "level", *i) == "all")
        .unwrap();
    motcua::domain::rules::measure_names()
        .iter()
        .map(|m| cell(t, m, i))
        .collect()
}

fn check(t: &KpiTables, convention: Convention, quarter: &str) {
    let want = expected(convention, quarter);
    let ctx = format!("{convention} {quarter}");
    assert_eq!(
        published(&t.by_agency, "agency_code"),
        sums(&want, str::to_string),
        "{ctx} as was, per agency"
    );
    assert_eq!(
        published(&t.by_level, "level"),
        sums(&want, |a| level_of(a).to_string()),
        "{ctx} as was, per level"
    );
    let r = &t.restated;
    assert_eq!(r.to.to_string(), "2026-01-01");
    assert_eq!(
        published(&r.by_agency, "agency_code"),
        sums(&want, |a| restated(a).to_string()),
        "{ctx} restated, per agency"
    );
    assert_eq!(
        published(&r.by_level, "level"),
        sums(&want, |a| level_of(restated(a)).to_string()),
        "{ctx} restated, per level"
    );
    let levels: Vec<String> = (0..r.by_level.height())
        .map(|i| cell(&r.by_level, "level", i))
        .collect();
    assert_eq!(
        levels,
        ["province", "commune", "all"],
        "{ctx}: no district row once restated"
    );
    assert_eq!(
        all_row(&r.by_level),
        all_row(&t.by_level),
        "{ctx}: restated all = as-was all"
    );
    assert!(t.identities_hold(), "{ctx}");
}

/// agencies.md's worked example, case by case, as was and restated, both conventions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worked_example_of_agencies_md_case_by_case() {
    let src = serve(worked_example(), Chaos::off()).await;
    for convention in [Convention::Decree09, Convention::Calendar] {
        let out = tempfile::tempdir().unwrap();
        let mut s = settings(&src.url(), out.path(), convention);
        s.restate_to = "2026-01-01".parse().ok();
        let quarters: Vec<PeriodId> = ["2025-Q2", "2025-Q3"]
            .iter()
            .map(|q| q.parse().unwrap())
            .collect();
        let done = run_periods(&s, &quarters).await.unwrap();
        for (t, q) in done.tables.iter().zip(["2025-Q2", "2025-Q3"]) {
            check(t, convention, q);
        }
        assert!(
            done.record.agencies_outside_validity.is_empty(),
            "{:?}",
            done.record.agencies_outside_validity
        );
        assert!(done.record.restate_broken_chains.is_empty());
        assert_eq!(done.record.counts.unknown_agencies, Vec::<String>::new());
        // What was published is what was checked, and the catalog is there for joins.
        let q3 = read_parquet(
            &out.path()
                .join("kpi/cases_by_level_restated/period=2025-Q3/part-0.parquet"),
        );
        assert_eq!(all_row(&q3), all_row(&done.tables[1].by_level));
        let dim = read_parquet(&out.path().join("dim/agencies/part-0.parquet"));
        assert_eq!(dim.height(), 6);
        assert_eq!(cell(&dim, "main_successor", 1), "X1", "C1's row");
    }
    src.stop();
}

/// A case accepted by an agency after it ended counts as usual, under that agency, and the run
/// record says so; an unreadable or incomplete hand-over rejects its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cases_outside_an_agencys_validity_are_counted_and_reported() {
    let mut data = worked_example();
    data.cases
        .push(case("E", "H1", "20250801", Some("20250805"), &[]));
    let mut bad = case("F", "X1", "20250502", None, &[("H1", "X1", "20250701")]);
    bad["DanhSachChuyenDonVi"][0]["NgayChuyen"] = json!("31/06/2025");
    data.cases.push(bad);
    let mut incomplete = case("G", "X1", "20250502", None, &[("H1", "X1", "20250701")]);
    incomplete["DanhSachChuyenDonVi"][0]["MaDonViCu"] = json!("");
    data.cases.push(incomplete);
    let src = serve(data, Chaos::off()).await;
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(&src.url(), out.path(), Convention::Decree09);
    s.restate_to = "2026-01-01".parse().ok();
    let done = run_periods(&s, &["2025-Q3".parse().unwrap()])
        .await
        .unwrap();
    let o = &done.record.agencies_outside_validity;
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!(
        (o[0].period.as_str(), o[0].agency_code.as_str(), o[0].cases),
        ("2025-Q3", "H1", 1)
    );
    let district = published(&done.tables[0].by_level, "level")["district"];
    assert_eq!(district, [2, 0, 2, 0], "D and E count under H1");
    let reasons = &done.record.counts.rejected_by_reason;
    assert_eq!(reasons.get("unreadable_date"), Some(&1), "{reasons:?}");
    assert_eq!(reasons.get("incomplete_transfer"), Some(&1), "{reasons:?}");
    src.stop();
}

/// Per period, straight from the staged cases (independently of the KPI code): how many were
/// received, resolved and in progress — each case once.
fn counted_once(out: &std::path::Path, p: &motcua::domain::period::Period) -> [i64; 3] {
    let mut n = [0i64; 3];
    for f in files_under(&out.join("cases")) {
        let df = read_parquet(&out.join("cases").join(f));
        let status = df.column("status").unwrap().i32().unwrap().clone();
        let day = |c: &str| df.column(c).unwrap().date().unwrap().physical().clone();
        let (acc, end) = (day("accepted_date"), day("end_date"));
        let (f, l) = (
            (p.start - chrono::NaiveDate::default()).num_days() as i32,
            (p.end - chrono::NaiveDate::default()).num_days() as i32,
        );
        for i in 0..df.height() {
            let s = status.get(i).unwrap();
            let accepted = s != 1 && s != 3;
            let ended = (7..=10).contains(&s);
            let (a, e) = (acc.get(i), end.get(i));
            n[0] += i64::from(accepted && a.is_some_and(|a| a >= f && a <= l));
            n[1] += i64::from(matches!(s, 7 | 9 | 10) && e.is_some_and(|e| e >= f && e <= l));
            let done = ended && e.is_some_and(|e| e <= l);
            n[2] += i64::from(accepted && a.is_some_and(|a| a <= l) && !done);
        }
    }
    n
}

/// The demo province from 2024-Q1 to 2026-Q3, through the regrouping of January 2025, the
/// mergers of March and the end of the district level in July: every identity holds, each case
/// counts once per period, restated = as-was in all, 2024-Q3 is still the published quarter,
/// the quarter spanning 1 July 2025 has the districts' last figures and none after, and only
/// codes never in the catalog are unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_through_the_2025_restructuring() {
    use motcua::pipeline::{self as run, Command, Options};
    let src = demo_source(2024, 1.0, Chaos::off()).await;
    let out = tempfile::tempdir().unwrap();
    let s = settings(&src.url(), out.path(), Convention::Decree09);
    let cmd = Command::Backfill {
        from: "2024-Q1".parse().unwrap(),
        to: "2026-Q3".parse().unwrap(),
        resume: false,
        full_refresh: false,
    };
    let done = run::execute(&s, &cmd, Options::default()).await.unwrap();
    src.stop();
    assert_eq!(done.tables.len(), 11);
    assert_eq!(done.record.identities_hold, Some(true));
    let checks: std::collections::BTreeSet<&str> = done
        .record
        .identity_checks
        .iter()
        .map(|c| c.table.as_str())
        .collect();
    assert!(
        checks.contains("cases_by_level_restated") && checks.contains("cases_by_agency_restated")
    );
    let moved = files_under(&out.path().join("cases"))
        .iter()
        .map(|f| {
            let df = read_parquet(&out.path().join("cases").join(f));
            df.column("transfers")
                .unwrap()
                .list()
                .unwrap()
                .iter()
                .filter(|t| t.as_ref().is_some_and(|t| !t.is_empty()))
                .count()
        })
        .sum::<usize>();
    assert!(moved > 1000, "open cases were handed over in 2025: {moved}");
    for t in &done.tables {
        let id = t.period.id.to_string();
        let levels: Vec<String> = (0..t.by_level.height())
            .map(|i| cell(&t.by_level, "level", i))
            .collect();
        let all = |df: &polars::prelude::DataFrame, m: &str| {
            let i = (0..df.height())
                .find(|i| cell(df, "level", *i) == "all")
                .unwrap();
            cell(df, m, i).parse::<i64>().unwrap()
        };
        let once = counted_once(out.path(), &t.period);
        let published =
            ["received_new", "resolved_total", "in_progress_total"].map(|m| all(&t.by_level, m));
        assert_eq!(published, once, "{id}: each case once");
        assert_eq!(
            all_row(&t.restated.by_level),
            all_row(&t.by_level),
            "{id}: restated all = as-was all"
        );
        let unknown: std::collections::BTreeSet<String> = (0..t.by_agency.height())
            .filter(|i| cell(&t.by_agency, "level", *i) == "unknown")
            .map(|i| cell(&t.by_agency, "agency_code", i))
            .collect();
        assert!(
            unknown
                .iter()
                .all(|c| c == motcua::demo::generator::UNLISTED_AGENCY),
            "{id}: {unknown:?}"
        );
        let district = levels.iter().position(|l| l == "district");
        match id.as_str() {
            "2025-Q3" => {
                let i = district.expect("the districts' last quarter");
                assert!(
                    cell(&t.by_level, "resolved_total", i)
                        .parse::<i64>()
                        .unwrap()
                        > 0,
                    "{id}: what districts finished"
                );
                assert_eq!(
                    cell(&t.by_level, "in_progress_total", i),
                    "0",
                    "{id}: nothing left at districts at its end"
                );
            }
            "2025-Q4" | "2026-Q1" | "2026-Q2" | "2026-Q3" => {
                assert_eq!(
                    district, None,
                    "{id}: two levels after the switch: {levels:?}"
                );
            }
            _ => assert!(district.is_some(), "{id}"),
        }
        let restated: Vec<String> = (0..t.restated.by_level.height())
            .map(|i| cell(&t.restated.by_level, "level", i))
            .collect();
        assert!(
            !restated.contains(&"district".to_string()),
            "{id} restated: {restated:?}"
        );
        if id == "2024-Q3" {
            assert_reference_counts(&t.by_level, 1);
        }
    }
    let o = &done.record.agencies_outside_validity;
    assert!(
        o.iter().any(|x| x.period == "2025-Q3" && x.cases >= 1),
        "the late cases at old communes: {o:?}"
    );
}

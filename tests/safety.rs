//! Never freeze, never forget: the cursor, replay, the state files and the lock under input
//! that breaks the contract — a record stamped in the future, lost KPI tables, hand-edited
//! state, a stolen or unrenewable lock, bodies that are not the envelope.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::process::*;
use common::*;
use motcua::demo::Chaos;
use motcua::domain::period::{Convention, PeriodId};
use motcua::pipeline::{self as run, Command, Options};
use motcua::state::Lock;
use motcua::store::Store;
use motcua::wire::{instant, parse_instant};
use serde_json::{json, Value};

fn q(id: &str) -> PeriodId {
    id.parse().unwrap()
}

/// The staged row of `case_id`: its status and `updated_at` (epoch microseconds).
fn staged(out: &Path, case_id: &str) -> (Option<i32>, Option<i64>) {
    for f in files_under(&out.join("cases")) {
        let df = read_parquet(&out.join("cases").join(&f));
        let ids = df.column("case_id").unwrap().str().unwrap().clone();
        let found = ids.iter().position(|id| id == Some(case_id));
        if let Some(i) = found {
            let status = df.column("status").unwrap().i32().unwrap().get(i);
            let updated = df
                .column("updated_at")
                .unwrap()
                .datetime()
                .unwrap()
                .physical()
                .get(i);
            return (status, updated);
        }
    }
    panic!("{case_id} is not staged");
}

fn cursor_file(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("_state/cursor.json")).unwrap()).unwrap()
}

/// One case stamped `20991231000000` at the source (a desk's typo) once moved the cursor to
/// 2099, and every later run pulled nothing. Now the cursor stays before the pull's bound, the
/// record is staged and counted and named in the run record, the changes made afterwards are
/// counted by the next run, and the source's later correction replaces the 2099 version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_stamped_in_2099_neither_freezes_the_cursor_nor_outlives_its_correction() {
    let src = demo_source(5, 0.05, Chaos::off()).await;
    let out = tempfile::tempdir().unwrap();
    let s = settings(&src.url(), out.path(), Convention::Decree09);
    let keys = in_person_q3_cases(&src.records(), 51);
    let (typo, changed) = (&keys[0], &keys[1..]);
    let latest_real = src
        .records()
        .iter()
        .filter_map(|r| instant(r.get("NgayCapNhat")).ok().flatten())
        .max()
        .unwrap();
    assert!(src.restamp(typo, "20991231000000", |_| {}));

    let first = run_periods(&s, &[q("2024-Q3")]).await.unwrap();
    let c = &first.record.counts;
    assert_eq!(c.future_stamped_records, 1);
    assert_eq!(c.records_after_bound, 1);
    assert_eq!(c.future_stamp_max.as_deref(), Some("20991231000000"));
    let bound = parse_instant(first.record.pull_bound.as_deref().unwrap()).unwrap();
    let now = chrono::Utc::now().timestamp_micros();
    assert!(
        bound < now && bound > now - 3_600_000_000,
        "the bound is the run's start minus the skew"
    );
    let cursor = cursor_file(out.path());
    assert_eq!(
        cursor["cursor_micros"].as_i64(),
        Some(latest_real),
        "the cursor is the latest stamp before the bound: {cursor}"
    );
    assert_eq!(
        staged(out.path(), typo).1,
        parse_instant("20991231000000"),
        "pulled and staged"
    );

    // 50 changes made at the source afterwards: cases first recorded in person, filed online.
    for k in changed {
        assert!(src.update_record(k, |v| v["KenhThucHien"] = json!("2")));
    }
    let second = run_periods(&s, &[q("2024-Q3")]).await.unwrap();
    let r = &second.record;
    assert_eq!(
        parse_instant(r.pulled_from.as_deref().unwrap()),
        Some(latest_real - 3 * 86_400_000_000),
        "the next pull starts from the cursor minus the lookback, not from 2099"
    );
    assert_eq!(
        all_count(&second.tables[0], "received_online"),
        all_count(&first.tables[0], "received_online") + 50,
        "every change made after the 2099 record is counted"
    );
    assert_eq!(
        all_count(&second.tables[0], "received_new"),
        all_count(&first.tables[0], "received_new")
    );
    assert_eq!(
        r.counts.future_stamped_records, 1,
        "the tail reads it again"
    );
    assert!(cursor_file(out.path())["cursor_micros"].as_i64().unwrap() > latest_real);

    // The source corrects the record: stamped at its real time, it replaces the 2099 version.
    assert!(src.update_record(typo, |v| v["TrangThaiHoSo"] = json!(10)));
    let third = run_periods(&s, &[q("2024-Q3")]).await.unwrap();
    assert_eq!(third.record.counts.future_stamped_records, 0);
    assert_eq!(third.record.counts.future_stamp_max, None);
    let (status, updated) = staged(out.path(), typo);
    assert_eq!(status, Some(10));
    assert!(
        updated.unwrap() < now,
        "the corrected version is staged: {updated:?} {now}"
    );
    src.stop();
}

/// The disaster replay exists for: `kpi/` and `cases/` lost, raw intact. `replay --all`
/// republishes every period the run records say was published, figure for figure, and
/// `--run-id` the periods that run published, as they were then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_restores_every_published_period_after_kpi_and_cases_are_lost() {
    let src = demo_source(21, 0.05, Chaos::all()).await;
    let out = tempfile::tempdir().unwrap();
    let mut s = settings(&src.url(), out.path(), Convention::Decree09);
    let first = run_periods(&s, &[q("2024-Q2"), q("2024-Q3")])
        .await
        .unwrap();
    let key = in_person_q3_cases(&src.records(), 1).remove(0);
    assert!(src.update_record(&key, |v| v["KenhThucHien"] = json!(2)));
    // A month under the calendar convention, published by a later run.
    s.convention = Convention::Calendar;
    let second = run_periods(&s, &[q("2024-Q3"), q("2024-08")])
        .await
        .unwrap();
    s.convention = Convention::Decree09;
    src.stop(); // from here on, no source

    let published = |out: &Path| -> BTreeMap<String, Vec<Vec<String>>> {
        let mut m = BTreeMap::new();
        for table in ["cases_by_agency", "cases_by_level", "catalog_by_level"] {
            for f in files_under(&out.join("kpi").join(table)) {
                let df = read_parquet(&out.join("kpi").join(table).join(&f));
                let mut rows: Vec<Vec<String>> = (0..df.height())
                    .map(|i| {
                        df.get_column_names()
                            .iter()
                            .filter(|c| !["run_id", "computed_at"].contains(&c.as_str()))
                            .map(|c| format!("{:?}", df.column(c).unwrap().get(i).unwrap()))
                            .collect()
                    })
                    .collect();
                rows.sort();
                m.insert(format!("{table}/{f}"), rows);
            }
        }
        m
    };
    let before = published(out.path());
    assert_eq!(
        before.len(),
        9,
        "three periods, three tables: {:?}",
        before.keys()
    );
    std::fs::remove_dir_all(out.path().join("kpi")).unwrap();
    std::fs::remove_dir_all(out.path().join("cases")).unwrap();

    let all = Command::Replay {
        run_id: None,
        periods: vec![],
    };
    let all = run::execute(&s, &all, Options::default()).await.unwrap();
    let ids: Vec<String> = all.tables.iter().map(|t| t.period.id.to_string()).collect();
    assert_eq!(ids, ["2024-08", "2024-Q2", "2024-Q3"]);
    assert_eq!(
        published(out.path()),
        before,
        "every period back, figure for figure, each under the convention it was published with"
    );
    let months: Vec<&str> = all
        .record
        .periods
        .iter()
        .map(|p| p.start.as_str())
        .collect();
    assert_eq!(months, ["2024-08-01", "2024-03-15", "2024-07-01"]);
    assert_eq!(
        all.record.counts.cases_in_staging,
        second.record.counts.cases_in_staging
    );

    // --run-id: the runs up to that one, and the periods it published, as they were then.
    std::fs::remove_dir_all(out.path().join("kpi")).unwrap();
    let one = Command::Replay {
        run_id: Some(first.record.run_id.clone()),
        periods: vec![],
    };
    let one = run::execute(&s, &one, Options::default()).await.unwrap();
    let ids: Vec<String> = one.tables.iter().map(|t| t.period.id.to_string()).collect();
    assert_eq!(ids, ["2024-Q2", "2024-Q3"]);
    let figures = |t: &motcua::kpi::KpiTables| -> Vec<Vec<String>> {
        let df = &t.by_agency;
        (0..df.height())
            .map(|i| {
                let mut row = vec![cell(df, "agency_code", i), cell(df, "field_code", i)];
                row.extend(
                    motcua::domain::rules::measure_names()
                        .iter()
                        .map(|m| cell(df, m, i)),
                );
                row
            })
            .collect()
    };
    for (a, b) in one.tables.iter().zip(&first.tables) {
        assert_eq!(figures(a), figures(b), "{}", a.period.id);
    }
    assert_ne!(figures(&one.tables[1]), figures(&second.tables[0]));
}

fn no_panic(o: &std::process::Output) {
    let e = stderr(o);
    assert!(
        !e.contains("panicked") && !e.contains("RUST_BACKTRACE"),
        "{e}"
    );
}

/// Hand-edited or damaged state files are errors with exit code 8 that name the file and the
/// way out — never a panic — and `status` shows the damage instead of failing.
#[test]
fn damaged_state_is_an_error_with_its_exit_code_never_a_panic() {
    let src = DemoProcess::example();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let p = pipeline_file(work.path(), "", "");
    let run = |extra: &[&str]| {
        let mut args = vec!["--period", "2024-Q3"];
        args.extend_from_slice(extra);
        verb("run", &src.url, &out, &p, &args).output().unwrap()
    };
    let o = run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let good = std::fs::read(out.join("_state/cursor.json")).unwrap();
    let status = || {
        let o = motcua(&["status", "--output", out.to_str().unwrap()]);
        no_panic(&o);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };

    let future = json!({"cursor": "20991231000000", "cursor_micros": parse_instant("20991231000000"),
                        "run_id": "20261128T000000000Z-0000", "written_at": "2026-11-28T00:00:00Z"});
    for (cursor, says) in [
        ("{\"cursor\": \"2024".to_string(), "it is not a cursor"),
        ("[]".to_string(), "it is not a cursor"),
        (
            json!({"cursor": "20240101000000", "cursor_micros": i64::MAX, "run_id": "x", "written_at": "x"}).to_string(),
            "is not a time",
        ),
        (
            json!({"cursor": "20240101000000", "cursor_micros": 0, "run_id": "x", "written_at": "x"}).to_string(),
            "disagree",
        ),
        (future.to_string(), "at or after this pull's upper bound"),
    ] {
        std::fs::write(out.join("_state/cursor.json"), &cursor).unwrap();
        let o = run(&[]);
        no_panic(&o);
        assert_eq!(o.status.code(), Some(8), "{cursor}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("_state/cursor.json") && e.contains(says) && e.contains("--full-refresh"),
            "{cursor}: {e}"
        );
        if says != "at or after this pull's upper bound" {
            assert!(status().contains("cursor  DAMAGED"), "{}", status());
        }
    }
    // --full-refresh mends a cursor an earlier motcua moved into the future.
    let o = run(&["--full-refresh"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(out.join("_state/cursor.json")).unwrap().len(),
        good.len()
    );
    let mended: Value =
        serde_json::from_slice(&std::fs::read(out.join("_state/cursor.json")).unwrap()).unwrap();
    let was: Value = serde_json::from_slice(&good).unwrap();
    assert_eq!(mended["cursor"], was["cursor"]);
    let o = run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));

    for (lock, says) in [
        ("not a lock".to_string(), "it is not a lock"),
        (
            json!({"run_id": "r", "host": "h", "pid": 1, "command": "run",
                   "started_at": "2026-11-28T00:00:00Z", "expires_at": "soon"})
            .to_string(),
            "its expires_at \"soon\" is not a time",
        ),
        (
            json!({"run_id": "r", "host": "h", "pid": -1, "command": "run",
                   "started_at": "2026-11-28T00:00:00Z", "expires_at": "2026-11-28T00:00:00Z"})
            .to_string(),
            "it is not a lock",
        ),
    ] {
        std::fs::write(out.join("_state/lock"), &lock).unwrap();
        let o = run(&[]);
        no_panic(&o);
        assert_eq!(o.status.code(), Some(8), "{lock}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(
            e.contains("_state/lock") && e.contains(says) && e.contains("delete the file"),
            "{e}"
        );
        assert!(status().contains("lock    DAMAGED"), "{}", status());
    }
    std::fs::remove_file(out.join("_state/lock")).unwrap();
    let o = run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A record stamped in the future is named by the run's warning and its summary line.
#[test]
fn a_future_stamp_is_named_in_the_logs_and_the_summary_line() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("dataset");
    std::fs::create_dir(&data).unwrap();
    for f in ["donvi.json", "tthc.json"] {
        std::fs::copy(example_dir().join(f), data.join(f)).unwrap();
    }
    let mut hoso: Value =
        serde_json::from_slice(&std::fs::read(example_dir().join("hoso.json")).unwrap()).unwrap();
    hoso["data"][3]["NgayCapNhat"] = json!("20991231000000");
    hoso["data"][5]["NgayCapNhat"] = json!("31/12/2088 08:00:00");
    std::fs::write(data.join("hoso.json"), hoso.to_string()).unwrap();
    let src = DemoProcess::start(&["--chaos", "off", "--dataset", data.to_str().unwrap()]);
    let out = work.path().join("out");
    let p = pipeline_file(work.path(), "", "");
    let o = verb(
        "run",
        &src.url,
        &out,
        &p,
        &["--period", "2024-Q3", "--log-format", "json"],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<Value> = stderr(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let warned = lines.iter().find(|l| {
        l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("stamped in the future"))
    });
    let warned = warned.unwrap_or_else(|| panic!("{}", stderr(&o)));
    assert_eq!(warned["level"], "WARN");
    assert_eq!(warned["fields"]["records"], 2);
    assert_eq!(warned["fields"]["latest"], "20991231000000");
    let summary = lines.last().unwrap();
    assert_eq!(summary["fields"]["message"], "run finished");
    assert_eq!(summary["fields"]["future_stamped"], 2);
    assert_eq!(summary["fields"]["future_stamp_max"], "20991231000000");
}

/// A run whose lock is taken while it works stops before it publishes, exits 6, leaves the
/// taker's lock alone and does not move the cursor.
#[test]
fn a_lock_taken_while_the_run_works_stops_it_before_it_publishes() {
    let src = DemoProcess::start(&["--chaos", "on", "--scale", "1"]);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let p = pipeline_file(work.path(), "lock_expiry = \"3s\"", "");
    let victim = verb("run", &src.url, &out, &p, &["--period", "2024-Q3"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(120, "the pull to start", || {
        files_under(&out.join("raw")).len() >= 5
    });
    let thief = json!({"run_id": "20261128T000000000Z-beef", "host": "elsewhere", "pid": 1,
                       "command": "backfill", "started_at": "2026-11-28T00:00:00Z",
                       "expires_at": "2099-01-01T00:00:00Z"})
    .to_string();
    std::fs::write(out.join("_state/lock"), &thief).unwrap();
    let o = victim.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("lost the lock") && stderr(&o).contains("20261128T000000000Z-beef"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("kpi").exists(), "nothing published");
    assert!(
        !out.join("_state/cursor.json").exists(),
        "the cursor did not move"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("_state/lock")).unwrap(),
        thief,
        "the taker's lock stays"
    );
    let runs = files_under(&out.join("_runs"));
    let record = std::fs::read_to_string(out.join("_runs").join(&runs[0])).unwrap();
    assert!(
        record.contains("\"outcome\": \"failed\"") && record.contains("lost the lock"),
        "{record}"
    );
}

/// A heartbeat that cannot renew the lock (here: its file lock cannot be taken) marks it lost
/// before it expires, so the run stops instead of publishing after another may have taken it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_that_cannot_renew_marks_the_lock_lost() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap(), "hb").unwrap();
    let lock = Lock::acquire(&store, "run-a", "run", Duration::from_millis(900), false)
        .await
        .unwrap();
    lock.ensure_held().await.unwrap();
    std::fs::create_dir(dir.path().join("_state/lock.guard")).unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(5), lock.lost())
        .await
        .expect("the lock is marked lost before it expires");
    assert!(lost.0.contains("could not renew"), "{lost}");
    let e = lock.ensure_held().await.unwrap_err();
    assert!(e.to_string().contains("could not renew"), "{e}");
    lock.release().await.unwrap();
}

/// Of many runs taking over one stale lock at once, exactly one wins; the others are told who.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_many_takers_of_a_stale_lock_exactly_one_wins() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().to_str().unwrap(), "race").unwrap();
    common::lock_race(&store, 20).await;
}

/// A body that breaks the contract part-way through a pull (here the second `/v1/hoso`
/// request) fails the run naming the request, after good pages: nothing is staged or
/// published, the cursor does not move, and the run record says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_break_mid_pull_publishes_nothing() {
    use common::hostile;
    for broken in [
        r#"{"error_code":"0","message":"","data":{"MaHoSo":"X"}}"#,
        r#"{"message":"","data":[]}"#,
    ] {
        let src = hostile::serve(move |path, _, n| match path {
            "/v1/donvi" => hostile::json(hostile::example("donvi.json")),
            "/v1/tthc" => hostile::json(hostile::example("tthc.json")),
            _ if n == 0 => hostile::json(hostile::example("hoso.json")),
            _ => hostile::json(broken),
        })
        .await;
        let out = tempfile::tempdir().unwrap();
        let s = settings(&src.url, out.path(), Convention::Decree09);
        let e = run_periods(&s, &[q("2024-Q3")]).await.err().unwrap();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                motcua::error::Error::Source(motcua::error::SourceError::Contract { .. })
            ),
            "{msg}"
        );
        assert_eq!(e.exit_code(), 4);
        assert!(
            msg.contains("/v1/hoso?updated_from="),
            "names the request: {msg}"
        );
        for layer in ["kpi", "cases", "_state/cursor.json"] {
            assert!(!out.path().join(layer).exists(), "{layer} written");
        }
        let runs = files_under(&out.path().join("_runs"));
        let record: Value = serde_json::from_slice(
            &std::fs::read(out.path().join("_runs").join(&runs[0])).unwrap(),
        )
        .unwrap();
        assert_eq!(record["outcome"], "failed");
        assert!(record["error"]
            .as_str()
            .unwrap()
            .contains("breaks the contract"));
        assert!(
            record["files"].as_array().unwrap().len() >= 4,
            "the bodies that came are kept in raw/"
        );
    }
}

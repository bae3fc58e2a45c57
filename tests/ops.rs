//! Cron-grade operations: the incremental cursor and late data, the single-writer lock,
//! resumable backfills, status, JSON logs and raw retention (replay: `tests/safety.rs`).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;

use common::process::*;
use common::*;
use motcua::demo::Chaos;
use motcua::domain::period::{Convention, PeriodId};
use motcua::pipeline::{self as run, Command, Options};
use motcua::wire::instant;
use serde_json::{json, Value};

fn q(id: &str) -> PeriodId {
    id.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_change_reaches_its_published_quarter_through_an_incremental_pull() {
    let src = demo_source(5, 0.05, Chaos::off()).await;
    let out = tempfile::tempdir().unwrap();
    let s = settings(&src.url(), out.path(), Convention::Decree09);
    let first = run_periods(&s, &[q("2024-Q3")]).await.unwrap();
    let pulled_first = first.record.counts.records_pulled;
    assert!(pulled_first > 7000);
    assert_eq!(
        first.record.pulled_from, None,
        "the first run pulls everything"
    );

    // At the source, a Q3 case turns out to have been filed online.
    let key = in_person_q3_cases(&src.records(), 1).remove(0);
    assert!(src.update_record(&key, |v| v["KenhThucHien"] = json!("2")));

    let second = run_periods(&s, &[q("2024-Q3")]).await.unwrap();
    let c = &second.record;
    assert!(
        c.pulled_from.is_some(),
        "the second run starts from the cursor minus the lookback"
    );
    let cursor =
        motcua::wire::parse_instant(first.record.cursor_after.as_deref().unwrap()).unwrap();
    let from = motcua::wire::parse_instant(c.pulled_from.as_deref().unwrap()).unwrap();
    assert_eq!(cursor - from, 3 * 86_400 * 1_000_000, "lookback of 3 days");
    // Only the changed record and those within the lookback before the cursor come again.
    let in_lookback = src
        .records()
        .iter()
        .filter(|r| {
            instant(r.get("NgayCapNhat"))
                .ok()
                .flatten()
                .is_some_and(|t| t >= from)
        })
        .count() as u64;
    assert!(
        c.counts.records_pulled >= in_lookback && c.counts.records_pulled <= in_lookback + 5,
        "{} vs {in_lookback}",
        c.counts.records_pulled
    );
    assert!(c.counts.records_pulled < pulled_first / 20);
    // The KPI step counted again only the staging partitions this night rewrote; the others'
    // counts came from `_state/kpi-cache` (the figures below prove the sum is right).
    assert_eq!(first.record.counts.kpi_partitions_cached, 0);
    assert_eq!(
        first.record.counts.kpi_partitions_counted,
        first.record.counts.staging_partitions
    );
    assert_eq!(
        c.counts.kpi_partitions_counted,
        c.counts.staging_partitions_written
    );
    assert!(
        c.counts.staging_partitions_written * 4 < c.counts.staging_partitions,
        "{:?}",
        c.counts
    );
    assert_eq!(
        c.counts.kpi_partitions_counted + c.counts.kpi_partitions_cached,
        c.counts.staging_partitions
    );
    let (t1, t2) = (&first.tables[0], &second.tables[0]);
    assert_eq!(
        all_count(t2, "received_online"),
        all_count(t1, "received_online") + 1
    );
    assert_eq!(
        all_count(t2, "received_offline"),
        all_count(t1, "received_offline") - 1
    );
    assert_eq!(all_count(t2, "received_new"), all_count(t1, "received_new"));
    // The published partition changed too.
    let published = read_parquet(
        &out.path()
            .join("kpi/cases_by_level/period=2024-Q3/part-0.parquet"),
    );
    let i = (0..published.height())
        .find(|i| cell(&published, "level", *i) == "all")
        .unwrap();
    assert_eq!(
        cell(&published, "received_online", i),
        all_count(t2, "received_online").to_string()
    );

    // From staging alone, every count comes from the cache (its sums: staging is as they sum
    // it), and the tables are the same; with the cache damaged, everything is counted again,
    // to the same tables.
    let offline = Options {
        from_staging: true,
        ..Options::default()
    };
    let figures = |df: &polars::prelude::DataFrame| df.drop_many(["run_id", "computed_at"]);
    let cmd = Command::Run {
        periods: vec![q("2024-Q3")],
        full_refresh: false,
    };
    let cached = run::execute(&s, &cmd, offline).await.unwrap();
    assert_eq!(cached.record.counts.kpi_partitions_counted, 0);
    assert_eq!(figures(&cached.tables[0].by_agency), figures(&t2.by_agency));
    assert_eq!(figures(&cached.tables[0].by_level), figures(&t2.by_level));
    // The sums damaged: the counts come from the cache per partition, to the same tables.
    let cache_dir = out.path().join("_state/kpi-cache");
    let kept: Vec<std::path::PathBuf> = std::fs::read_dir(&cache_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let (sums, per_partition): (Vec<_>, Vec<_>) = kept
        .iter()
        .partition(|p| p.to_string_lossy().ends_with(".sum"));
    assert_eq!((sums.len(), per_partition.len()), (1, 1), "{kept:?}");
    std::fs::write(sums[0], b"not a sum").unwrap();
    let from_cache = run::execute(&s, &cmd, offline).await.unwrap();
    assert_eq!(from_cache.record.counts.kpi_partitions_counted, 0);
    assert_eq!(
        figures(&from_cache.tables[0].by_agency),
        figures(&t2.by_agency)
    );
    // Both damaged: everything counted again.
    for p in &kept {
        std::fs::write(p, b"damaged").unwrap();
    }
    let recounted = run::execute(&s, &cmd, offline).await.unwrap();
    assert_eq!(recounted.record.counts.kpi_partitions_cached, 0);
    assert_eq!(
        figures(&recounted.tables[0].by_agency),
        figures(&t2.by_agency)
    );

    // --full-refresh ignores the cursor.
    let cmd = Command::Run {
        periods: vec![q("2024-Q3")],
        full_refresh: true,
    };
    let third = run::execute(&s, &cmd, Options::default()).await.unwrap();
    assert_eq!(third.record.pulled_from, None);
    assert!(third.record.counts.records_pulled >= pulled_first);
    assert_eq!(
        all_count(&third.tables[0], "received_online"),
        all_count(t2, "received_online")
    );
    src.stop();
}

#[test]
fn two_runs_at_once_one_publishes_the_other_exits_or_waits() {
    let src = DemoProcess::start(&["--chaos", "on", "--scale", "0.5"]);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let p = pipeline_file(work.path(), "", "");
    let spawn = |args: &[&str]| {
        verb("run", &src.url, &out, &p, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (
        spawn(&["--period", "2024-Q3"]),
        spawn(&["--period", "2024-Q3"]),
    );
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let codes = BTreeSet::from([a.status.code().unwrap(), b.status.code().unwrap()]);
    assert_eq!(
        codes,
        BTreeSet::from([0, 6]),
        "a: {}\nb: {}",
        stderr(&a),
        stderr(&b)
    );
    let loser = if a.status.code() == Some(6) { &a } else { &b };
    assert!(
        stderr(loser).contains("another run holds the lock") && stderr(loser).contains("--wait"),
        "{}",
        stderr(loser)
    );
    assert_eq!(
        files_under(&out.join("_runs")).len(),
        1,
        "the refused run did nothing"
    );
    assert!(!out.join("_state/lock").exists(), "the lock is released");
    let figures = read_parquet(&out.join("kpi/cases_by_level/period=2024-Q3/part-0.parquet"));

    // With --wait, the second queues behind the first and both finish with the same figures.
    let (a, b) = (
        spawn(&["--period", "2024-Q3"]),
        spawn(&["--period", "2024-Q3", "--wait"]),
    );
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(
        b.status.success(),
        "the waiting run finishes: {}",
        stderr(&b)
    );
    assert!(
        a.status.success() || a.status.code() == Some(6),
        "{}",
        stderr(&a)
    );
    assert!(
        stderr(&b).contains("waiting for the lock") || a.status.code() == Some(6),
        "one of them met the other's lock: a: {}\nb: {}",
        stderr(&a),
        stderr(&b)
    );
    let again = read_parquet(&out.join("kpi/cases_by_level/period=2024-Q3/part-0.parquet"));
    for m in motcua::domain::rules::measure_names() {
        for i in 0..figures.height() {
            assert_eq!(cell(&figures, m, i), cell(&again, m, i), "{m}");
        }
    }
}

fn write_lock(out: &Path, host: &str, pid: u32, expires: &str) {
    std::fs::create_dir_all(out.join("_state")).unwrap();
    let lock = json!({"run_id": "20200101T000000Z-dead", "host": host, "pid": pid, "command": "run",
                      "started_at": "2020-01-01T00:00:00Z", "expires_at": expires});
    std::fs::write(out.join("_state/lock"), lock.to_string()).unwrap();
}

#[test]
fn a_stale_lock_is_taken_over_and_a_live_one_is_respected() {
    let src = DemoProcess::example();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let p = pipeline_file(work.path(), "", "");
    let run = || {
        verb("run", &src.url, &out, &p, &["--period", "2024-Q3"])
            .output()
            .unwrap()
    };

    // A live holder: this test process, on this host, until 2099.
    let host = motcua::state::hostname();
    write_lock(&out, &host, std::process::id(), "2099-01-01T00:00:00Z");
    let o = run();
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("20200101T000000Z-dead") && stderr(&o).contains(&host),
        "names the holder: {}",
        stderr(&o)
    );

    // Expired on another host: taken over, and the takeover is logged.
    write_lock(&out, "elsewhere", 1, "2020-01-01T01:00:00Z");
    let o = run();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("taking over a stale lock") && stderr(&o).contains("expired"),
        "{}",
        stderr(&o)
    );

    // Left on this host by a process that is gone (a kill -9): taken over at once.
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let id = c.id();
        c.wait().unwrap();
        id
    };
    write_lock(&out, &host, dead, "2099-01-01T00:00:00Z");
    let o = run();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("its process is gone"), "{}", stderr(&o));
    assert!(!out.join("_state/lock").exists());
}

#[test]
fn a_failed_quarter_fails_the_backfill_and_resume_publishes_only_it() {
    let src = DemoProcess::start(&["--chaos", "off", "--seed", "9", "--scale", "0.1"]);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let p = pipeline_file(work.path(), "concurrency = 3", "");
    // Make 2024-Q2's publication fail: a folder sits where its level table must go.
    let blocker = out.join("kpi/cases_by_level/period=2024-Q2/part-0.parquet");
    std::fs::create_dir_all(&blocker).unwrap();
    let o = verb(
        "backfill",
        &src.url,
        &out,
        &p,
        &["--from", "2023-Q3", "--to", "2025-Q2"],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2024-Q2") && stderr(&o).contains("--resume"),
        "{}",
        stderr(&o)
    );
    let runs = files_under(&out.join("_runs"));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_runs").join(&runs[0])).unwrap())
            .unwrap();
    assert_eq!(record["outcome"], "partial");
    let periods = record["periods"].as_array().unwrap();
    assert_eq!(periods.len(), 8);
    for pr in periods {
        let failed = pr["id"] == "2024-Q2";
        assert_eq!(pr["published"], !failed, "{pr}");
        assert_eq!(pr["error"].is_string(), failed, "{pr}");
    }
    std::fs::remove_dir(&blocker).unwrap();
    let o = verb(
        "backfill",
        &src.url,
        &out,
        &p,
        &["--from", "2023-Q3", "--to", "2025-Q2", "--resume"],
    )
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let runs = files_under(&out.join("_runs"));
    let record: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("_runs").join(&runs[1])).unwrap())
            .unwrap();
    let ids: Vec<&str> = record["periods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["2024-Q2"], "resume publishes only the failed quarter");
    assert!(out
        .join("kpi/cases_by_level/period=2024-Q2/part-0.parquet")
        .is_file());
    // Status shows both runs and the eight published quarters.
    let o = motcua(&["status", "--output", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        text.contains("lock    free")
            && text.contains("published periods (8)")
            && text.contains("partial"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "cursor  {}",
            record["cursor_after"].as_str().unwrap()
        )),
        "{text}"
    );
}

#[test]
fn json_logs_parse_line_by_line_and_carry_no_token_or_personal_data() {
    let src = DemoProcess::start(&["--chaos", "on", "--scale", "0.6"]);
    let work = tempfile::tempdir().unwrap();
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
    let logs = stderr(&o);
    let mut messages = vec![];
    for line in logs.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        messages.push(
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(
        messages.iter().any(|m| m.contains("retrying")),
        "the chaos was logged"
    );
    assert_eq!(
        messages.last().map(String::as_str),
        Some("run finished"),
        "one summary line ends the run"
    );
    let summary: Value = serde_json::from_str(logs.lines().last().unwrap()).unwrap();
    for f in [
        "records_pulled",
        "rejected",
        "periods_published",
        "duration_secs",
    ] {
        assert!(
            !summary["fields"][f].is_null(),
            "summary has {f}: {summary}"
        );
    }
    assert!(!logs.contains(TOKEN), "the token never appears");
    // Personal data served by the source (from the raw layer) never appears in the logs.
    let mut pii = BTreeSet::new();
    for f in files_under(&out.join("raw"))
        .into_iter()
        .filter(|f| f.contains("v1-hoso"))
    {
        let mut body = vec![];
        motcua::raw::decompress_into(
            &f,
            &std::fs::read(out.join("raw").join(&f)).unwrap(),
            &mut body,
        )
        .unwrap();
        let env: Value = serde_json::from_slice(&body).unwrap();
        for r in env["data"].as_array().into_iter().flatten() {
            for k in ["ChuHoSo", "SoGiayToChuHoSo", "SoDienThoai", "DiaChi"] {
                if let Some(v) = r[k].as_str().filter(|v| !v.is_empty()) {
                    pii.insert(v.to_string());
                }
            }
        }
    }
    assert!(pii.len() > 1000);
    let leaked: Vec<&String> = pii.iter().filter(|v| logs.contains(v.as_str())).collect();
    assert!(leaked.is_empty(), "{leaked:?}");
}

#[test]
fn raw_older_than_the_retention_is_pruned() {
    let src = DemoProcess::example();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let old = out.join("raw/run_id=20200101T000000000Z-0000/v1-hoso");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(
        old.join("000000.json.gz"),
        motcua::raw::gzip(b"{}").unwrap(),
    )
    .unwrap();
    let keep = pipeline_file(work.path(), "", "");
    let o = verb("run", &src.url, &out, &keep, &["--period", "2024-Q3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        old.join("000000.json.gz").exists(),
        "the default keeps everything"
    );
    let prune = pipeline_file(work.path(), "raw_retention = \"30d\"", "");
    let o = verb("run", &src.url, &out, &prune, &["--period", "2024-Q3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        !old.join("000000.json.gz").exists(),
        "older than 30 days: pruned"
    );
    let runs: BTreeSet<String> = files_under(&out.join("raw"))
        .iter()
        .map(|f| f.split('/').next().unwrap().to_string())
        .collect();
    assert_eq!(runs.len(), 2, "both recent runs keep their raw: {runs:?}");
}

#[test]
fn a_progress_bar_shows_on_a_terminal_only() {
    let src = DemoProcess::start(&["--chaos", "off", "--scale", "0.1"]);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let p = pipeline_file(work.path(), "", "");
    let args = format!(
        "{BIN} run --period 2024-Q3 --source-url {} --output {} --pipeline {}",
        src.url,
        out.display(),
        p.display()
    );
    // `script` runs the command on a pseudo-terminal and copies what it draws to stdout.
    let o = std::process::Command::new("script")
        .args(["-qefc", &args, "/dev/null"])
        .env("MOTCUA_SOURCE_TOKEN", TOKEN)
        .env("MOTCUA_PII_KEY", PII_KEY)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    let drawn = String::from_utf8_lossy(&o.stdout);
    assert!(
        drawn.contains("pulling cases:") && drawn.contains(" records ("),
        "a pull bar on a terminal: {drawn}"
    );
    // Off a terminal: plain log lines only.
    let o = verb("run", &src.url, &out, &p, &["--period", "2024-Q3"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(!stderr(&o).contains("pulling cases:"), "{}", stderr(&o));
}

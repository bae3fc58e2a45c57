//! Many provinces in one root (`schemas/root-layout.md`): each province's job writes under
//! `province=<code>` folders of every table, with its own lock, cursor and run records, so one
//! province failing or busy never blocks another, and a province's figures are the ones it
//! would publish alone.

mod common;

use std::path::Path;

use common::process::*;
use common::*;
use serde_json::{json, Value};

/// A lock held (until 2099) by a live process of this host, in `province`'s state.
fn hold_lock(root: &Path, province: &str) {
    let dir = root.join(format!("_state/province={province}"));
    std::fs::create_dir_all(&dir).unwrap();
    let lock = json!({"run_id": "20200101T000000Z-busy", "host": motcua::state::hostname(),
                      "pid": std::process::id(), "command": "run",
                      "started_at": "2020-01-01T00:00:00Z", "expires_at": "2099-01-01T00:00:00Z"});
    std::fs::write(dir.join("lock"), lock.to_string()).unwrap();
}

fn run_province(url: &str, root: &Path, p: &Path, province: &str) -> std::process::Output {
    verb(
        "run",
        url,
        root,
        p,
        &["--province", province, "--period", "2024-Q3"],
    )
    .output()
    .unwrap()
}

#[test]
fn provinces_share_a_root_and_never_block_each_other() {
    let src = DemoProcess::example();
    let work = tempfile::tempdir().unwrap();
    let (root, alone) = (work.path().join("root"), work.path().join("alone"));
    let p = pipeline_file(work.path(), "", "");

    let a = run_province(&src.url, &root, &p, "01");
    assert!(a.status.success(), "{}", stderr(&a));
    // Province 46 is busy (another run holds its lock), province 79's source is down: each
    // fails on its own; 01 and 80 are not touched by either.
    hold_lock(&root, "46");
    let busy = run_province(&src.url, &root, &p, "46");
    assert_eq!(busy.status.code(), Some(6), "{}", stderr(&busy));
    let down = run_province("http://127.0.0.1:9/", &root, &p, "79");
    assert!(!down.status.success());
    let b = run_province(&src.url, &root, &p, "80");
    assert!(b.status.success(), "{}", stderr(&b));
    let solo = verb("run", &src.url, &alone, &p, &["--period", "2024-Q3"])
        .output()
        .unwrap();
    assert!(solo.status.success(), "{}", stderr(&solo));

    // Every table holds the province as its first partition level; nothing of a failed job is
    // where readers look, and nothing is left at the single-province places.
    let kpi = "kpi/cases_by_level";
    let level_files = files_under(&root.join(kpi));
    assert_eq!(
        level_files,
        [
            "province=01/period=2024-Q3/part-0.parquet",
            "province=80/period=2024-Q3/part-0.parquet"
        ]
    );
    for top in [
        "cases",
        "dim/agencies",
        "_runs",
        "_state",
        "quality/rejects",
        "raw",
    ] {
        let dir = root.join(top);
        let provinces: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(
            provinces.iter().all(|d| d.starts_with("province=")),
            "{top}: {provinces:?}"
        );
    }
    assert!(!root.join("kpi/cases_by_level/province=79").exists());
    assert!(!root.join("_staging").exists());

    // A province's figures are those it publishes alone, cell for cell.
    for table in ["cases_by_level", "cases_by_agency", "catalog_by_level"] {
        let rel = format!("kpi/{table}/period=2024-Q3/part-0.parquet");
        let one = read_parquet(&alone.join(&rel));
        for province in ["01", "80"] {
            let shared = format!("kpi/{table}/province={province}/period=2024-Q3/part-0.parquet");
            let got = read_parquet(&root.join(shared));
            assert!(one.height() > 0, "{table}");
            assert_eq!(got.get_column_names(), one.get_column_names());
            for c in one.columns() {
                let same = got
                    .column(c.name())
                    .unwrap()
                    .as_materialized_series()
                    .equals_missing(c.as_materialized_series());
                // When and by which run it was computed differ; every figure is the same.
                let stamp = ["run_id", "computed_at"].contains(&c.name().as_str());
                assert!(same || stamp, "{table}.{}", c.name());
            }
        }
    }

    // Each province has its own cursor and run records, which name it and where it wrote.
    for province in ["01", "80"] {
        assert!(root
            .join(format!("_state/province={province}/cursor.json"))
            .exists());
        let runs = root.join(format!("_runs/province={province}"));
        let record: Value = std::fs::read(
            std::fs::read_dir(&runs)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .path(),
        )
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap();
        assert_eq!(record["province"], province);
        let files = record["files"].as_array().unwrap();
        assert!(!files.is_empty());
        for f in files {
            let path = f["path"].as_str().unwrap();
            assert!(path.contains(&format!("province={province}/")), "{path}");
            assert!(root.join(path).exists(), "{path} is where the record says");
        }
    }

    // `status` shows one province: its cursor, its lock.
    let status = |province: &str| {
        let o = motcua(&[
            "status",
            "--output",
            root.to_str().unwrap(),
            "--province",
            province,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    assert!(status("46").contains("20200101T000000Z-busy"));
    assert!(status("01").contains("lock    free") && status("01").contains("published"));

    // A province code that is not one folder name is refused before anything is written.
    let bad = run_province(&src.url, &root, &p, "../x");
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        stderr(&bad).contains("province \"../x\""),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn motcua_sql_refuses_what_it_cannot_write() {
    for (args, says) in [
        (
            vec!["--engine", "duckdb", "--period", "2024-Q5"],
            "not a period id",
        ),
        (
            vec![
                "--engine",
                "trino",
                "--period",
                "2024-Q3",
                "--trino-schema",
                "x;drop",
            ],
            "--trino-schema",
        ),
        (
            vec![
                "--engine",
                "spark",
                "--period",
                "2024",
                "--output",
                "/tmp/it's",
            ],
            "quotes",
        ),
    ] {
        let mut all = vec!["sql"];
        all.extend(args);
        let o = motcua(&all);
        assert_eq!(o.status.code(), Some(2), "{all:?}");
        assert!(stderr(&o).contains(says), "{all:?}: {}", stderr(&o));
    }
    let o = motcua(&[
        "sql",
        "--engine",
        "duckdb",
        "--period",
        "2024-07",
        "--output",
        "/srv/root",
    ]);
    assert!(o.status.success());
    let sql = String::from_utf8_lossy(&o.stdout);
    assert!(sql.contains("'/srv/root/cases/*/*/*/*.parquet'") && sql.contains("DATE '2024-07-14'"));
    assert_eq!(sql.matches(";\n").count(), 2);
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod hostile;
pub mod process;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use motcua::config::{Secret, Settings};
use motcua::domain::period::Convention;
use motcua::normalise::PiiKey;
use motcua::source::SourceConfig;
use polars::prelude::*;

pub const TOKEN: &str = "test-token-7f3a";
pub const PII_KEY: &str = "test-pii-key-0123456789";

pub fn shared() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared"))
}

pub fn example_dir() -> PathBuf {
    shared().join("reference/example")
}

/// Settings for a run against `url` into `output`, with quick retries.
pub fn settings(url: &str, output: &Path, convention: Convention) -> Settings {
    let mut source = SourceConfig::new(url::Url::parse(url).unwrap());
    source.backoff_base = Duration::from_millis(20);
    source.backoff_max = Duration::from_millis(200);
    Settings {
        province: None,
        name: "test".into(),
        output: output.to_str().unwrap().to_string(),
        convention,
        lookback: Duration::from_secs(3 * 86_400),
        clock_skew: Duration::from_secs(300),
        restate_to: None,
        lock_expiry: Duration::from_secs(600),
        concurrency: 4,
        raw_retention: None,
        source,
        token: Secret::new(TOKEN),
        pii_key: PiiKey::new(PII_KEY.as_bytes()),
    }
}

pub fn read_parquet(path: &Path) -> DataFrame {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    motcua::parquet::decode(bytes.into()).unwrap()
}

/// A small CSV (no quoted commas) as header and rows of cells.
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(|s| s.trim().to_string()).collect())
        .collect();
    (header, rows)
}

/// The value of `column` in `row` of `df` as text ("" for null), rates rounded to six places.
pub fn cell(df: &DataFrame, column: &str, row: usize) -> String {
    let c = df
        .column(column)
        .unwrap_or_else(|_| panic!("no column {column}"));
    match c.dtype() {
        DataType::Int64 => c
            .i64()
            .unwrap()
            .get(row)
            .map(|v| v.to_string())
            .unwrap_or_default(),
        DataType::Float64 => c
            .f64()
            .unwrap()
            .get(row)
            .map(|v| format!("{v:.6}"))
            .unwrap_or_default(),
        DataType::String => c.str().unwrap().get(row).unwrap_or_default().to_string(),
        other => panic!("{column} has type {other}"),
    }
}

/// Rows of `df` keyed by the given key columns.
pub fn rows_by(df: &DataFrame, keys: &[&str]) -> BTreeMap<Vec<String>, usize> {
    (0..df.height())
        .map(|i| (keys.iter().map(|k| cell(df, k, i)).collect(), i))
        .collect()
}

/// Asserts that every cell of the expected CSV equals the published table, row for row.
pub fn assert_table_equals_csv(df: &DataFrame, csv: &Path, keys: &[&str]) {
    let (header, rows) = read_csv(csv);
    let published = rows_by(df, keys);
    assert_eq!(
        published.len(),
        rows.len(),
        "{}: row count (published keys {:?})",
        csv.display(),
        published.keys()
    );
    for row in rows {
        let key: Vec<String> = keys
            .iter()
            .map(|k| row[header.iter().position(|h| h == k).unwrap()].clone())
            .collect();
        let i = *published
            .get(&key)
            .unwrap_or_else(|| panic!("{}: no published row {key:?}", csv.display()));
        for (h, want) in header.iter().zip(&row) {
            assert_eq!(
                &cell(df, h, i),
                want,
                "{}: {key:?} column {h}",
                csv.display()
            );
        }
    }
}

/// Every file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().to_string());
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The type names `schemas/*.json` use.
pub fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::String => "string".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float64 => "float64".into(),
        DataType::Boolean => "bool".into(),
        DataType::Date => "date".into(),
        DataType::Datetime(TimeUnit::Microseconds, Some(tz)) if tz.as_str() == "UTC" => {
            "timestamp[us, UTC]".into()
        }
        DataType::List(inner) => format!("list<{}>", type_name(inner)),
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| format!("{}: {}", f.name(), type_name(f.dtype())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("unexpected {other:?}"),
    }
}

/// Asserts that `df` has exactly the columns, order and types of `schemas/<table>.json`.
pub fn assert_matches_schema(df: &DataFrame, table: &str) {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/schemas"))
        .join(format!("{table}.json"));
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let want: Vec<(String, String)> = schema["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let got: Vec<(String, String)> = df
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), type_name(c.dtype())))
        .collect();
    assert_eq!(got, want, "{table} does not match {}", path.display());
}

/// `motcua run --period …` in-process.
pub async fn run_periods(
    settings: &Settings,
    periods: &[motcua::domain::period::PeriodId],
) -> motcua::error::Result<motcua::pipeline::Done> {
    let cmd = motcua::pipeline::Command::Run {
        periods: periods.to_vec(),
        full_refresh: false,
    };
    motcua::pipeline::execute(settings, &cmd, motcua::pipeline::Options::default()).await
}

/// The demo province for `seed` at `scale`, served in-process on a free port.
pub async fn demo_source(
    seed: u64,
    scale: f64,
    chaos: motcua::demo::Chaos,
) -> motcua::demo::DemoSource {
    serve(motcua::demo::generate(seed, scale), chaos).await
}

/// `data` served in-process on a free port.
pub async fn serve(
    data: motcua::demo::Dataset,
    chaos: motcua::demo::Chaos,
) -> motcua::demo::DemoSource {
    motcua::demo::start(
        data,
        TOKEN,
        chaos,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap()
}

/// A count of the `all` row of a period's `cases_by_level`.
pub fn all_count(t: &motcua::kpi::KpiTables, column: &str) -> i64 {
    let df = &t.by_level;
    let i = (0..df.height())
        .find(|i| cell(df, "level", *i) == "all")
        .unwrap();
    df.column(column).unwrap().i64().unwrap().get(i).unwrap()
}

/// `rounds` times: a lock expired long ago, then eight runs taking it over at once; exactly
/// one holds it, the others are refused naming the winner.
pub async fn lock_race(store: &motcua::store::Store, rounds: usize) {
    use motcua::error::Error;
    use motcua::state::{Lock, LOCK_PATH};
    let stale = serde_json::json!({"run_id": "20200101T000000000Z-dead", "host": "elsewhere",
        "pid": 1, "command": "run", "started_at": "2020-01-01T00:00:00Z",
        "expires_at": "2020-01-01T01:00:00Z"});
    for round in 0..rounds {
        store
            .publish(LOCK_PATH, bytes::Bytes::from(stale.to_string()))
            .await
            .unwrap();
        let takers: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let id = format!("run-{round}-{i}");
                    Lock::acquire(&store, &id, "run", Duration::from_secs(60), false).await
                })
            })
            .collect();
        let mut held = vec![];
        let mut refused = vec![];
        for t in takers {
            match t.await.unwrap() {
                Ok(lock) => held.push(lock),
                Err(Error::LockBusy(busy)) => refused.push(busy.run_id),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(held.len(), 1, "round {round}: {} winners", held.len());
        let winner = held.pop().unwrap();
        assert!(
            refused.iter().all(|r| *r == winner.info.run_id),
            "{refused:?}"
        );
        winner.ensure_held().await.unwrap();
        winner.release().await.unwrap();
        assert!(store.get(LOCK_PATH).await.unwrap().is_none());
    }
}

/// `n` cases received in person in 2024-Q3 (Decree 09) and resolved, each served once.
pub fn in_person_q3_cases(records: &[serde_json::Value], n: usize) -> Vec<String> {
    use motcua::wire::{enum_code, instant, local_date, text};
    let (f, l) = "2024-Q3"
        .parse::<motcua::domain::period::PeriodId>()
        .unwrap()
        .bounds(motcua::domain::period::Convention::Decree09);
    let mut seen = BTreeMap::<String, usize>::new();
    for r in records {
        *seen
            .entry(text(r.get("MaHoSo")).unwrap_or_default())
            .or_default() += 1;
    }
    let keys: Vec<String> = records
        .iter()
        .filter(|r| {
            let acc = instant(r.get("NgayTiepNhan"))
                .ok()
                .flatten()
                .map(local_date);
            let key = text(r.get("MaHoSo")).unwrap_or_default();
            enum_code(r.get("KenhThucHien")) == Ok(Some(1))
                && matches!(enum_code(r.get("TrangThaiHoSo")), Ok(Some(9 | 10)))
                && acc.is_some_and(|a| a >= f && a <= l)
                && seen[&key] == 1
                && !key.contains("-LOI-")
        })
        .map(|r| text(r.get("MaHoSo")).unwrap())
        .take(n)
        .collect();
    assert_eq!(keys.len(), n, "the demo province has {n} such cases");
    keys
}

/// The columns of `../shared/reference/hue-2024-q3-cases.csv` and the measures they are.
pub const REFERENCE_COUNTS: [(&str, &str); 9] = [
    ("received_new", "received_new"),
    ("received_online", "received_online"),
    ("resolved_total", "resolved_total"),
    ("resolved_early", "resolved_early"),
    ("resolved_on_time", "resolved_on_time"),
    ("resolved_overdue_total", "resolved_overdue"),
    ("resolved_overdue_excused", "resolved_overdue_excused"),
    ("in_progress_total", "in_progress_total"),
    ("waiting_acceptance", "waiting_acceptance"),
];

/// Asserts that a `cases_by_level` of 2024-Q3 has every count of the published reference,
/// `times` over (a province drawn in parts holds it several times).
pub fn assert_reference_counts(level: &DataFrame, times: i64) {
    let rows = rows_by(level, &["level"]);
    let (header, reference) = read_csv(&shared().join("reference/hue-2024-q3-cases.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    for r in &reference {
        let at = rows[&vec![r[col("level")].clone()]];
        for (theirs, mine) in REFERENCE_COUNTS {
            let published: i64 = r[col(theirs)].parse().unwrap();
            assert_eq!(
                cell(level, mine, at),
                (times * published).to_string(),
                "{} {mine}",
                r[col("level")]
            );
        }
    }
}

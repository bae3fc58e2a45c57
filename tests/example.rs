//! The worked example of `../shared/reference/example/`, served by a test source: every figure
//! of the expected CSVs comes out equal under both conventions, and the rejects are exactly the
//! records `notes.csv` marks REJECT plus the newer version of HS-24.

mod common;

use std::collections::BTreeSet;

use common::*;
use motcua::demo::{self, Chaos};
use motcua::domain::period::{Convention, PeriodId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_expected_figure_of_the_worked_example() {
    let data = demo::load_dataset(&example_dir()).unwrap();
    let src = serve(data, Chaos::off()).await;
    let q3: PeriodId = "2024-Q3".parse().unwrap();
    for (convention, name) in [
        (Convention::Decree09, "decree09"),
        (Convention::Calendar, "calendar"),
    ] {
        let out = tempfile::tempdir().unwrap();
        let outcome = run_periods(&settings(&src.url(), out.path(), convention), &[q3])
            .await
            .unwrap();
        assert_eq!(outcome.record.outcome.to_string(), "succeeded");
        let kpi = out.path().join("kpi");
        let ex = example_dir();
        let by_level = read_parquet(&kpi.join("cases_by_level/period=2024-Q3/part-0.parquet"));
        assert_table_equals_csv(
            &by_level,
            &ex.join(format!("expected-2024-Q3-{name}-by-level.csv")),
            &["level"],
        );
        let by_agency = read_parquet(&kpi.join("cases_by_agency/period=2024-Q3/part-0.parquet"));
        assert_table_equals_csv(
            &by_agency,
            &ex.join(format!("expected-2024-Q3-{name}-by-agency.csv")),
            &["agency_code", "field_code"],
        );
        let catalog = read_parquet(&kpi.join("catalog_by_level/period=2024-Q3/part-0.parquet"));
        assert_table_equals_csv(
            &catalog,
            &ex.join(format!("expected-2024-Q3-{name}-catalog.csv")),
            &["level"],
        );
        assert_eq!(outcome.record.identities_hold, Some(true));
        for (df, table) in [
            (&by_level, "cases_by_level"),
            (&by_agency, "cases_by_agency"),
            (&catalog, "catalog_by_level"),
        ] {
            assert_matches_schema(df, table);
        }
        for table in ["cases_by_level_restated", "cases_by_agency_restated"] {
            let df = read_parquet(&kpi.join(format!("{table}/period=2024-Q3/part-0.parquet")));
            assert_matches_schema(&df, table);
        }
        assert_matches_schema(
            &read_parquet(&out.path().join("dim/agencies/part-0.parquet")),
            "agencies",
        );
        let bucket = files_under(&out.path().join("cases"))
            .into_iter()
            .next()
            .unwrap();
        assert_matches_schema(
            &read_parquet(&out.path().join("cases").join(bucket)),
            "cases",
        );

        // Rejects: notes.csv's REJECT rows (by their MaHoSo) and the newer HS-24.
        let rid = &outcome.record.run_id;
        let rejects = read_parquet(
            &out.path()
                .join(format!("quality/rejects/run_id={rid}/part-0.parquet")),
        );
        assert_matches_schema(&rejects, "rejects");
        let keys: BTreeSet<String> = (0..rejects.height())
            .map(|i| cell(&rejects, "record_key", i))
            .collect();
        let (_, notes) = read_csv(&ex.join("notes.csv"));
        let mut want: BTreeSet<String> = notes
            .iter()
            .filter(|r| r[1].contains("REJECT"))
            .map(|r| {
                if r[0] == "(none)" {
                    String::new()
                } else {
                    r[0].clone()
                }
            })
            .collect();
        want.insert("HS-24".into());
        assert_eq!(keys, want);
        assert_eq!(
            rejects.height(),
            want.len(),
            "one reject row per rejected record"
        );
        let hs24 = (0..rejects.height())
            .find(|i| cell(&rejects, "record_key", *i) == "HS-24")
            .unwrap();
        assert_eq!(cell(&rejects, "reason", hs24), "unreadable_date");
        // The valid HS-24 counts: staging holds it, resolved on time.
        assert_eq!(
            outcome.record.counts.unknown_agencies,
            vec!["999.99.99.H57".to_string()]
        );
        assert_eq!(outcome.record.counts.records_pulled, 42);
        // The run record lists every file written, with its size (and rows for Parquet).
        let files = &outcome.record.files;
        for prefix in ["raw/", "cases/", "kpi/", "quality/", "reports/"] {
            assert!(
                files.iter().any(|f| f.path.starts_with(prefix)),
                "no {prefix} file in the run record"
            );
        }
        for f in files {
            let on_disk = std::fs::metadata(out.path().join(&f.path)).unwrap().len();
            assert_eq!(on_disk, f.bytes, "{}", f.path);
            assert_eq!(f.rows.is_some(), f.path.ends_with(".parquet"), "{}", f.path);
        }
        // 42 records - 11 rejected = 31 valid; HS-21, HS-22 older versions and the HS-23 copy go: 28 cases.
        assert_eq!(outcome.record.counts.valid_records, 31);
        assert_eq!(outcome.record.counts.duplicates_dropped, 3);
        assert_eq!(outcome.record.counts.cases_in_staging, 28);
    }
    src.stop();
}

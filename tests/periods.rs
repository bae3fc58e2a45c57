//! Every period kind under both conventions: flows add up over the periods that tile a longer
//! one, stocks at its end equal those of its last part, and the identities hold everywhere.

mod common;

use common::*;
use motcua::demo::Chaos;
use motcua::domain::period::{Convention, PeriodId};

const FLOWS: [&str; 13] = [
    "received_online",
    "received_offline",
    "received_new",
    "resolved_total",
    "resolved_early",
    "resolved_on_time",
    "resolved_overdue",
    "resolved_overdue_excused",
    "resolved_withdrawn",
    "stopped",
    "refused",
    "paid_online",
    "digitized",
];
const STOCKS: [&str; 4] = [
    "in_progress_total",
    "in_progress_within",
    "in_progress_overdue",
    "waiting_acceptance",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periods_tile_and_identities_hold() {
    let src = demo_source(11, 0.05, Chaos::off()).await;
    let ids: Vec<PeriodId> = [
        "2024", "2024-H1", "2024-H2", "2024-9M", "2024-Q1", "2024-Q2", "2024-Q3", "2024-Q4",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .chain((1..=12).map(|m| format!("2024-{m:02}").parse().unwrap()))
    .collect();
    for convention in [Convention::Decree09, Convention::Calendar] {
        let out = tempfile::tempdir().unwrap();
        let o = run_periods(&settings(&src.url(), out.path(), convention), &ids)
            .await
            .unwrap();
        assert_eq!(o.record.identities_hold, Some(true));
        assert!(o.record.identity_checks.iter().all(|c| c.failures == 0));
        assert!(o
            .record
            .identity_checks
            .iter()
            .filter(|c| c.table == "cases_by_agency")
            .any(|c| c.rows > 100));
        let t = |id: &str| {
            o.tables
                .iter()
                .find(|t| t.period.id.to_string() == id)
                .unwrap()
        };
        let months: Vec<String> = (1..=12).map(|m| format!("2024-{m:02}")).collect();
        let parts: [(&str, Vec<String>); 5] = [
            (
                "2024",
                vec![
                    "2024-Q1".into(),
                    "2024-Q2".into(),
                    "2024-Q3".into(),
                    "2024-Q4".into(),
                ],
            ),
            ("2024-H1", vec!["2024-Q1".into(), "2024-Q2".into()]),
            ("2024-9M", vec!["2024-H1".into(), "2024-Q3".into()]),
            ("2024-Q3", months[6..9].to_vec()),
            ("2024-Q4", months[9..12].to_vec()),
        ];
        for (whole, pieces) in &parts {
            for f in FLOWS {
                let sum: i64 = pieces.iter().map(|p| all_count(t(p), f)).sum();
                assert_eq!(
                    all_count(t(whole), f),
                    sum,
                    "{convention}: {f} of {whole} = sum over {pieces:?}"
                );
            }
            for s in STOCKS {
                let last = pieces.last().unwrap();
                assert_eq!(
                    all_count(t(whole), s),
                    all_count(t(last), s),
                    "{convention}: {s} at the end of {whole}"
                );
            }
        }
        assert!(
            all_count(t("2024-Q3"), "received_new") > 4000,
            "the province is not empty"
        );
        // Every partition was published.
        for id in &ids {
            assert!(
                out.path()
                    .join(format!("kpi/cases_by_level/period={id}/part-0.parquet"))
                    .exists(),
                "{id}"
            );
        }
    }
    src.stop();
}

//! A drawn demo province moved on by nights (`POST /demo/night`), as `make bench` does at ten
//! million records: a nightly run pulls the night's changes, rewrites only the staging
//! partitions they fall in, and counts only those again.

mod common;

use common::*;
use motcua::demo::{self, Chaos};
use motcua::domain::period::{Convention, PeriodId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_night_costs_what_changed() {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let src = demo::start_province(11, 0.1, TOKEN, Chaos::off(), addr)
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let s = settings(&src.url(), out.path(), Convention::Decree09);
    let q3: PeriodId = "2024-Q3".parse().unwrap();
    let first = run_periods(&s, &[q3]).await.unwrap().record.counts;
    assert!(first.records_pulled > 20_000, "{first:?}");
    assert_eq!(first.staging_partitions_written, first.staging_partitions);

    let night = src.night(400, 3).unwrap();
    assert_eq!(
        (night.progressed, night.new_cases, night.corrections),
        (200, 200, 3),
        "{night:?}"
    );
    let second = run_periods(&s, &[q3]).await.unwrap().record.counts;
    let changed = (night.progressed + night.new_records + night.corrections) as u64;
    // The night's records, and those within the lookback before the cursor.
    assert!(second.records_pulled >= changed, "{second:?} {night:?}");
    assert!(
        second.records_pulled < first.records_pulled / 10,
        "{second:?}"
    );
    let added = second.cases_in_staging - first.cases_in_staging;
    assert!(
        added > 0 && added <= night.new_cases as u64,
        "{added} {night:?}"
    );
    // Recent months and the corrected cases' partitions, not the province's history.
    // (Cases in progress were received in the last three months or so: 13 partitions at most.)
    assert!(
        second.staging_partitions_written <= 13 + night.corrections as u64,
        "{second:?}"
    );
    assert!(
        second.staging_partitions_written * 5 < second.staging_partitions,
        "{second:?}"
    );
    assert!(
        second.staging_bytes_written * 5 < second.staging_bytes,
        "{second:?}"
    );
    assert_eq!(
        second.kpi_partitions_counted,
        second.staging_partitions_written
    );

    // A source serving a fixed dataset has no nights: a usage error, not a panic.
    let fixed = demo_source(1, 0.01, Chaos::off()).await;
    assert!(matches!(
        fixed.night(10, 0),
        Err(motcua::error::Error::Usage(_))
    ));
    fixed.stop();
    src.stop();
}

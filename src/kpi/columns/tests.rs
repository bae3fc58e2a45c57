use super::*;

#[test]
fn the_columns_decoded_are_the_columns_the_kpis_read() {
    let mut decoded: Vec<&str> = STRING_COLUMNS
        .iter()
        .chain(&INT_COLUMNS)
        .chain(&FLAG_COLUMNS)
        .chain(&["supplement_requests", "transfers"])
        .copied()
        .collect();
    let mut read = super::super::INPUT_COLUMNS.to_vec();
    decoded.sort_unstable();
    read.sort_unstable();
    assert_eq!(decoded, read);
    // Who holds a case: agency, field and their names.
    let holders: Vec<&str> = HOLDER_STRINGS.iter().map(|k| STRING_COLUMNS[*k]).collect();
    assert_eq!(
        holders,
        [
            "agency_code",
            "field_code",
            "agency_name_text",
            "field_name"
        ]
    );
}
use crate::domain::period::Period;
use crate::domain::period::{Convention, PeriodId};
use crate::kpi::attribution::Agencies;
use crate::kpi::partial::partial;
use crate::normalise::{Normaliser, PiiKey};

/// The cases of a small demo province, normalised as staging holds them.
fn demo_cases() -> DataFrame {
    let d = crate::demo::generator::generate(7, 0.03);
    let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
    n.add_records("raw/x", &d.cases);
    n.finish().unwrap().cases
}

#[test]
fn cases_in_many_chunks_count_as_in_one() {
    let cases = demo_cases();
    let periods: Vec<Period> = ["2024-Q3", "2024-07", "2024"]
        .map(|p| p.parse::<PeriodId>().unwrap().resolve(Convention::Decree09))
        .to_vec();
    let agencies = Agencies::default();
    let counted = |df: &DataFrame| {
        let t = partial(df, &periods, &agencies)
            .unwrap()
            .total(&periods)
            .unwrap();
        let (c, u) = t.frames();
        (c.clone(), u.clone())
    };
    let mut one = cases.clone();
    one.rechunk_mut();
    // Three chunks of unequal length, as a slice of three row groups is read.
    let h = cases.height();
    let mut three = cases.slice(0, h / 5);
    three
        .vstack_mut(&cases.slice((h / 5) as i64, h / 2))
        .unwrap();
    three
        .vstack_mut(&cases.slice((h / 5 + h / 2) as i64, h))
        .unwrap();
    assert_eq!(three.first_col_n_chunks(), 3);
    // Columns chunked differently from each other.
    let mut mixed = three.clone();
    let status = mixed.column("status").unwrap().rechunk();
    mixed.with_column(status).unwrap();

    let (counts, used) = counted(&one);
    let received: i64 = counts
        .column("received_new#0")
        .unwrap()
        .i64()
        .unwrap()
        .sum()
        .unwrap();
    assert!(received > 100, "the demo quarter has cases: {received}");
    for df in [&three, &mixed] {
        let (c, u) = counted(df);
        assert!(c.equals_missing(&counts), "{c}\n{counts}");
        assert!(u.equals_missing(&used));
    }
}

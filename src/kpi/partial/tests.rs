//! A partial cleared and counted into again ([`Partial::clear`], as the count's spare
//! partials are), and room made by moving ([`room`]).

use super::*;
use crate::domain::period::{Convention, PeriodId};
use crate::normalise::{Normaliser, PiiKey};

/// A partial cleared and counted into again counts exactly as a new one: of a first half
/// of a province's cases, then the other half, against the other half counted afresh.
#[test]
fn a_partial_cleared_counts_as_a_new_one() {
    let d = crate::demo::generator::generate(5, 0.03);
    let mut n = Normaliser::new(PiiKey::new(b"k"), "r");
    n.add_records("raw/x", &d.cases);
    let cases = n.finish().unwrap().cases;
    let half = cases.height() / 2;
    let (first, second) = (cases.slice(0, half), cases.slice(half as i64, half));
    let periods: Vec<Period> = ["2024-Q3", "2024-07"]
        .map(|p| p.parse::<PeriodId>().unwrap().resolve(Convention::Decree09))
        .to_vec();
    let agencies = Agencies::default();
    let mut reused = partial(&first, &periods, &agencies).unwrap();
    assert!(!reused.is_empty());
    reused.clear();
    assert!(reused.is_empty());
    reused.count(&second, &periods, &agencies).unwrap();
    let fresh = partial(&second, &periods, &agencies).unwrap();
    let frames = |p: Partial| format!("{:?}", p.total(&periods).unwrap().frames());
    assert_eq!(frames(reused), frames(fresh));
}

/// `room` keeps what a vector holds and makes room for as many more as asked.
#[test]
fn room_keeps_the_values_and_makes_room() {
    let mut v: Vec<i64> = (0..10).collect();
    room(&mut v, 1000);
    assert_eq!(v, (0..10).collect::<Vec<_>>());
    assert!(v.capacity() >= 1010);
    let cap = v.capacity();
    room(&mut v, 5);
    assert_eq!(v.capacity(), cap);
    v.clear();
    room(&mut v, 3 * cap);
    assert!(v.is_empty() && v.capacity() >= 3 * cap);
}

//! The sums of the [`cache`](super::cache), kept whole. Beside each period's cached counts per
//! partition, `_state/kpi-cache/<F>_<L>.sum` keeps their total over every partition of
//! staging, and which partitions at which versions it sums. A run that finds staging exactly
//! as that list says (a period published again, a report rebuilt, a backfill of periods
//! already counted) reads that one small file instead of a record per partition; any
//! difference (a partition replaced, added or gone) and the run counts as
//! [`cache`](super::cache) says, then writes the sums again. A file is `MAGIC`, then one zstd
//! frame of a bincode [`SumFile`].
//!
//! A sum file is read like the cache: as input. Another fingerprint, a damaged file or members
//! that differ from staging make it unused, never fatal; writing it is best effort.

use std::collections::BTreeMap;

use bytes::Bytes;
use tracing::{debug, warn};

use super::attribution::Agencies;
use super::cache::fingerprint;
use super::partial::{Kept, Partial};
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::parquet::blocking;
use crate::store::Store;

/// The first bytes of a sum file: what it is and the version of its layout.
const MAGIC: &[u8] = b"motcua kpi-sums 3\n";
/// The most bytes a sum file may decompress to: a damaged one is refused, not allocated.
const MOST: u64 = 1 << 30;

/// Where period `p`'s sums are kept.
pub fn path(p: &Period) -> String {
    format!("_state/kpi-cache/{}_{}.sum", p.start, p.end)
}

/// Where a motcua before this layout kept them (Parquet); removed when the sums are written.
fn older_path(p: &Period) -> String {
    format!("_state/kpi-cache/{}_{}.sum.parquet", p.start, p.end)
}

/// One period's sums.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SumFile {
    fingerprint: String,
    /// The partitions summed (path, version), in path order.
    members: Vec<(String, String)>,
    counts: Kept,
}

/// The counts of every partition of `listing` (path, version) for `periods`, when every
/// period's sum file sums exactly those partitions at those versions.
pub async fn load(
    store: &Store,
    periods: &[Period],
    agencies: &Agencies,
    listing: &[(String, String)],
) -> Option<Partial> {
    let fp = fingerprint(agencies);
    let want: BTreeMap<String, String> = listing.iter().cloned().collect();
    let mut total = Partial::new(periods.len());
    for (i, p) in periods.iter().enumerate() {
        let bytes = match store.get(&path(p)).await {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                warn!(file = %path(p), error = %e, "the KPI sums cannot be read: counting from the cache");
                return None;
            }
        };
        let (fp, want) = (fp.clone(), want.clone());
        let read = blocking(move || {
            let used = add(&mut total, i, &bytes, &fp, &want)?;
            Ok((total, used))
        })
        .await;
        match read {
            Ok((t, true)) => total = t,
            Ok((_, false)) => {
                debug!(file = %path(p), "the KPI sums are of another staging: counting from the cache");
                return None;
            }
            Err(e) => {
                warn!(file = %path(p), error = %e, "the KPI sums cannot be read: counting from the cache");
                return None;
            }
        }
    }
    Some(total)
}

fn damaged(what: impl std::fmt::Display) -> Error {
    Error::Internal(format!("a damaged KPI sums file: {what}"))
}

/// Adds period `i`'s sums in `bytes` to `total` when they were made under `fp` over exactly
/// the partitions of `want`; whether they were.
fn add(
    total: &mut Partial,
    i: usize,
    bytes: &[u8],
    fp: &str,
    want: &BTreeMap<String, String>,
) -> Result<bool> {
    use std::io::Read;
    let body = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| damaged("not a KPI sums file of this motcua"))?;
    let mut plain = vec![];
    zstd::stream::read::Decoder::with_buffer(body)
        .map_err(damaged)?
        .take(MOST)
        .read_to_end(&mut plain)
        .map_err(damaged)?;
    let (sums, _): (SumFile, usize) =
        bincode::serde::decode_from_slice(&plain, bincode::config::standard()).map_err(damaged)?;
    if sums.fingerprint != fp || !sums.members.iter().cloned().eq(want.clone()) {
        return Ok(false);
    }
    total.add_kept(i, &sums.counts, i == 0)?;
    Ok(true)
}

/// One period's sums to write, and where.
pub struct Prepared {
    path: String,
    older: String,
    sums: SumFile,
}

/// The sums of each period to keep: `total`, the counts of every partition of `listing` for
/// `periods` ([`write`] them).
pub fn prepare(
    periods: &[Period],
    agencies: &Agencies,
    listing: &[(String, String)],
    total: &Partial,
) -> Vec<Prepared> {
    let fp = fingerprint(agencies);
    let mut members = listing.to_vec();
    members.sort();
    periods
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let sums = SumFile {
                fingerprint: fp.clone(),
                members: members.clone(),
                counts: total.kept(i),
            };
            Prepared {
                path: path(p),
                older: older_path(p),
                sums,
            }
        })
        .collect()
}

/// Keeps the sums [`prepare`]d (encoding them on the blocking pool). A failure is a warning:
/// the next run counts from the cache.
pub async fn write(store: &Store, prepared: Vec<Prepared>) {
    for Prepared { path, older, sums } in prepared {
        let file = path;
        let written = match crate::parquet::blocking(move || encode(&sums)).await {
            Ok(b) => store.publish(&file, Bytes::from(b)).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            warn!(file = %file, error = %e, "the KPI sums could not be written: the next run counts from the cache");
            continue;
        }
        if let Err(e) = store.delete(&older).await {
            warn!(file = %older, error = %e, "an older KPI sums file could not be removed");
        }
    }
}

/// Keeps `total`, the counts of every partition of `listing` for `periods`, as the sums of
/// each period, at once (for tests; a run [`prepare`]s them and [`write`]s them later).
#[cfg(test)]
pub async fn save(
    store: &Store,
    periods: &[Period],
    agencies: &Agencies,
    listing: &[(String, String)],
    total: &Partial,
) {
    write(store, prepare(periods, agencies, listing, total)).await;
}

/// A sum file's bytes.
fn encode(sums: &SumFile) -> Result<Vec<u8>> {
    let plain = bincode::serde::encode_to_vec(sums, bincode::config::standard())
        .map_err(|e| Error::Internal(format!("encoding the KPI sums: {e}")))?;
    let mut out = MAGIC.to_vec();
    zstd::stream::copy_encode(plain.as_slice(), &mut out, 1)
        .map_err(|e| Error::Internal(format!("compressing the KPI sums: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kpi::cache::tests::periods;
    use crate::kpi::partial::{Row, PER_PERIOD};

    fn partial(n: i64) -> Partial {
        let mut p = Partial::new(2);
        for i in 0..2 {
            let counts: Vec<i64> = (0..PER_PERIOD as i64).map(|c| (c + i as i64) * n).collect();
            for (agency, name) in [("A", Some("Sở A")), ("B", None)] {
                let row = |key| Row {
                    agency,
                    key,
                    counts: &counts,
                    names: (name, Some("Hộ tịch")),
                    cases: n,
                };
                p.add_row(i, row(Some("HT")), false, i == 0);
                p.add_row(i, row(None), false, i == 0);
                p.add_row(i, row(Some("1.0001")), true, false);
            }
        }
        p
    }

    fn frames(p: Partial) -> String {
        format!("{:?}", p.total(&periods()).unwrap().frames())
    }

    fn listing(v: &str) -> Vec<(String, String)> {
        vec![
            (
                "cases/case_month=2024-07/part-0.parquet".into(),
                "v1".into(),
            ),
            ("cases/case_month=2024-08/part-0.parquet".into(), v.into()),
        ]
    }

    /// The sums come back as they were summed, for staging exactly as they list it, and for
    /// nothing else: a partition replaced, added or gone, other agencies, a damaged file.
    /// Counts kept only where not 0, each at its place among its groups' counts: a place
    /// beyond them (a damaged or foreign file) is refused with nothing added.
    #[test]
    fn kept_counts_are_added_at_their_place_and_a_place_beyond_is_refused() {
        let kept = |counts: serde_json::Value| -> Kept {
            serde_json::from_value(serde_json::json!({
                "codes": ["A", "HT", "KT"],
                "groups": [[0, 1, u32::MAX, u32::MAX, 3], [0, 2, u32::MAX, u32::MAX, 4]],
                "counts": counts,
                "used": [],
            }))
            .unwrap()
        };
        let mut total = Partial::new(1);
        let beyond = kept(serde_json::json!([[2 * PER_PERIOD, 1]]));
        assert!(total.add_kept(0, &beyond, true).is_err());
        assert!(total.is_empty());
        let place = PER_PERIOD + 2;
        total
            .add_kept(0, &kept(serde_json::json!([[0, 5], [place, 7]])), true)
            .unwrap();
        total
            .add_kept(0, &kept(serde_json::json!([[place, 1]])), false)
            .unwrap();
        let periods = &periods()[..1];
        let (counts, _) = total.total(periods).unwrap().frames();
        let counts = counts.sort(["field_code"], Default::default()).unwrap();
        let col = |name: &str| -> Vec<Option<i64>> {
            counts.column(name).unwrap().i64().unwrap().iter().collect()
        };
        assert_eq!(col("received_online#0"), [Some(5), Some(0)]);
        assert_eq!(col("received_new#0"), [Some(0), Some(8)]);
        assert_eq!(col("_cases"), [Some(3), Some(4)]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sums_come_back_only_for_the_staging_they_sum() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let agencies = Agencies::default();
        let ps = periods();
        assert!(load(&store, &ps, &agencies, &listing("v1")).await.is_none());
        // An earlier motcua's Parquet sums: removed when these are written.
        let older = older_path(&ps[0]);
        store
            .publish(&older, Bytes::from_static(b"PAR1"))
            .await
            .unwrap();
        let mut total = partial(3);
        total.add(&partial(5));
        save(&store, &ps, &agencies, &listing("v1"), &total).await;
        let got = load(&store, &ps, &agencies, &listing("v1")).await.unwrap();
        assert_eq!(frames(got), frames(total.clone()));
        assert_eq!(store.get(&older).await.unwrap(), None);
        // A partition replaced, one more, one gone: not these sums.
        assert!(load(&store, &ps, &agencies, &listing("v2")).await.is_none());
        let mut more = listing("v1");
        more.push((
            "cases/case_month=2024-09/part-0.parquet".into(),
            "v1".into(),
        ));
        assert!(load(&store, &ps, &agencies, &more).await.is_none());
        assert!(load(&store, &ps, &agencies, &listing("v1")[..1])
            .await
            .is_none());
        // Other agencies: not these sums.
        let other = Agencies::new(crate::domain::agency::Catalog::new(vec![
            crate::normalise::Agency {
                code: "A".into(),
                ..Default::default()
            },
        ]))
        .unwrap();
        assert!(load(&store, &ps, &other, &listing("v1")).await.is_none());
        // One period's file damaged: nothing, and no error.
        store
            .publish(&path(&ps[1]), Bytes::from_static(b"damaged"))
            .await
            .unwrap();
        assert!(load(&store, &ps, &agencies, &listing("v1")).await.is_none());
        // Staging of no partitions sums to nothing.
        let none = Partial::new(2);
        save(&store, &ps, &agencies, &[], &none).await;
        let got = load(&store, &ps, &agencies, &[]).await.unwrap();
        assert_eq!(frames(got), frames(none));
    }
}

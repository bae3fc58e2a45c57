//! Counts that do not need counting again. A partition's partial counts for a period depend
//! only on the partition's file, the period's bounds, the agencies' validity and the rules; so
//! each period's counts are kept per partition in `_state/kpi-cache/<F>_<L>.parquet`, beside
//! the version of the file they came from. A run counts only the partitions whose file
//! changed since (a night's: a few), and adds the others' cached rows, read a row group at a
//! time.
//!
//! The cache is state read back from storage, so it is input: a file that is unreadable, of
//! another shape, or made under other agencies or rules is ignored (and rewritten), never
//! trusted and never fatal. Writing it is best effort: a run that cannot write it still
//! publishes, and the next one counts again.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use polars::prelude::*;
use sha2::{Digest, Sha256};
use tracing::warn;

use super::attribution::Agencies;
use super::partial::{Partial, PER_PERIOD};
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::parquet::{ParquetEncoder, ParquetFile, RowGroupWriter, ROW_GROUP_ROWS};
use crate::store::Store;

/// Changes whenever what a partial count means changes: the rules, the columns kept.
const RULES: &str = "counted-v2";

/// Where period `p`'s counts are kept.
pub fn path(p: &Period) -> String {
    format!("_state/kpi-cache/{}_{}.parquet", p.start, p.end)
}

/// What the counts were made under: the rules and every agency's validity.
pub(super) fn fingerprint(agencies: &Agencies) -> String {
    let mut h = Sha256::new();
    h.update(RULES);
    for a in agencies.catalog.all() {
        h.update(format!("\n{}|{:?}|{:?}", a.code, a.valid_from, a.valid_to));
    }
    hex::encode(&h.finalize()[..12])
}

/// One period's cache file as read: the file and, per partition, the version counted.
struct PeriodFile {
    file: ParquetFile,
    versions: BTreeMap<String, String>,
}

/// The cached counts of the periods of a run.
pub struct Cache {
    fingerprint: String,
    periods: Vec<Period>,
    files: Vec<Option<PeriodFile>>,
}

impl Cache {
    /// The cached counts of `periods` (none for a period whose file cannot be used).
    pub async fn load(store: &Store, periods: &[Period], agencies: &Agencies) -> Cache {
        let fingerprint = fingerprint(agencies);
        let mut files = vec![];
        for p in periods {
            let read = match store.get(&path(p)).await {
                Ok(Some(b)) => {
                    let f = fingerprint.clone();
                    crate::parquet::blocking(move || open(b, &f)).await
                }
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            };
            files.push(read.unwrap_or_else(|e| {
                warn!(file = %path(p), error = %e, "the KPI cache cannot be read: counting again");
                None
            }));
        }
        Cache {
            fingerprint,
            periods: periods.to_vec(),
            files,
        }
    }

    /// The partitions of `listing` (path, version) whose counts every period has, for the
    /// same version of the file.
    pub fn usable(&self, listing: &[(String, String)]) -> BTreeSet<String> {
        listing
            .iter()
            .filter(|(p, v)| {
                self.files.iter().all(|f| {
                    f.as_ref()
                        .is_some_and(|f| f.versions.get(p).is_some_and(|c| c == v))
                })
            })
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Adds the cached counts of `partitions` to `total`, a row group at a time.
    pub fn add_to(&self, total: &mut Partial, partitions: &BTreeSet<String>) -> Result<()> {
        for (i, f) in self.files.iter().enumerate() {
            let Some(f) = f else { continue };
            let columns: Vec<String> = f.file.columns();
            let wanted: Vec<&str> = columns
                .iter()
                .map(String::as_str)
                .filter(|c| !matches!(*c, "fingerprint" | "version"))
                .collect();
            for range in f.file.ranges(ROW_GROUP_ROWS) {
                let df = f.file.read(Some(&wanted), range)?;
                add_rows(total, i, &df, partitions)?;
            }
        }
        Ok(())
    }

    /// A writer of the next cache, the cached rows of `kept` carried over (so make it only when
    /// something changed: a partition counted, or [`Cache::stale`]).
    pub fn writer(&self, enc: &ParquetEncoder, kept: &BTreeSet<String>) -> Result<CacheWriter> {
        let schema = frame(&self.fingerprint, "", "", &Partial::new(1), 0)?
            .schema()
            .clone();
        let mut files = vec![];
        for f in &self.files {
            let mut w = enc.writer(&schema)?;
            if let Some(f) = f {
                for range in f.file.ranges(ROW_GROUP_ROWS) {
                    let df = f.file.read(None, range)?;
                    let mask = df
                        .column("partition")?
                        .str()?
                        .iter()
                        .map(|p| p.is_some_and(|p| kept.contains(p)))
                        .collect::<BooleanChunked>();
                    w.push(df.filter(&mask)?.select(schema.iter_names().cloned())?)?;
                }
            }
            files.push(w);
        }
        Ok(CacheWriter {
            fingerprint: self.fingerprint.clone(),
            periods: self.periods.clone(),
            files,
        })
    }

    /// Whether the cache would change by keeping only `kept` (a period without a usable file,
    /// or partitions gone or replaced).
    pub fn stale(&self, kept: &BTreeSet<String>) -> bool {
        !self.files.iter().all(|f| {
            f.as_ref()
                .is_some_and(|f| f.versions.keys().eq(kept.iter()))
        })
    }
}

/// The next cache being written: the rows carried over, then those of each partition counted.
pub struct CacheWriter {
    fingerprint: String,
    periods: Vec<Period>,
    files: Vec<RowGroupWriter<Vec<u8>>>,
}

impl CacheWriter {
    /// Keeps the counts of `partition` at `version`.
    pub fn push(&mut self, partition: &str, version: &str, partial: &Partial) -> Result<()> {
        for (i, w) in self.files.iter_mut().enumerate() {
            w.push(frame(&self.fingerprint, partition, version, partial, i)?)?;
        }
        Ok(())
    }

    /// Writes the periods' files; a failure is a warning.
    pub async fn save(self, store: &Store) {
        for (w, p) in self.files.into_iter().zip(&self.periods) {
            let written = match w.finish() {
                Ok(b) => store.publish(&path(p), Bytes::from(b)).await,
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                warn!(file = %path(p), error = %e, "the KPI cache could not be written: the next run counts again");
            }
        }
    }
}

/// A period file's partitions and versions, or `None` when made under another fingerprint.
fn open(bytes: Bytes, fingerprint: &str) -> Result<Option<PeriodFile>> {
    let file = ParquetFile::open(bytes)?;
    let mut versions = BTreeMap::new();
    for range in file.ranges(ROW_GROUP_ROWS) {
        let df = file.read(Some(&["fingerprint", "partition", "version"]), range)?;
        let fp = df.column("fingerprint")?.str()?;
        if fp.iter().any(|f| f != Some(fingerprint)) {
            return Ok(None);
        }
        let parts = df.column("partition")?.str()?;
        let vs = df.column("version")?.str()?;
        for (p, v) in parts.iter().zip(vs.iter()) {
            let (Some(p), Some(v)) = (p, v) else {
                return Err(Error::Internal(
                    "a KPI cache row without its partition".into(),
                ));
            };
            if versions.get(p).is_some_and(|w: &String| w != v) {
                return Err(Error::Internal(format!("{p} cached at two versions")));
            }
            versions
                .entry(p.to_string())
                .or_insert_with(|| v.to_string());
        }
    }
    Ok(Some(PeriodFile { file, versions }))
}

/// The column of count `m` of a cached row.
fn count_col(m: usize) -> String {
    format!("c{m:02}")
}

/// Period `i` of `partial` as cache rows: `g` rows per agency × field, `u` rows per agency ×
/// procedure (the count in `c00`).
pub(super) fn frame(
    fp: &str,
    partition: &str,
    version: &str,
    partial: &Partial,
    i: usize,
) -> Result<DataFrame> {
    let (groups, used) = partial.rows(i);
    let n = groups.len() + used.len();
    let kind: Vec<&str> = (0..n)
        .map(|r| if r < groups.len() { "g" } else { "u" })
        .collect();
    let agency: Vec<&str> = groups
        .iter()
        .map(|g| g.agency)
        .chain(used.iter().map(|u| u.0))
        .collect();
    let key: Vec<Option<&str>> = groups
        .iter()
        .map(|g| g.field)
        .chain(used.iter().map(|u| u.1))
        .collect();
    let mut cols = vec![
        Column::new("fingerprint".into(), vec![fp; n]),
        Column::new("partition".into(), vec![partition; n]),
        Column::new("version".into(), vec![version; n]),
        Column::new("kind".into(), kind),
        Column::new("agency_code".into(), agency),
        Column::new("key".into(), key),
    ];
    for m in 0..PER_PERIOD {
        let v: Vec<i64> = groups
            .iter()
            .map(|g| g.counts[m])
            .chain(used.iter().map(|u| if m == 0 { u.2 } else { 0 }))
            .collect();
        cols.push(Column::new(count_col(m).into(), v));
    }
    let names: Vec<Option<&str>> = groups
        .iter()
        .map(|g| g.agency_name)
        .chain(used.iter().map(|_| None))
        .collect();
    let fields: Vec<Option<&str>> = groups
        .iter()
        .map(|g| g.field_name)
        .chain(used.iter().map(|_| None))
        .collect();
    let cases: Vec<i64> = groups
        .iter()
        .map(|g| g.cases)
        .chain(used.iter().map(|_| 0))
        .collect();
    cols.extend([
        Column::new("agency_name_text".into(), names),
        Column::new("field_name".into(), fields),
        Column::new("cases".into(), cases),
    ]);
    Ok(DataFrame::new(n, cols)?)
}

/// Adds the cache rows of `df` (period `i`) that belong to `partitions` to `total`.
pub(super) fn add_rows(
    total: &mut Partial,
    i: usize,
    df: &DataFrame,
    partitions: &BTreeSet<String>,
) -> Result<()> {
    let text = |c: &str| -> Result<Vec<Option<&str>>> { Ok(df.column(c)?.str()?.iter().collect()) };
    let (part, kind, agency, key) = (
        text("partition")?,
        text("kind")?,
        text("agency_code")?,
        text("key")?,
    );
    let (names, fields) = (text("agency_name_text")?, text("field_name")?);
    let damaged = || Error::Internal("a damaged KPI cache row".into());
    let ints = |c: &str| -> Result<Vec<i64>> {
        let n = df.column(c)?.i64()?.rechunk();
        Ok(n.cont_slice().map_err(|_| damaged())?.to_vec())
    };
    let counts: Vec<Vec<i64>> = (0..PER_PERIOD)
        .map(|m| ints(&count_col(m)))
        .collect::<Result<_>>()?;
    let cases = ints("cases")?;
    let mut row_counts = vec![0i64; PER_PERIOD];
    // Rows come a partition at a time: decide once per run of rows.
    let mut last: Option<(&str, bool)> = None;
    for r in 0..df.height() {
        let p = part[r].ok_or_else(damaged)?;
        let wanted = match last {
            Some((q, w)) if q == p => w,
            _ => partitions.contains(p),
        };
        last = Some((p, wanted));
        if !wanted {
            continue;
        }
        for (m, c) in counts.iter().enumerate() {
            row_counts[m] = c[r];
        }
        let used = match kind[r] {
            Some("g") => false,
            Some("u") => true,
            _ => return Err(damaged()),
        };
        let row = super::partial::Row {
            agency: agency[r].ok_or_else(damaged)?,
            key: key[r],
            counts: &row_counts,
            names: (names[r], fields[r]),
            cases: cases[r],
        };
        total.add_row(i, row, used, i == 0);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::period::{Convention, PeriodId};
    use crate::kpi::partial::Totals;

    /// Two quarters, for the tests of the cache and of its sums.
    pub(crate) fn periods() -> Vec<Period> {
        ["2024-Q2", "2024-Q3"]
            .iter()
            .map(|p| p.parse::<PeriodId>().unwrap().resolve(Convention::Decree09))
            .collect()
    }

    fn partial(n: i64) -> Partial {
        let mut p = Partial::new(2);
        for i in 0..2 {
            let counts: Vec<i64> = (0..PER_PERIOD as i64).map(|c| (c + i as i64) * n).collect();
            let row = |key| super::super::partial::Row {
                agency: "A",
                key,
                counts: &counts,
                names: (Some("Sở"), None),
                cases: 7,
            };
            p.add_row(i, row(Some("HT")), false, i == 0);
            p.add_row(i, row(Some("1.0001")), true, false);
        }
        p
    }

    fn sums(p: Partial) -> String {
        let t: Totals = p.total(&periods()).unwrap();
        format!("{:?}", t.frames())
    }

    async fn cached(
        store: &Store,
        agencies: &Agencies,
        listing: &[(String, String)],
    ) -> (BTreeSet<String>, String) {
        let c = Cache::load(store, &periods(), agencies).await;
        let keep = c.usable(listing);
        let mut total = Partial::new(2);
        c.add_to(&mut total, &keep).unwrap();
        (keep, sums(total))
    }

    /// Counts kept for two periods come back, after a round trip through storage, as they
    /// were; another version, fingerprint or a damaged file gives none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_come_back_only_for_the_same_file_and_agencies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let enc = ParquetEncoder::new().unwrap();
        let agencies = Agencies::default();
        let c = Cache::load(&store, &periods(), &agencies).await;
        let listing = vec![
            ("cases/x".to_string(), "v1".to_string()),
            ("cases/y".to_string(), "v1".to_string()),
        ];
        assert!(c.usable(&listing).is_empty());
        let mut w = c.writer(&enc, &BTreeSet::new()).unwrap();
        w.push("cases/x", "v1", &partial(3)).unwrap();
        w.push("cases/y", "v1", &partial(5)).unwrap();
        w.save(&store).await;
        let (keep, got) = cached(&store, &agencies, &listing).await;
        assert_eq!(keep.len(), 2);
        let mut both = partial(3);
        both.add(&partial(5));
        assert_eq!(got, sums(both));
        // y's file replaced: only x comes back; the next cache carries x over and forgets y.
        let listing = vec![
            listing[0].clone(),
            ("cases/y".to_string(), "v2".to_string()),
        ];
        let (keep, got) = cached(&store, &agencies, &listing).await;
        assert_eq!(keep.iter().collect::<Vec<_>>(), ["cases/x"]);
        assert_eq!(got, sums(partial(3)));
        let c = Cache::load(&store, &periods(), &agencies).await;
        assert!(c.stale(&keep));
        c.writer(&enc, &keep).unwrap().save(&store).await;
        assert!(!Cache::load(&store, &periods(), &agencies)
            .await
            .stale(&keep));
        let (keep, got) = cached(&store, &agencies, &listing).await;
        assert_eq!((keep.len(), got), (1, sums(partial(3))));
        // Other agencies: nothing.
        let other = Agencies::new(crate::domain::agency::Catalog::new(vec![
            crate::normalise::Agency {
                code: "A".into(),
                ..Default::default()
            },
        ]))
        .unwrap();
        assert!(cached(&store, &other, &listing).await.0.is_empty());
        // A damaged file: nothing, no error.
        store
            .publish(&path(&periods()[0]), Bytes::from_static(b"damaged"))
            .await
            .unwrap();
        assert!(cached(&store, &agencies, &listing).await.0.is_empty());
    }
}

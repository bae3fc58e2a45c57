//! Counts that do not need counting again. A partition's partial counts for a period depend
//! only on the partition's file, the period's bounds, the agencies' validity and the rules; so
//! each period's counts are kept per partition in `_state/kpi-cache/<F>_<L>.counts`, beside
//! the version of the file they came from. A run counts only the partitions whose file
//! changed since (a night's: a few), and adds the others' kept counts.
//!
//! A file is `MAGIC`, then one zstd stream (of several frames: `cache/writer.rs`): the
//! fingerprint, then a record per partition (its path, the version counted, and its counts as
//! [`Kept`], bincode), then an end mark. Records
//! are read one at a time, so memory holds one partition's counts, and a partition carried
//! over to the next cache is copied, not decoded.
//!
//! The cache is state read back from storage, so it is input: a file that is unreadable, of
//! another shape, or made under other agencies or rules is ignored (and rewritten), never
//! trusted and never fatal. Writing it is best effort: a run that cannot write it still
//! publishes, and the next one counts again.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tracing::warn;

use super::attribution::Agencies;
use super::partial::{Kept, Partial};
use crate::domain::period::Period;
use crate::error::{Error, Result};
use crate::store::Store;

mod writer;
use writer::{begin, record};
pub use writer::{CacheWriter, Framed};

/// Changes whenever what a partial count means changes: the rules, the columns kept.
const RULES: &str = "counted-v2";
/// The first bytes of a cache file: what it is and the version of its layout.
const MAGIC: &[u8] = b"motcua kpi-cache 4\n";
/// The end mark, where a record's first length would be.
const END: u64 = u64::MAX;
/// The most bytes a field of a record may claim: a damaged length is refused before anything
/// is allocated for it.
const MOST: u64 = 1 << 30;

/// Where period `p`'s counts are kept.
pub fn path(p: &Period) -> String {
    format!("_state/kpi-cache/{}_{}.counts", p.start, p.end)
}

/// Where a motcua before this layout kept them (Parquet); removed when the cache is written.
fn older_path(p: &Period) -> String {
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

fn damaged(what: impl std::fmt::Display) -> Error {
    Error::Internal(format!("a damaged KPI cache: {what}"))
}

fn put(w: &mut impl Write, bytes: &[u8]) -> Result<()> {
    w.write_all(&(bytes.len() as u64).to_le_bytes())
        .and_then(|()| w.write_all(bytes))
        .map_err(|e| Error::Internal(format!("writing the KPI cache: {e}")))
}

/// A length, or `None` at the end mark.
fn length(r: &mut impl Read) -> Result<Option<u64>> {
    let mut n = [0u8; 8];
    r.read_exact(&mut n).map_err(damaged)?;
    match u64::from_le_bytes(n) {
        END => Ok(None),
        n if n > MOST => Err(damaged(format!("a field of {n} bytes"))),
        n => Ok(Some(n)),
    }
}

/// `n` bytes of `r`, grown as they come: a damaged length on a short file is an error before
/// memory for what it claims is taken.
fn bytes_of(r: &mut impl Read, n: u64) -> Result<Vec<u8>> {
    let mut b = vec![];
    r.take(n).read_to_end(&mut b).map_err(damaged)?;
    if b.len() as u64 != n {
        return Err(damaged(format!("a field of {n} bytes cut at {}", b.len())));
    }
    Ok(b)
}

fn field(r: &mut impl Read) -> Result<Vec<u8>> {
    match length(r)? {
        Some(n) => bytes_of(r, n),
        None => Err(damaged("an end mark inside a record")),
    }
}

fn text(b: Vec<u8>) -> Result<String> {
    String::from_utf8(b).map_err(|_| damaged("text that is not UTF-8"))
}

/// One partition's counts in a cache file, as read: still encoded.
struct Record {
    partition: String,
    version: String,
    kept: Vec<u8>,
}

/// The records of a cache file, in order, after its fingerprint.
struct Records<'a> {
    z: zstd::stream::read::Decoder<'a, &'a [u8]>,
    done: bool,
}

impl<'a> Records<'a> {
    /// The records of `bytes`, or `None` when made under another fingerprint.
    fn of(bytes: &'a [u8], fingerprint: &str) -> Result<Option<Records<'a>>> {
        let body = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| damaged("not a KPI cache file of this motcua"))?;
        let mut z = zstd::stream::read::Decoder::with_buffer(body).map_err(damaged)?;
        let fp = text(field(&mut z)?)?;
        Ok((fp == fingerprint).then_some(Records { z, done: false }))
    }

    fn next(&mut self) -> Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        let Some(n) = length(&mut self.z)? else {
            self.done = true;
            return Ok(None);
        };
        let partition = text(bytes_of(&mut self.z, n)?)?;
        let version = text(field(&mut self.z)?)?;
        let kept = field(&mut self.z)?;
        Ok(Some(Record {
            partition,
            version,
            kept,
        }))
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// One period's cache file as read: its bytes and, per partition, the version counted.
struct PeriodFile {
    bytes: Bytes,
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

    /// Adds the cached counts of `partitions` to `total`, a partition at a time.
    pub fn add_to(&self, total: &mut Partial, partitions: &BTreeSet<String>) -> Result<()> {
        for (i, f) in self.files.iter().enumerate() {
            let Some(f) = f else { continue };
            let Some(mut records) = Records::of(&f.bytes, &self.fingerprint)? else {
                continue;
            };
            while let Some(r) = records.next()? {
                if partitions.contains(&r.partition) {
                    let (kept, _): (Kept, usize) =
                        bincode::serde::decode_from_slice(&r.kept, config()).map_err(damaged)?;
                    total.add_kept(i, &kept, i == 0)?;
                }
            }
        }
        Ok(())
    }

    /// A writer of the next cache, the cached counts of `kept` carried over (so make it only
    /// when something changed: a partition counted, or [`Cache::stale`]).
    pub fn writer(&self, kept: &BTreeSet<String>) -> Result<CacheWriter> {
        let mut files = vec![];
        for f in &self.files {
            let mut w = begin(&self.fingerprint)?;
            if let Some(f) = f {
                if let Some(mut records) = Records::of(&f.bytes, &self.fingerprint)? {
                    while let Some(r) = records.next()? {
                        if kept.contains(&r.partition) {
                            record(&mut w, &r.partition, &r.version, r.kept)?;
                        }
                    }
                }
            }
            files.push(w);
        }
        Ok(CacheWriter {
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

/// A period file's partitions and versions, or `None` when made under another fingerprint.
fn open(bytes: Bytes, fingerprint: &str) -> Result<Option<PeriodFile>> {
    let mut versions = BTreeMap::new();
    {
        let Some(mut records) = Records::of(&bytes, fingerprint)? else {
            return Ok(None);
        };
        while let Some(r) = records.next()? {
            if versions.insert(r.partition.clone(), r.version).is_some() {
                return Err(damaged(format!("{} cached twice", r.partition)));
            }
        }
    }
    Ok(Some(PeriodFile { bytes, versions }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::period::{Convention, PeriodId};
    use crate::kpi::partial::{Totals, PER_PERIOD};

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

    /// What the cache encodes (codes borrowed) decodes as the counts kept, byte for byte
    /// the encoding of those.
    #[test]
    fn counts_encoded_with_borrowed_codes_decode_as_kept() {
        let p = partial(3);
        for i in 0..2 {
            let borrowed = bincode::serde::encode_to_vec(p.kept_ref(i), config()).unwrap();
            let owned = bincode::serde::encode_to_vec(p.kept(i), config()).unwrap();
            assert_eq!(borrowed, owned);
            assert_eq!(p.kept_bytes(i), owned, "the cache's own encoding");
            let (back, _): (Kept, usize) =
                bincode::serde::decode_from_slice(&borrowed, config()).unwrap();
            assert_eq!(back, p.kept(i));
        }
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
        let agencies = Agencies::default();
        let c = Cache::load(&store, &periods(), &agencies).await;
        let listing = vec![
            ("cases/x".to_string(), "v1".to_string()),
            ("cases/y".to_string(), "v1".to_string()),
        ];
        assert!(c.usable(&listing).is_empty());
        let mut w = c.writer(&BTreeSet::new()).unwrap();
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
        c.writer(&keep).unwrap().save(&store).await;
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

    /// A file cut anywhere, or claiming a field longer than any, is unusable, never a panic
    /// and never an allocation of what it claims; a file of the older Parquet layout is
    /// removed when the cache is written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_or_cut_file_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let agencies = Agencies::default();
        let listing = vec![("cases/x".to_string(), "v1".to_string())];
        let older = older_path(&periods()[1]);
        store
            .publish(&older, Bytes::from_static(b"PAR1"))
            .await
            .unwrap();
        let c = Cache::load(&store, &periods(), &agencies).await;
        let mut w = c.writer(&BTreeSet::new()).unwrap();
        w.push("cases/x", "v1", &partial(3)).unwrap();
        w.save(&store).await;
        assert_eq!(store.get(&older).await.unwrap(), None);
        let (keep, got) = cached(&store, &agencies, &listing).await;
        assert_eq!((keep.len(), got), (1, sums(partial(3))));

        let whole = store.get(&path(&periods()[0])).await.unwrap().unwrap();
        let fp = fingerprint(&agencies);
        let mut usable = 0;
        for cut in 0..whole.len() {
            if let Ok(Some(_)) = open(whole.slice(..cut), &fp) {
                usable += 1;
            }
        }
        assert_eq!(usable, 0, "a cut file was taken as whole");
        assert!(open(whole.clone(), &fp).unwrap().is_some());

        // A record claiming a field of 2^40 bytes.
        let mut z = begin(&fp).unwrap();
        z.push(writer::Piece::Plain((1u64 << 40).to_le_bytes().to_vec()));
        let claimed = Bytes::from(writer::end(z).unwrap());
        let e = open(claimed, &fp).err().unwrap().to_string();
        assert!(e.contains("damaged"), "{e}");
        // A record claiming 512 MiB, within the bound, on a file of a few bytes: cut, an error.
        let mut z = begin(&fp).unwrap();
        z.push(writer::Piece::Plain((1u64 << 29).to_le_bytes().to_vec()));
        z.push(writer::Piece::Plain(b"cases/x".to_vec()));
        let claimed = Bytes::from(writer::end(z).unwrap());
        let e = open(claimed, &fp).err().unwrap().to_string();
        assert!(e.contains("cut at"), "{e}");
    }
}

//! Step 2 for `replay`: the bodies of the runs' raw responses, read back in arrival order and
//! normalised as the pull did; and, for `--from-staging`, the catalogs of the latest pull.

use futures::StreamExt;
use tracing::info;

use super::record::RunRecord;
use crate::config::Settings;
use crate::error::{Error, Result};
use crate::normalise::{
    agencies, procedures, Agency, Batches, Normaliser, PiiKey, Procedure, Spilled,
};
use crate::parquet::blocking;
use crate::raw::replay::{body_into, endpoint_files, files, runs};
use crate::store::Store;
use crate::wire::{classify_body, records_of, BodyVerdict, Endpoint};

/// Raw files read and normalised at once (threads; twice as many are fetched ahead).
const READERS: usize = 2;

/// One raw file, read back.
enum RawFile {
    /// A body the pull retried or refused.
    Unusable,
    Agencies(Vec<Agency>),
    Catalog(Vec<Procedure>),
    /// A `/v1/hoso` page, normalised.
    Cases(Box<Normaliser>),
}

/// Reads a raw file of run `run` at `path`: decompress, judge the body as the pull did, and
/// normalise a page of cases.
fn read(key: &PiiKey, run: &str, path: &str, gz: &[u8]) -> Result<RawFile> {
    thread_local! {
        /// The bodies this thread decompresses, one after another (1–2 MB each).
        static BODY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BODY.with_borrow_mut(|body| {
        let Some(endpoint) = body_into(path, gz, body)? else {
            return Ok(RawFile::Unusable);
        };
        Ok(of_body(key, run, path, endpoint, body))
    })
}

/// A body of `endpoint`, judged as the pull judged it and read when usable.
fn of_body(key: &PiiKey, run: &str, path: &str, endpoint: Endpoint, body: &[u8]) -> RawFile {
    let usable = || matches!(classify_body(body), BodyVerdict::Usable { .. });
    match endpoint {
        Endpoint::Agencies if usable() => RawFile::Agencies(agencies(&records_of(body)).agencies),
        Endpoint::Catalog if usable() => RawFile::Catalog(procedures(&records_of(body)).0),
        Endpoint::Agencies | Endpoint::Catalog => RawFile::Unusable,
        Endpoint::Cases => {
            // Judged and normalised in one read of the body.
            let mut n = Normaliser::new(key.clone(), run);
            if n.add_if_usable(path, body) {
                RawFile::Cases(Box::new(n))
            } else {
                RawFile::Unusable
            }
        }
    }
}

/// The runs to replay: all, or those up to `upto`.
async fn chosen_runs(store: &Store, upto: Option<&str>) -> Result<Vec<String>> {
    let runs = runs(store).await?;
    if let Some(id) = upto {
        if !runs.iter().any(|r| r == id) {
            return Err(Error::Missing(format!("no raw responses for run {id} under raw/: `motcua status` lists the runs (raw may have been pruned by raw_retention)")));
        }
    }
    let runs: Vec<String> = runs
        .into_iter()
        .filter(|r| upto.is_none_or(|u| r.as_str() <= u))
        .collect();
    if runs.is_empty() {
        return Err(Error::Missing(
            "raw/ holds no responses to replay: run `motcua run` first".into(),
        ));
    }
    Ok(runs)
}

/// The replayed catalogs and normalised cases of the runs up to `upto` (all when `None`).
pub async fn from_raw(
    settings: &Settings,
    store: &Store,
    record: &mut RunRecord,
    upto: Option<&str>,
) -> Result<(Vec<Agency>, Vec<Procedure>, Spilled)> {
    let runs = chosen_runs(store, upto).await?;
    let mut jobs: Vec<(String, String)> = vec![];
    for run in &runs {
        jobs.extend(
            files(store, run)
                .await?
                .into_iter()
                .map(|p| (run.clone(), p)),
        );
    }
    info!(
        runs = runs.len(),
        files = jobs.len(),
        "replaying raw responses"
    );
    let bar = crate::progress::bar(Some(jobs.len() as u64), "files", "replaying raw responses");
    let mut batches = Batches::new(settings.pii_key.clone(), &record.run_id)?;
    let (mut agencies, mut catalog) = (None, None);
    // Files are read and normalised a few at a time on the blocking pool, then taken in order.
    // On threads that end with the reading, handing back what they kept (`workers`).
    let workers = super::workers::Workers::new("motcua-replay", READERS)?;
    let mut read_all = futures::stream::iter(jobs)
        .map(|(run, path)| {
            let key = settings.pii_key.clone();
            let workers = &workers;
            async move {
                let gz = store
                    .get(&path)
                    .await?
                    .ok_or_else(|| Error::Missing(format!("{path} vanished during replay")))?;
                workers.run(move || read(&key, &run, &path, &gz)).await
            }
        })
        .buffered(READERS * 2);
    while let Some(file) = read_all.next().await {
        bar.inc(1);
        match file? {
            RawFile::Unusable => continue,
            RawFile::Agencies(a) => agencies = Some(a),
            RawFile::Catalog(c) => catalog = Some(c),
            RawFile::Cases(n) => {
                record.counts.records_pulled += n.stats.records;
                batches.absorb(*n)?;
            }
        }
        record.counts.raw_files_replayed += 1;
    }
    bar.finish_and_clear();
    drop(read_all);
    drop(workers);
    let missing = |what: &str| Error::Missing(format!("the replayed runs hold no {what} response"));
    let agencies = agencies.ok_or_else(|| missing("/v1/donvi"))?;
    let catalog = catalog.ok_or_else(|| missing("/v1/tthc"))?;
    record.counts.agencies = agencies.len() as u64;
    record.counts.procedures = catalog.len() as u64;
    let spilled = blocking(move || batches.finish()).await?;
    Ok((agencies, catalog, spilled))
}

/// The agencies and the catalog of the latest run whose raw responses hold them (for
/// `--from-staging`, which does not pull them): the agencies read now, the catalog being read
/// on a task of its own (the count needs only the agencies; the tables wait for the catalog).
pub async fn catalogs_from_raw(
    settings: &Settings,
    store: &Store,
) -> Result<(Vec<Agency>, tokio::task::JoinHandle<Result<Vec<Procedure>>>)> {
    let runs = runs(store).await?;
    let reading = {
        let (key, store, runs) = (settings.pii_key.clone(), store.clone(), runs.clone());
        tokio::spawn(async move {
            match latest(&key, &store, &runs, Endpoint::Catalog).await? {
                Some(RawFile::Catalog(c)) => Ok(c),
                _ => Err(no_catalogs()),
            }
        })
    };
    match latest(&settings.pii_key, store, &runs, Endpoint::Agencies).await? {
        Some(RawFile::Agencies(a)) => Ok((a, reading)),
        _ => {
            reading.abort();
            Err(no_catalogs())
        }
    }
}

fn no_catalogs() -> Error {
    Error::Missing("--from-staging needs the agencies and catalog of an earlier pull, and raw/ holds no /v1/donvi and /v1/tthc responses (pruned by raw_retention?): run without --from-staging".into())
}

/// The usable response of `endpoint` (agencies or catalog) of the latest of `runs` that holds
/// one.
async fn latest(
    key: &PiiKey,
    store: &Store,
    runs: &[String],
    endpoint: Endpoint,
) -> Result<Option<RawFile>> {
    for run in runs.iter().rev() {
        for path in endpoint_files(store, run, endpoint).await? {
            if Endpoint::of_raw_path(&path) != Some(endpoint) {
                continue;
            }
            let Some(gz) = store.get(&path).await? else {
                continue;
            };
            let (key, run) = (key.clone(), run.clone());
            let f = blocking(move || read(&key, &run, &path, &gz)).await?;
            if let RawFile::Agencies(_) | RawFile::Catalog(_) = f {
                return Ok(Some(f));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::gzip;

    /// A raw file counts only when the pull could use its body (a torn body or a "system busy"
    /// answer, which the pull retried, and a body it refused do not), whatever its endpoint.
    #[test]
    fn only_usable_bodies_count() {
        let key = PiiKey::new(b"k");
        let read = |path: &str, b: &str| read(&key, "r", path, &gzip(b.as_bytes()).unwrap());
        let cases = "raw/run_id=r/v1-hoso/000001_page=1.json.gz";
        let agencies = "raw/run_id=r/v1-donvi/000000.json.gz";
        let page = r#"{"error_code":"0","data":[{"MaHoSo":"A","MaDonVi":"X","TrangThaiHoSo":"1","NgayNopHoSo":"20240703080000","NgayCapNhat":"20240703080000"}]}"#;
        match read(cases, page).unwrap() {
            RawFile::Cases(n) => assert_eq!(n.pending(), 1),
            _ => panic!("a usable page of cases"),
        }
        assert!(matches!(
            read(agencies, r#"{"error_code":"0","data":[]}"#).unwrap(),
            RawFile::Agencies(_)
        ));
        for b in [
            r#"{"error_code":"1","message":"busy"}"#,
            r#"{"error_code":"0","data":{}}"#,
            r#"{"data":[{"MaHoSo":"A"}]}"#,
            "<html>",
            r#"{"error_code":"0","data":[{"MaH"#,
        ] {
            assert!(matches!(read(cases, b).unwrap(), RawFile::Unusable), "{b}");
            assert!(
                matches!(read(agencies, b).unwrap(), RawFile::Unusable),
                "{b}"
            );
        }
        assert!(matches!(
            read("raw/run_id=r/elsewhere/1.json.gz", page).unwrap(),
            RawFile::Unusable
        ));
        assert!(super::read(&key, "r", cases, b"not gzip").is_err());
    }
}

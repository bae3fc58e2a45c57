//! Reading the raw layer back, for `replay` and `--from-staging`: the runs it holds, each run's
//! bodies in arrival order, each body decompressed with the endpoint it answered. Which bodies
//! count, as the pull judged them, `pipeline::replay` decides as it reads them.

use std::collections::BTreeSet;

use super::decompress_into;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::wire::Endpoint;

/// The run ids under `raw/`, oldest first.
pub async fn runs(store: &Store) -> Result<Vec<String>> {
    // The run folders alone: their files are many (a page a file), and every run lists them.
    let mut runs = BTreeSet::new();
    for f in store.folders("raw").await? {
        if let Some(id) = f.strip_prefix("raw/run_id=") {
            runs.insert(id.trim_end_matches('/').to_string());
        }
    }
    Ok(runs.into_iter().collect())
}

/// The bodies of run `run`, in the order they arrived (the sequence number that starts every
/// file name).
pub async fn files(store: &Store, run: &str) -> Result<Vec<String>> {
    in_order(store, &format!("raw/run_id={run}")).await
}

/// The bodies of run `run` that answered `endpoint`, in the order they arrived.
pub async fn endpoint_files(store: &Store, run: &str, endpoint: Endpoint) -> Result<Vec<String>> {
    in_order(store, &format!("raw/run_id={run}/{}", endpoint.raw_dir())).await
}

async fn in_order(store: &Store, prefix: &str) -> Result<Vec<String>> {
    let mut files: Vec<String> = store
        .list(prefix)
        .await?
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    files.sort_by_key(|p| p.rsplit('/').next().unwrap_or("").to_string());
    Ok(files)
}

/// A raw body decompressed into `body`, and the endpoint it answered (`None` for a file of no
/// endpoint), not yet judged: a page of cases is judged as it is normalised
/// ([`crate::normalise::Normaliser::add_if_usable`]), in one read.
pub fn body_into(path: &str, compressed: &[u8], body: &mut Vec<u8>) -> Result<Option<Endpoint>> {
    decompress_into(path, compressed, body).map_err(|e| Error::Io {
        what: format!("{path} is damaged"),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(Endpoint::of_raw_path(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::RawLog;
    use bytes::Bytes;

    #[tokio::test]
    async fn runs_and_their_bodies_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        for run in ["20240102T000000000Z-bbbb", "20240101T000000000Z-aaaa"] {
            let raw = RawLog::new(store.clone(), run);
            for i in 0..12u32 {
                let body = Bytes::from(format!("{{\"error_code\":\"0\",\"data\":[{i}]}}"));
                raw.land(Endpoint::Cases, &[("page", i.to_string())], body)
                    .await
                    .unwrap();
            }
            raw.settle().await.unwrap();
        }
        let runs = runs(&store).await.unwrap();
        assert_eq!(
            runs,
            ["20240101T000000000Z-aaaa", "20240102T000000000Z-bbbb"]
        );
        let files = files(&store, &runs[0]).await.unwrap();
        assert_eq!(files.len(), 12);
        for (i, f) in files.iter().enumerate() {
            let gz = store.get(f).await.unwrap().unwrap();
            let mut body = vec![];
            assert_eq!(body_into(f, &gz, &mut body).unwrap(), Some(Endpoint::Cases));
            assert!(String::from_utf8(body).unwrap().contains(&format!("[{i}]")));
        }
    }
}

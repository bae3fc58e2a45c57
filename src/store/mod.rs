//! The output root: a local folder, a `file://` URL or an object-store URL (`s3://bucket/prefix`),
//! reached through `object_store`. Credentials and endpoints come from the environment only
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`).
//!
//! [`Store::publish`] is the one way readers' files are written: each object is replaced by one
//! write, so a reader sees the old file or the new one. On a local folder, where `object_store`
//! stages uploads beside their destination, the bytes go to `_staging/<run_id>/` first and are
//! renamed into place; on an object store a single PUT (or a completed multipart upload) is
//! atomic by itself.

mod mapped;
mod province;

pub use province::Province;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::error::{Doing, Error, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Objects at least this large go up in parts.
const MULTIPART_THRESHOLD: usize = 32 * 1024 * 1024;
const PART_SIZE: usize = 16 * 1024 * 1024;

/// The version of an object as read or written, for a conditional update: its ETag and
/// version on an object store, its bytes on a folder (compared under a file lock).
#[derive(Debug, Clone)]
pub struct Version {
    tag: object_store::UpdateVersion,
    bytes: Bytes,
}

/// A file a run wrote, for the run record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WrittenFile {
    pub path: String,
    pub bytes: u64,
    /// Rows, for Parquet files.
    pub rows: Option<u64>,
}

#[derive(Clone)]
pub struct Store {
    os: Arc<dyn ObjectStore>,
    /// The root as the user gave it, for messages.
    pub url: String,
    local: Option<PathBuf>,
    staging: String,
    seq: Arc<AtomicU64>,
    /// In a shared root, the province whose objects this store reads and writes.
    province: Option<Province>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url)
    }
}

impl Store {
    /// Opens the root `url` for the run `run_id` (which names its staging folder).
    pub fn open(url: &str, run_id: &str) -> Result<Store> {
        let staging = format!("_staging/{run_id}");
        if let Some(os) = Self::object_store(url)? {
            let prefix = url.split_once("://").map_or("", |(_, rest)| rest);
            let prefix = prefix.split_once('/').map_or("", |(_, p)| p);
            return Ok(Self::remote(os, prefix, url, staging));
        }
        for (scheme, feature) in [("gs://", "gcp"), ("az://", "azure")] {
            if url.starts_with(scheme) {
                return Err(Error::Usage(format!("output {url:?} needs motcua built with the {feature} feature: cargo build --release --features {feature}")));
            }
        }
        if url.contains("://") && !url.starts_with("file://") {
            return Err(Error::Usage(format!("output {url:?}: use a folder, file://…, s3://… (or gs://, az:// with the gcp, azure features)")));
        }
        Self::local(url, staging)
    }

    /// The object store an `s3://` (or, built in, `gs://`, `az://`) root names.
    fn object_store(url: &str) -> Result<Option<Arc<dyn ObjectStore>>> {
        crate::tls::install();
        let cannot = |check: &str, e: object_store::Error| {
            Error::Usage(format!("cannot open {url}: check {check} ({e})"))
        };
        let bucket = |rest: &str| rest.split_once('/').map_or(rest, |(b, _)| b).to_string();
        if let Some(rest) = url.strip_prefix("s3://") {
            if bucket(rest).is_empty() {
                return Err(Error::Usage(format!(
                    "output {url:?} names no bucket: use s3://bucket/prefix"
                )));
            }
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket(rest))
                .build()
                .map_err(|e| {
                    cannot(
                        "AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL",
                        e,
                    )
                })?;
            return Ok(Some(Arc::new(s3)));
        }
        #[cfg(feature = "gcp")]
        if let Some(rest) = url.strip_prefix("gs://") {
            let gcs = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket(rest))
                .build()
                .map_err(|e| {
                    cannot(
                        "GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT)",
                        e,
                    )
                })?;
            return Ok(Some(Arc::new(gcs)));
        }
        #[cfg(feature = "azure")]
        if let Some(rest) = url.strip_prefix("az://") {
            let az = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(bucket(rest))
                .build()
                .map_err(|e| {
                    cannot(
                        "AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY",
                        e,
                    )
                })?;
            return Ok(Some(Arc::new(az)));
        }
        Ok(None)
    }

    /// A local folder (created if missing).
    fn local(url: &str, staging: String) -> Result<Store> {
        let path = PathBuf::from(url.strip_prefix("file://").unwrap_or(url));
        std::fs::create_dir_all(&path).doing_with(|| {
            format!(
                "cannot create the output folder {}: check the path and its permissions",
                path.display()
            )
        })?;
        let path = path
            .canonicalize()
            .doing_with(|| format!("cannot open the output folder {}", path.display()))?;
        let fs = LocalFileSystem::new_with_prefix(&path).map_err(|source| Error::Store {
            what: format!("opening {}", path.display()),
            hint: "check that the output folder exists and is writable",
            source,
        })?;
        Ok(Store {
            os: Arc::new(fs),
            url: url.to_string(),
            local: Some(path),
            staging,
            seq: Arc::new(AtomicU64::new(0)),
            province: None,
        })
    }

    fn remote(os: Arc<dyn ObjectStore>, prefix: &str, url: &str, staging: String) -> Store {
        let os: Arc<dyn ObjectStore> = match prefix.trim_matches('/') {
            "" => os,
            p => Arc::new(PrefixStore::new(os, p)),
        };
        Store {
            os,
            url: url.to_string(),
            local: None,
            staging,
            seq: Arc::new(AtomicU64::new(0)),
            province: None,
        }
    }

    /// What to check when the root cannot be used.
    fn hint(&self) -> &'static str {
        if self.local.is_some() {
            "check that the output folder exists and is writable"
        } else {
            "check that the bucket exists, that AWS_ENDPOINT_URL (if set) is reachable, and that AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION are right"
        }
    }

    /// The local folder behind the root, when it is one.
    pub fn local_root(&self) -> Option<&std::path::Path> {
        self.local.as_deref()
    }

    /// An error of the store while `what` (e.g. "reading cases/…") was being done.
    fn failed(&self, what: String, source: object_store::Error) -> Error {
        Error::Store {
            what: format!("{what} in {}", self.url),
            hint: self.hint(),
            source,
        }
    }

    /// Reads an object; `None` when it does not exist.
    pub async fn get(&self, path: &str) -> Result<Option<Bytes>> {
        Ok(self.get_versioned(path).await?.map(|(b, _)| b))
    }

    /// Lists the objects under `prefix` with their sizes, sorted by path.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        Ok(self
            .list_meta(prefix)
            .await?
            .into_iter()
            .map(|(p, s, _)| (p, s))
            .collect())
    }

    /// Lists the objects under `prefix` with sizes and last-modified times, sorted by path.
    pub async fn list_meta(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, u64, chrono::DateTime<chrono::Utc>)>> {
        let mut out: Vec<(String, u64, chrono::DateTime<chrono::Utc>)> = self
            .list_under(prefix)
            .map_ok(|m| (m.location.to_string(), m.size, m.last_modified))
            .try_collect()
            .await
            .map_err(|e| self.failed(format!("listing {prefix}"), e))?;
        out.sort();
        Ok(out)
    }

    /// The objects under `prefix` with a version each (the ETag; else size and time of the
    /// last write), sorted by path: a file replaced gets another version.
    pub async fn list_versions(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = self
            .list_under(prefix)
            .map_ok(|m| {
                let version = match &m.e_tag {
                    Some(t) => format!("{t}/{}", m.size),
                    None => format!(
                        "{}@{}",
                        m.size,
                        m.last_modified.timestamp_nanos_opt().unwrap_or(0)
                    ),
                };
                (m.location.to_string(), version)
            })
            .try_collect()
            .await
            .map_err(|e| self.failed(format!("listing {prefix}"), e))?;
        out.sort();
        Ok(out)
    }

    async fn put_direct(&self, path: &Path, bytes: Bytes) -> object_store::Result<()> {
        if bytes.len() >= MULTIPART_THRESHOLD && self.local.is_none() {
            let mut up = self.os.put_multipart(path).await?;
            for chunk in bytes.chunks(PART_SIZE) {
                up.put_part(PutPayload::from(bytes.slice_ref(chunk)))
                    .await?;
            }
            up.complete().await?;
        } else {
            self.os.put(path, PutPayload::from(bytes)).await?;
        }
        Ok(())
    }

    /// Replaces the object at `path` with `bytes` in one atomic step.
    pub async fn publish(&self, path: &str, bytes: Bytes) -> Result<()> {
        let dest = self.at(path);
        let written = if self.local.is_some() {
            let n = self.seq.fetch_add(1, Ordering::Relaxed);
            let tmp = self.at(&format!("{}/{n:06}.tmp", self.staging));
            match self.put_direct(&tmp, bytes).await {
                Ok(()) => self.os.rename(&tmp, &dest).await,
                Err(e) => Err(e),
            }
        } else {
            self.put_direct(&dest, bytes).await
        };
        written.map_err(|e| self.failed(format!("writing {path}"), e))
    }

    /// Reads an object with its version; `None` when it does not exist.
    pub async fn get_versioned(&self, path: &str) -> Result<Option<(Bytes, Version)>> {
        let fail = |e| self.failed(format!("reading {path}"), e);
        match self.os.get(&self.at(path)).await {
            Ok(r) => {
                let tag = object_store::UpdateVersion {
                    e_tag: r.meta.e_tag.clone(),
                    version: r.meta.version.clone(),
                };
                let bytes = r.bytes().await.map_err(fail)?;
                Ok(Some((bytes.clone(), Version { tag, bytes })))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(fail(e)),
        }
    }

    /// A conditional put: the version written, or the store's refusal.
    async fn put_with(
        &self,
        path: &str,
        bytes: Bytes,
        mode: object_store::PutMode,
    ) -> Result<Version, object_store::Error> {
        let opts = object_store::PutOptions {
            mode,
            ..Default::default()
        };
        let r = self
            .os
            .put_opts(&self.at(path), PutPayload::from(bytes.clone()), opts)
            .await?;
        let tag = object_store::UpdateVersion {
            e_tag: r.e_tag,
            version: r.version,
        };
        Ok(Version { tag, bytes })
    }

    /// Creates `path` only if it does not exist yet, returning its version; `None` when it
    /// already does.
    pub async fn create_versioned(&self, path: &str, bytes: Bytes) -> Result<Option<Version>> {
        match self
            .put_with(path, bytes, object_store::PutMode::Create)
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(None),
            Err(e) => Err(self.failed(format!("creating {path}"), e)),
        }
    }

    /// Creates `path` only if it does not exist yet; `false` when it already does.
    pub async fn create(&self, path: &str, bytes: Bytes) -> Result<bool> {
        Ok(self.create_versioned(path, bytes).await?.is_some())
    }

    /// Replaces `path` with `bytes` only if it is still at `expected`; the new version, or
    /// `None` when it changed or went. On an object store a conditional PUT (`If-Match`); on a
    /// folder, a compare and an atomic write under an exclusive lock of `<path>.guard`.
    pub async fn update_if(
        &self,
        path: &str,
        expected: &Version,
        bytes: Bytes,
    ) -> Result<Option<Version>> {
        if let Some(_guard) = self.guard(path).await? {
            match self.get(path).await? {
                Some(now) if now == expected.bytes => {}
                _ => return Ok(None),
            }
            self.publish(path, bytes.clone()).await?;
            return Ok(Some(Version {
                tag: expected.tag.clone(),
                bytes,
            }));
        }
        let mode = object_store::PutMode::Update(expected.tag.clone());
        match self.put_with(path, bytes, mode).await {
            Ok(v) => Ok(Some(v)),
            Err(
                object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. },
            ) => Ok(None),
            Err(e) => Err(self.failed(format!("updating {path}"), e)),
        }
    }

    /// Deletes `path` if it is still at `expected`; `false` when it changed. On a folder the
    /// compare and the delete happen under the file lock; object stores have no conditional
    /// delete, so there the compare comes just before the delete.
    pub async fn delete_if(&self, path: &str, expected: &Version) -> Result<bool> {
        let _guard = self.guard(path).await?;
        let same = match self.get_versioned(path).await? {
            None => return Ok(true),
            Some((bytes, _)) if self.local.is_some() => bytes == expected.bytes,
            Some((_, v)) => v.tag.e_tag.is_some() && v.tag.e_tag == expected.tag.e_tag,
        };
        if same {
            self.delete(path).await?;
        }
        Ok(same)
    }

    /// On a folder, an exclusive lock of `<path>.guard` (released on drop): the compare-and-
    /// write of [`Store::update_if`] for a file system, where `object_store` has none.
    async fn guard(&self, path: &str) -> Result<Option<std::fs::File>> {
        let Some(root) = &self.local else {
            return Ok(None);
        };
        let guard = self.fs_path(root, &format!("{path}.guard"));
        let shown = guard.display().to_string();
        tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            if let Some(dir) = guard.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&guard)?;
            f.lock()?;
            Ok(f)
        })
        .await
        .map_err(|_| Error::Internal("a file-lock thread panicked".into()))?
        .map(Some)
        .doing_with(|| format!("locking {shown} ({})", self.hint()))
    }

    pub async fn delete(&self, path: &str) -> Result<()> {
        match self.os.delete(&self.at(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed(format!("deleting {path}"), e)),
        }
    }

    /// Removes the staging folders runs that were killed left behind. Only call it while
    /// holding the lock: every writer holds it, so none of them is still running.
    pub async fn clean_stale_staging(&self) -> Result<u64> {
        let mut n = 0;
        for (p, _) in self.list("_staging").await? {
            if !p.starts_with(&format!("{}/", self.staging)) {
                self.delete(&p).await?;
                n += 1;
            }
        }
        if let Some(root) = &self.local {
            // Whole folders: a write killed half-way leaves `object_store`'s own partial file
            // (`….tmp#1`), which listing does not show.
            let own = self.fs_path(root, &self.staging);
            if let Ok(rd) = std::fs::read_dir(self.fs_path(root, "_staging")) {
                for d in rd.flatten() {
                    if d.path() != own {
                        let _ = std::fs::remove_dir_all(d.path());
                    }
                }
            }
        }
        Ok(n)
    }

    /// Removes this run's staging folder (local roots only use one).
    pub async fn clean_staging(&self) -> Result<()> {
        for (p, _) in self.list(&self.staging).await? {
            self.delete(&p).await?;
        }
        if let Some(root) = &self.local {
            let dir = self.fs_path(root, &self.staging);
            let _ = std::fs::remove_dir(&dir);
            let _ = std::fs::remove_dir(self.fs_path(root, "_staging"));
            let _ = std::fs::remove_dir(root.join("_staging"));
        }
        Ok(())
    }
}

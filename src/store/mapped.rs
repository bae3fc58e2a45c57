//! Reading a local root's files mapped into memory, for readers that decode a part of a file
//! (the KPI count reads 16 of staging's 32 columns).

use bytes::Bytes;

use super::Store;
use crate::error::{Doing, Result};

impl Store {
    /// Reads an object to decode a part of it; `None` when it does not exist. A file of a
    /// local root is mapped, not read: its pages are read as they are touched, so decoding a
    /// few columns of a large file reads theirs and little else (a whole read of the staging
    /// table for the KPI columns copied ten times the bytes it used, and faulted each copy in).
    /// Any other store's object is fetched whole, as [`Store::get`].
    pub async fn get_mapped(&self, path: &str) -> Result<Option<Bytes>> {
        let Some(root) = &self.local else {
            return self.get(path).await;
        };
        let file = self.fs_path(root, path);
        let what = format!("reading {path} in {}", self.url);
        crate::parquet::blocking(move || {
            let f = match std::fs::File::open(&file) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).doing(what.clone()),
            };
            if f.metadata().doing(what.clone())?.len() == 0 {
                return Ok(Some(Bytes::new()));
            }
            // SAFETY: the map is read only, and motcua never changes a file in place: every
            // object of a local root is written as a new file renamed over the old one
            // (`LocalFileSystem`'s put, [`Store::publish`]), so the mapped file stays as it
            // was mapped while it is read. (A program truncating staging files under a
            // running motcua would break that; nothing in motcua does.)
            let map = unsafe { memmap2::Mmap::map(&f) }.doing(what)?;
            Ok(Some(Bytes::from_owner(map)))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Province;

    #[tokio::test]
    async fn a_mapped_file_reads_as_written_and_outlives_its_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let province = Store::open(root, "r")
            .unwrap()
            .for_province(Some(Province::new("46").unwrap()));
        for store in [Store::open(root, "r").unwrap(), province] {
            let path = "cases/case_month=2024-07/bucket=0/part-0.parquet";
            store
                .publish(path, Bytes::from_static(b"first"))
                .await
                .unwrap();
            let mapped = store.get_mapped(path).await.unwrap().unwrap();
            assert_eq!(&mapped[..], b"first");
            // Replaced (written anew and renamed over it): the map still reads the first.
            store
                .publish(path, Bytes::from_static(b"second!"))
                .await
                .unwrap();
            assert_eq!(&mapped[..], b"first");
            assert_eq!(
                &store.get_mapped(path).await.unwrap().unwrap()[..],
                b"second!"
            );
            store.publish(path, Bytes::new()).await.unwrap();
            assert!(store.get_mapped(path).await.unwrap().unwrap().is_empty());
            assert!(store
                .get_mapped("cases/none.parquet")
                .await
                .unwrap()
                .is_none());
        }
        assert!(dir
            .path()
            .join("cases/province=46/case_month=2024-07/bucket=0/part-0.parquet")
            .exists());
    }
}

//! Many provinces in one root (`schemas/root-layout.md`). A province's job writes every object
//! of the single-province layout with a `province=<code>` folder right under its table's folder:
//!
//! ```text
//! kpi/cases_by_level/period=2024-Q3/part-0.parquet         one province's root
//! kpi/cases_by_level/province=46/period=2024-Q3/part-0.parquet   shared root, province 46
//! cases/province=46/case_month=2024-07/bucket=1/part-0.parquet
//! _state/province=46/cursor.json, _runs/province=46/…, raw/province=46/run_id=…/…
//! ```
//!
//! so each table's folder holds every province as a Hive partition level, as Spark's and Trino's
//! table locations need it (the partition folders of a table directly under it), and everything
//! a job writes, its lock, cursor and run records included, is apart from every other job's.
//! The rest of motcua sees the single-province paths: [`Province::physical`] and
//! [`Province::logical`] translate at the store.

use std::path::PathBuf;

use object_store::path::Path;

use super::Store;
use crate::error::{Error, Result};

/// The folder levels of a table under the root: `kpi/<table>`, `dim/<table>`; one elsewhere.
fn table_depth(first: &str) -> usize {
    match first {
        "kpi" | "dim" | "quality" => 2,
        _ => 1,
    }
}

/// One province's part of a shared root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Province {
    code: String,
    folder: String,
}

impl Province {
    /// A province code: letters, digits, `-` and `_`, 1 to 32 of them (e.g. `46`, `hue`).
    pub fn new(code: &str) -> Result<Province> {
        let ok = !code.is_empty()
            && code.len() <= 32
            && code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(Error::Usage(format!(
                "province {code:?}: use 1 to 32 letters, digits, '-' or '_' (e.g. 46 or hue)"
            )));
        }
        Ok(Province {
            code: code.to_string(),
            folder: format!("province={code}"),
        })
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    /// Where the object (or the folder) `path` of the single-province layout is in the shared
    /// root; `None` for a folder above the tables' (`kpi`, or the root), which holds every
    /// province: list it and keep what [`Province::logical`] accepts.
    pub fn physical(&self, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let depth = table_depth(parts.first()?);
        if parts.len() < depth {
            return None;
        }
        let mut out = parts[..depth].to_vec();
        out.push(&self.folder);
        out.extend(&parts[depth..]);
        Some(out.join("/"))
    }

    /// The single-province path of an object of the shared root; `None` when it is not this
    /// province's.
    pub fn logical(&self, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split('/').collect();
        let depth = table_depth(parts.first()?);
        if parts.len() <= depth + 1 || parts[depth] != self.folder {
            return None;
        }
        let mut out = parts[..depth].to_vec();
        out.extend(&parts[depth + 1..]);
        Some(out.join("/"))
    }
}

/// A store's paths in a shared root: the rest of `Store` reads and writes through these.
impl Store {
    /// This store as one province's part of a shared root (`store/province.rs`): every path
    /// stays the single-province one, the objects live under `province=<code>` folders.
    pub fn for_province(mut self, province: Option<Province>) -> Store {
        self.province = province;
        self
    }

    /// The province of a shared root this store is for.
    pub fn province(&self) -> Option<&Province> {
        self.province.as_ref()
    }

    /// Where the object or folder `path` is in the root.
    pub(super) fn physical(&self, path: &str) -> String {
        match &self.province {
            Some(p) => p.physical(path).unwrap_or_else(|| path.to_string()),
            None => path.to_string(),
        }
    }

    /// Where the object `path` is in the root, for people and run records.
    pub fn located(&self, path: &str) -> String {
        self.physical(path)
    }

    /// The object `path`.
    pub(super) fn at(&self, path: &str) -> Path {
        Path::from(self.physical(path))
    }

    /// The file of `path` in a local root.
    pub(super) fn fs_path(&self, root: &std::path::Path, path: &str) -> PathBuf {
        root.join(self.physical(path))
    }

    /// The folders directly under `prefix` (one level, not their contents), each as the rest
    /// of motcua sees it, sorted.
    pub async fn folders(&self, prefix: &str) -> crate::error::Result<Vec<String>> {
        let listed = self.physical(prefix);
        let found = self
            .os
            .list_with_delimiter(Some(&Path::from(listed)))
            .await
            .map_err(|e| self.failed(format!("listing the folders of {prefix}"), e))?;
        // A local folder whose files were all deleted stays behind, empty; an object store
        // has no such folder. It is not one.
        let holds_files = |f: &Path| match self.local_root() {
            Some(root) => holds_a_file(&root.join(f.as_ref())),
            None => true,
        };
        let mut out: Vec<String> = found
            .common_prefixes
            .iter()
            .filter(|f| holds_files(f))
            .filter_map(|f| match &self.province {
                Some(p) => p.logical(f.as_ref()),
                None => Some(f.to_string()),
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// The objects under `prefix`, each with its path as the rest of motcua sees it.
    pub(super) fn list_under(
        &self,
        prefix: &str,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        use futures::StreamExt;
        let Some(p) = self.province.clone() else {
            return self.os.list(Some(&Path::from(prefix)));
        };
        let listed = p.physical(prefix).unwrap_or_else(|| prefix.to_string());
        self.os
            .list(Some(&Path::from(listed)))
            .filter_map(move |m| {
                let m = match m {
                    Ok(mut m) => match p.logical(m.location.as_ref()) {
                        Some(l) => {
                            m.location = Path::from(l);
                            Some(Ok(m))
                        }
                        None => None,
                    },
                    Err(e) => Some(Err(e)),
                };
                std::future::ready(m)
            })
            .boxed()
    }
}

/// Whether the local folder `dir` holds a file, at any depth (an unreadable one counts as
/// holding some, so nothing is skipped for an error).
fn holds_a_file(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    entries.flatten().any(|e| match e.file_type() {
        Ok(t) if t.is_dir() => holds_a_file(&e.path()),
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_table_holds_the_province_as_its_first_partition_level() {
        let p = Province::new("46").unwrap();
        for (logical, physical) in [
            (
                "kpi/cases_by_level/period=2024-Q3/part-0.parquet",
                "kpi/cases_by_level/province=46/period=2024-Q3/part-0.parquet",
            ),
            (
                "dim/agencies/part-0.parquet",
                "dim/agencies/province=46/part-0.parquet",
            ),
            (
                "cases/case_month=2024-07/bucket=1/part-0.parquet",
                "cases/province=46/case_month=2024-07/bucket=1/part-0.parquet",
            ),
            ("_state/lock", "_state/province=46/lock"),
            ("_runs/r1.json", "_runs/province=46/r1.json"),
            (
                "raw/run_id=r/v1-hoso/000001.json.gz",
                "raw/province=46/run_id=r/v1-hoso/000001.json.gz",
            ),
        ] {
            assert_eq!(p.physical(logical).as_deref(), Some(physical));
            assert_eq!(p.logical(physical).as_deref(), Some(logical));
        }
        // Folders: a table's maps, the folders above tables hold every province.
        assert_eq!(p.physical("cases").as_deref(), Some("cases/province=46"));
        assert_eq!(
            p.physical("kpi/cases_by_level").as_deref(),
            Some("kpi/cases_by_level/province=46")
        );
        assert_eq!(p.physical("kpi"), None);
        assert_eq!(p.physical(""), None);
        // Another province's objects, and the single-province layout's, are not this one's.
        let other = "kpi/cases_by_level/province=01/period=2024-Q3/part-0.parquet";
        assert_eq!(p.logical(other), None);
        assert_eq!(
            p.logical("kpi/cases_by_level/period=2024-Q3/part-0.parquet"),
            None
        );
        assert_eq!(p.logical("_state/province=46"), None);
    }

    #[test]
    fn a_province_code_is_one_safe_folder_name() {
        for bad in ["", "a/b", "x=y", "..", "a b", &"9".repeat(33)] {
            assert!(Province::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Province::new("hue_2").unwrap().code(), "hue_2");
    }
}

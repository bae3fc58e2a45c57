//! Settings of a run: the pipeline file (`pipelines/*.toml`), overridden by flags, over defaults;
//! secrets from the environment only.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;

use crate::error::{Error, Result};

/// A usage error: what is wrong with the settings and what to do.
macro_rules! usage {
    ($($t:tt)*) => { return Err(Error::Usage(format!($($t)*))) };
}
use serde::Deserialize;

use crate::domain::period::Convention;
use crate::normalise::PiiKey;
use crate::source::SourceConfig;
use crate::store::Province;

/// A pipeline file: one per deployment. Every key is optional; see `pipelines/demo.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// A name for logs and the run record.
    pub name: Option<String>,
    /// Output root: a folder, `file://…` or `s3://bucket/prefix`.
    pub output: Option<String>,
    /// In a root shared by many provinces, this deployment's province code (e.g. "46"):
    /// every table then holds it as a `province=` partition level (`schemas/root-layout.md`).
    pub province: Option<String>,
    pub period_convention: Option<Convention>,
    /// How far before the cursor the next pull starts, e.g. "3d", "12h", "0s".
    pub lookback: Option<String>,
    /// Restated tables take the structure of this day (`yyyy-MM-dd`); default: the day of
    /// the run.
    pub restate_to: Option<String>,
    /// How far the source's clock may run ahead of ours: the pull's upper bound is the run's
    /// start minus this, e.g. "5m".
    pub clock_skew: Option<String>,
    /// How long a run's lock lasts without a heartbeat before another run may take it over.
    pub lock_expiry: Option<String>,
    /// How many periods a backfill computes and publishes at once (memory grows with it).
    pub concurrency: Option<usize>,
    /// Raw responses older than this are pruned by each successful run; absent keeps all.
    pub raw_retention: Option<String>,
    #[serde(default)]
    pub source: SourceSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSection {
    pub url: Option<String>,
    pub page_size: Option<u32>,
    pub timeout_secs: Option<u64>,
    pub connect_timeout_secs: Option<u64>,
    pub max_attempts: Option<u32>,
    pub backoff_base_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub retry_after_max_secs: Option<u64>,
    /// A response body larger than this many MiB fails the request (default 256).
    pub max_body_mib: Option<u64>,
}

impl PipelineFile {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Usage(format!(
                "cannot read the pipeline file {}: {e}",
                path.display()
            ))
        })?;
        toml::from_str(&text).map_err(|e| {
            Error::Usage(format!(
                "the pipeline file {} is not valid: {e}",
                path.display()
            ))
        })
    }
}

/// Flags that override the pipeline file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub pipeline: Option<PathBuf>,
    pub source_url: Option<String>,
    pub output: Option<String>,
    /// `--province`.
    pub province: Option<String>,
    pub convention: Option<Convention>,
    /// `--restate-to`.
    pub restate_to: Option<NaiveDate>,
    /// The command does not contact the source (`replay`, `--from-staging`): no URL or token
    /// is needed.
    pub offline: bool,
}

/// Where an offline command's source would be: never contacted.
const NO_SOURCE: &str = "http://source.invalid/";

/// Everything a run needs, resolved.
#[derive(Debug)]
pub struct Settings {
    pub name: String,
    pub output: String,
    /// The province's part of a shared root, if the root is shared.
    pub province: Option<Province>,
    pub convention: Convention,
    pub lookback: Duration,
    pub clock_skew: Duration,
    /// Restated tables take the structure of this day; `None`: the day of the run.
    pub restate_to: Option<NaiveDate>,
    pub lock_expiry: Duration,
    pub concurrency: usize,
    pub raw_retention: Option<Duration>,
    pub source: SourceConfig,
    pub token: Secret,
    pub pii_key: PiiKey,
}

/// A secret string that never prints.
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Parses "3d", "12h", "30m", "45s" or "0".
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| Error::Usage(format!("{s:?} is not a duration: use 3d, 12h, 30m or 45s")))?;
    let per = match unit {
        "d" => 86_400,
        "h" => 3_600,
        "m" => 60,
        "s" => 1,
        _ => usage!("{s:?} is not a duration: use 3d, 12h, 30m or 45s"),
    };
    // Ten thousand years is more than any setting means; beyond it, a typo.
    match n
        .checked_mul(per)
        .filter(|secs| *secs <= 10_000 * 365 * 86_400)
    {
        Some(secs) => Ok(Duration::from_secs(secs)),
        None => usage!("{s:?} is longer than any duration motcua takes: use 3d, 12h, 30m or 45s"),
    }
}

/// The source token: `MOTCUA_SOURCE_TOKEN`, or the file named by `MOTCUA_SOURCE_TOKEN_FILE`.
pub fn source_token() -> Result<Secret> {
    if let Ok(t) = std::env::var("MOTCUA_SOURCE_TOKEN") {
        if !t.trim().is_empty() {
            return Ok(Secret(t.trim().to_string()));
        }
    }
    if let Ok(f) = std::env::var("MOTCUA_SOURCE_TOKEN_FILE") {
        let t = std::fs::read_to_string(&f).map_err(|e| {
            Error::Usage(format!("cannot read MOTCUA_SOURCE_TOKEN_FILE ({f}): {e}"))
        })?;
        if t.trim().is_empty() {
            usage!("MOTCUA_SOURCE_TOKEN_FILE ({f}) is empty: put the case system's token in it");
        }
        return Ok(Secret(t.trim().to_string()));
    }
    usage!("no source token: set MOTCUA_SOURCE_TOKEN, or MOTCUA_SOURCE_TOKEN_FILE to a file holding it")
}

/// The personal-data key: `MOTCUA_PII_KEY`, at least 16 characters.
pub fn pii_key() -> Result<PiiKey> {
    match std::env::var("MOTCUA_PII_KEY") {
        Ok(k) if k.len() >= 16 => Ok(PiiKey::new(k.as_bytes())),
        Ok(_) => usage!("MOTCUA_PII_KEY is shorter than 16 characters: use a long random secret (e.g. `openssl rand -hex 32`) and keep it stable across runs"),
        Err(_) => usage!("MOTCUA_PII_KEY is not set: set it to a long random secret (e.g. `openssl rand -hex 32`); it keys applicant_key and must stay the same across runs"),
    }
}

impl SourceSection {
    /// How to reach the source at `url`: the section's settings over the defaults.
    fn config(&self, url: url::Url) -> Result<SourceConfig> {
        let mut source = SourceConfig::new(url);
        if let Some(v) = self.page_size {
            if !(1..=1000).contains(&v) {
                usage!("source.page_size is {v}: the source takes 1 to 1000");
            }
            source.page_size = v;
        }
        if let Some(v) = self.max_body_mib {
            if !(1..=4096).contains(&v) {
                usage!("source.max_body_mib is {v}: give 1 to 4096");
            }
            source.max_body_bytes = v << 20;
        }
        let secs = Duration::from_secs;
        let millis = Duration::from_millis;
        source.timeout = self.timeout_secs.map_or(source.timeout, secs);
        source.connect_timeout = self
            .connect_timeout_secs
            .map_or(source.connect_timeout, secs);
        source.max_attempts = self.max_attempts.map_or(source.max_attempts, |v| v.max(1));
        source.backoff_base = self.backoff_base_ms.map_or(source.backoff_base, millis);
        source.backoff_max = self.backoff_max_ms.map_or(source.backoff_max, millis);
        source.retry_after_max = self
            .retry_after_max_secs
            .map_or(source.retry_after_max, secs);
        Ok(source)
    }
}

/// The source URL: the flag, the pipeline file, or (offline) none that is ever contacted.
fn source_url(o: &Overrides, file: &PipelineFile) -> Result<url::Url> {
    let url = o
        .source_url
        .clone()
        .or(file.source.url.clone())
        .or(o.offline.then(|| NO_SOURCE.to_string()))
        .ok_or_else(|| {
            Error::Usage("no source URL: give --source-url or set source.url in the pipeline file (--pipeline)".into())
        })?;
    let mut url = url::Url::parse(&url)
        .map_err(|e| Error::Usage(format!("source URL {url:?} is not a URL: {e}")))?;
    if !url.path().ends_with('/') {
        url.set_path(&format!("{}/", url.path()));
    }
    Ok(url)
}

impl Settings {
    /// Resolves flags over the pipeline file over defaults, and reads the secrets.
    pub fn resolve(o: &Overrides) -> Result<Settings> {
        let file = match &o.pipeline {
            Some(p) => PipelineFile::load(p)?,
            None => PipelineFile::default(),
        };
        let duration =
            |v: &Option<String>, default: &str| parse_duration(v.as_deref().unwrap_or(default));
        Ok(Settings {
            name: file.name.clone().unwrap_or_else(|| "motcua".into()),
            output: o
                .output
                .clone()
                .or(file.output.clone())
                .unwrap_or_else(|| "./data".into()),
            province: o
                .province
                .as_deref()
                .or(file.province.as_deref())
                .map(Province::new)
                .transpose()?,
            convention: o.convention.or(file.period_convention).unwrap_or_default(),
            lookback: duration(&file.lookback, "3d")?,
            clock_skew: duration(&file.clock_skew, "5m")?,
            restate_to: match (o.restate_to, &file.restate_to) {
                (Some(d), _) => Some(d),
                (None, Some(s)) => Some(s.parse().map_err(|_| {
                    Error::Usage(format!(
                        "restate_to {s:?} is not a date: use yyyy-MM-dd, e.g. \"2026-01-01\""
                    ))
                })?),
                (None, None) => None,
            },
            lock_expiry: duration(&file.lock_expiry, "2h")?,
            concurrency: file.concurrency.unwrap_or(4).clamp(1, 64),
            raw_retention: file
                .raw_retention
                .as_deref()
                .map(parse_duration)
                .transpose()?,
            source: file.source.config(source_url(o, &file)?)?,
            token: match source_token() {
                Err(_) if o.offline => Secret::new(""),
                t => t?,
            },
            pii_key: pii_key()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3d").unwrap(), Duration::from_secs(259_200));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("99999999999999999d").is_err());
        assert!(parse_duration("18446744073709551615s").is_err());
    }

    #[test]
    fn the_pipeline_files_parse_and_unknown_keys_are_refused() {
        let f = PipelineFile::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pipelines/demo.toml"
        )))
        .unwrap();
        assert_eq!(f.period_convention, Some(Convention::Decree09));
        let f = PipelineFile::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pipelines/hue.toml"
        )))
        .unwrap();
        assert_eq!(f.raw_retention.as_deref(), Some("800d"));
        assert_eq!(
            parse_duration(f.lock_expiry.as_deref().unwrap()).unwrap(),
            Duration::from_secs(7200)
        );
        let f = PipelineFile::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/pipelines/fleet/46.toml"
        )))
        .unwrap();
        assert_eq!(f.province.as_deref(), Some("46"));
        assert!(toml::from_str::<PipelineFile>("outptu = \"x\"").is_err());
    }
}

//! Stage 1: pull from the case system (`../shared/spec/source-api.md`).
//!
//! Agencies (`/v1/donvi`), the procedure catalog (`/v1/tthc`) and case files (`/v1/hoso`) over
//! HTTP with a bearer token. Every response body is landed in the raw layer ([`crate::raw`])
//! before anything parses it. Misbehaving servers are survived: 429 (honouring `Retry-After`),
//! 5xx, dropped connections, slow pages and `error_code` "1" are retried with capped,
//! jittered exponential backoff; 401 and 400 fail at once.
//!
//! Cases are paged **by cursor**, not by page number: each request asks again from the last
//! `NgayCapNhat` seen (inclusive), so a record updated while we page (which moves to the end of
//! the order) shifts nothing we have not yet read. When more than a page of records share one
//! second, that second is read as a closed window by page number, pass after pass, until a pass
//! brings nothing new.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Result;
use bytes::Bytes;
use rand::Rng;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::normalise::{instant, scalar_instant, source_timestamp, text, Scalar};
use crate::raw::RawLog;

/// How to reach the source and how patient to be with it.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub url: url::Url,
    pub page_size: u32,
    /// Whole-request timeout (connect, send, read the body).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// First backoff; doubles per attempt up to `backoff_max`, with full jitter.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// A `Retry-After` longer than this is cut to it.
    pub retry_after_max: Duration,
}

impl SourceConfig {
    pub fn new(url: url::Url) -> Self {
        SourceConfig {
            url,
            page_size: 1000,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            max_attempts: 6,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(10),
            retry_after_max: Duration::from_secs(120),
        }
    }
}

/// Why a pull failed. Each message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the source refused the token (HTTP {status} on {request}): set MOTCUA_SOURCE_TOKEN or MOTCUA_SOURCE_TOKEN_FILE to a token the case system accepts")]
    Unauthorized { status: u16, request: String },
    #[error("the source rejected {request} as a bad request (HTTP 400: {message}): check source.url and source.page_size (1 to 1000) in the pipeline file")]
    BadRequest { request: String, message: String },
    #[error("the source answered {request} with error_code {code:?} ({message}): this is not a transient error; ask the case system's operators")]
    Application {
        request: String,
        code: String,
        message: String,
    },
    #[error(
        "the source answered {request} with HTTP {status}: check source.url in the pipeline file"
    )]
    Http { request: String, status: u16 },
    #[error("the source did not answer {request} after {attempts} attempts over {secs:.0} s (last: {last}): check that the case system at {base} is up and reachable, then run again")]
    Exhausted {
        request: String,
        attempts: u32,
        secs: f64,
        last: String,
        base: String,
    },
    #[error("{0}")]
    Other(String),
}

/// The envelope every response body has.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    #[serde(default)]
    pub error_code: Value,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub total: Option<Value>,
    #[serde(default)]
    pub data: Option<Vec<Value>>,
}

impl Envelope {
    pub fn code(&self) -> String {
        text(Some(&self.error_code)).unwrap_or_else(|| "0".into())
    }
    pub fn total(&self) -> Option<u64> {
        text(self.total.as_ref()).and_then(|t| t.parse().ok())
    }
}

/// The envelope of a body, its `data` checked to be JSON but not kept.
#[derive(Debug, Deserialize)]
struct Head {
    #[serde(default)]
    error_code: Value,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    total: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    data: Option<serde::de::IgnoredAny>,
}

impl Head {
    fn envelope(self) -> Envelope {
        Envelope {
            error_code: self.error_code,
            message: self.message,
            total: self.total,
            data: None,
        }
    }
}

/// A successful response: where its body lands, the body, and its envelope (without `data`:
/// read it from the body with [`Response::records`]).
pub struct Response {
    pub raw_path: String,
    pub body: Bytes,
    pub envelope: Envelope,
}

impl Response {
    /// The `data` records as JSON trees.
    pub fn records(&self) -> Vec<Value> {
        records_of(&self.body)
    }
}

/// The `data` records of a body as JSON trees (none when it is not the envelope).
pub fn records_of(body: &[u8]) -> Vec<Value> {
    serde_json::from_slice::<Envelope>(body)
        .ok()
        .and_then(|e| e.data)
        .unwrap_or_default()
}

/// One page of `/v1/hoso` as received: the path its body lands at, and the body.
#[derive(Clone)]
pub struct Page {
    pub raw_path: String,
    pub body: Bytes,
}

impl Page {
    /// The page's records as JSON trees.
    pub fn records(&self) -> Vec<Value> {
        records_of(&self.body)
    }
}

/// What the pull needs of a page to page on: how many records, and the greatest readable
/// `NgayCapNhat`. Read typed, skipping every other field; as JSON trees if a record is odd.
fn summarise(body: &[u8]) -> (usize, Option<i64>) {
    #[derive(Deserialize)]
    struct Stamps<'a> {
        #[serde(default, borrow)]
        data: Option<Vec<Stamp<'a>>>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Stamp<'a> {
        #[serde(rename = "NgayCapNhat", borrow)]
        updated: Option<Scalar<'a>>,
    }
    match serde_json::from_slice::<Stamps>(body) {
        Ok(p) => {
            let data = p.data.unwrap_or_default();
            let n = data.len();
            let last = data
                .into_iter()
                .filter_map(|s| scalar_instant(s.updated).ok().flatten())
                .max();
            (n, last)
        }
        Err(_) => {
            let data = records_of(body);
            let last = data
                .iter()
                .filter_map(|d| instant(d.get("NgayCapNhat")).ok().flatten())
                .max();
            (data.len(), last)
        }
    }
}

/// Counts of one pull, for the run record.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PullStats {
    pub requests: u64,
    pub retries: u64,
    pub pages: u64,
    pub records: u64,
    pub bytes: u64,
    /// Greatest `NgayCapNhat` pulled, as `yyyyMMddHHmmss` local time.
    pub cursor_after: Option<String>,
    #[serde(skip)]
    pub cursor_after_micros: Option<i64>,
    pub same_second_windows: u64,
}

/// The case-system client.
pub struct Source {
    cfg: SourceConfig,
    http: reqwest::Client,
    pub stats: PullStats,
    /// Progress of the case pull (hidden unless on a terminal).
    pub progress: indicatif::ProgressBar,
}

impl Source {
    /// `token` goes into the `Authorization` header, marked sensitive so that it is never printed.
    pub fn new(cfg: SourceConfig, token: &str) -> Result<Self, SourceError> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| SourceError::Other("the source token has characters a header cannot carry: check MOTCUA_SOURCE_TOKEN".into()))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.connect_timeout)
            .user_agent(concat!("motcua/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SourceError::Other(format!("cannot build the HTTP client: {e}")))?;
        Ok(Source {
            cfg,
            http,
            stats: PullStats::default(),
            progress: indicatif::ProgressBar::hidden(),
        })
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .cfg
            .backoff_base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cfg.backoff_max);
        let ms =
            rand::rng().random_range(cap.as_millis() as u64 / 2..=cap.as_millis().max(1) as u64);
        Duration::from_millis(ms)
    }

    /// GETs `endpoint` with `query`, retrying what a retry can cure; lands the body in `raw`
    /// before parsing it.
    pub async fn fetch(
        &mut self,
        raw: &RawLog,
        endpoint: &str,
        query: &[(&str, String)],
    ) -> Result<Response, SourceError> {
        let request = describe(endpoint, query);
        let url = self
            .cfg
            .url
            .join(endpoint.trim_start_matches('/'))
            .map_err(|e| SourceError::Other(format!("bad source url: {e}")))?;
        let started = Instant::now();
        let mut last = String::new();
        for attempt in 1..=self.cfg.max_attempts {
            if attempt > 1 {
                self.stats.retries += 1;
            }
            self.stats.requests += 1;
            let mut wait = None;
            match self.http.get(url.clone()).query(query).send().await {
                Err(e) => last = without_url(&e).to_string(),
                Ok(resp) => {
                    let status = resp.status();
                    match status {
                        StatusCode::OK => match resp.bytes().await {
                            Err(e) => {
                                last = format!(
                                    "connection dropped while reading the body: {}",
                                    without_url(&e)
                                )
                            }
                            Ok(body) => {
                                let raw_path = raw
                                    .land_soon(endpoint, query, body.clone())
                                    .await
                                    .map_err(|e| {
                                    SourceError::Other(format!("cannot land a raw response: {e:#}"))
                                })?;
                                self.stats.bytes += body.len() as u64;
                                match serde_json::from_slice::<Head>(&body).map(Head::envelope) {
                                    Err(e) => {
                                        last = format!("a body that is not the JSON envelope ({e})")
                                    }
                                    Ok(env) => match env.code().as_str() {
                                        "0" => {
                                            return Ok(Response {
                                                raw_path,
                                                body,
                                                envelope: env,
                                            })
                                        }
                                        "1" => {
                                            last = format!(
                                                "error_code \"1\" ({})",
                                                env.message.clone().unwrap_or_default()
                                            )
                                        }
                                        code => {
                                            return Err(SourceError::Application {
                                                request,
                                                code: code.to_string(),
                                                message: env.message.unwrap_or_default(),
                                            })
                                        }
                                    },
                                }
                            }
                        },
                        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                            return Err(SourceError::Unauthorized {
                                status: status.as_u16(),
                                request,
                            })
                        }
                        StatusCode::BAD_REQUEST => {
                            let body: Bytes = resp.bytes().await.unwrap_or_default();
                            let message = serde_json::from_slice::<Envelope>(&body)
                                .ok()
                                .and_then(|e| e.message)
                                .unwrap_or_else(|| {
                                    String::from_utf8_lossy(&body).chars().take(200).collect()
                                });
                            return Err(SourceError::BadRequest { request, message });
                        }
                        StatusCode::TOO_MANY_REQUESTS => {
                            let secs = resp
                                .headers()
                                .get(RETRY_AFTER)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.trim().parse::<f64>().ok())
                                .filter(|s| s.is_finite() && *s >= 0.0);
                            last = format!("HTTP 429, Retry-After {secs:?}");
                            wait = secs
                                .map(|s| Duration::from_secs_f64(s).min(self.cfg.retry_after_max));
                        }
                        s if s.is_server_error() => last = format!("HTTP {}", s.as_u16()),
                        s => {
                            return Err(SourceError::Http {
                                request,
                                status: s.as_u16(),
                            })
                        }
                    }
                }
            }
            if attempt == self.cfg.max_attempts {
                break;
            }
            let pause = wait.unwrap_or_else(|| self.backoff(attempt));
            warn!(request = %request, attempt, error = %last, wait_ms = pause.as_millis() as u64, "source request failed; retrying");
            tokio::time::sleep(pause).await;
        }
        Err(SourceError::Exhausted {
            request,
            attempts: self.cfg.max_attempts,
            secs: started.elapsed().as_secs_f64(),
            last,
            base: self.cfg.url.to_string(),
        })
    }

    /// `/v1/donvi` or `/v1/tthc`: the whole list in one response.
    pub async fn list(&mut self, raw: &RawLog, endpoint: &str) -> Result<Vec<Value>, SourceError> {
        let r = self.fetch(raw, endpoint, &[]).await?;
        Ok(r.records())
    }

    /// Pulls every case record with `NgayCapNhat` ≥ `since` (all when `None`), handing each
    /// page's records and raw path to `on_page` in arrival order.
    pub async fn pull_cases(
        &mut self,
        raw: &RawLog,
        since: Option<i64>,
        mut on_page: impl FnMut(Page),
    ) -> Result<(), SourceError> {
        let size = self.cfg.page_size;
        let mut from = since;
        let started = Instant::now();
        loop {
            let mut query = vec![];
            if let Some(f) = from {
                query.push(("updated_from", source_timestamp(f)));
            }
            query.push(("page", "1".to_string()));
            query.push(("page_size", size.to_string()));
            let r = self.fetch(raw, "/v1/hoso", &query).await?;
            if self.stats.pages == 0 {
                if let Some(total) = r.envelope.total() {
                    self.progress.set_length(total);
                }
            }
            let (n, last) = summarise(&r.body);
            self.take(r, n, last, &mut on_page);
            if self.stats.pages % 50 == 0 {
                let rate = self.stats.records as f64 / started.elapsed().as_secs_f64().max(1e-3);
                info!(
                    pages = self.stats.pages,
                    records = self.stats.records,
                    per_second = rate as u64,
                    "pulling cases"
                );
            }
            if (n as u32) < size {
                return Ok(());
            }
            // The next cursor: the greatest readable NgayCapNhat of this page.
            match (last, from) {
                (None, _) => {
                    return Err(SourceError::Other(format!(
                        "a full page of {} (request {}) has no readable NgayCapNhat, so the pull cannot advance: the source breaks its contract; report it to its operators",
                        size, self.stats.requests
                    )))
                }
                (Some(l), Some(f)) if l <= f => {
                    // A page full of one second: read that second as a window, then go past it.
                    self.read_window(raw, f, &mut on_page).await?;
                    from = Some(f + 1_000_000);
                }
                (Some(l), _) => from = Some(l),
            }
        }
    }

    /// Counts a page of `n` records whose greatest readable `NgayCapNhat` is `last`, and hands
    /// it on.
    fn take(&mut self, r: Response, n: usize, last: Option<i64>, on_page: &mut impl FnMut(Page)) {
        self.stats.pages += 1;
        self.stats.records += n as u64;
        self.progress.inc(n as u64);
        if let Some(t) = last {
            if self.stats.cursor_after_micros.is_none_or(|c| t > c) {
                self.stats.cursor_after_micros = Some(t);
                self.stats.cursor_after = Some(source_timestamp(t));
            }
        }
        on_page(Page {
            raw_path: r.raw_path,
            body: r.body,
        });
    }

    /// Reads every record whose `NgayCapNhat` falls in the second starting at `at`, by page
    /// number, repeating passes until one brings no record not seen before (a record updated
    /// during a pass leaves the window and is read later, past it).
    async fn read_window(
        &mut self,
        raw: &RawLog,
        at: i64,
        on_page: &mut impl FnMut(Page),
    ) -> Result<(), SourceError> {
        self.stats.same_second_windows += 1;
        let size = self.cfg.page_size;
        let mut seen: HashSet<String> = HashSet::new();
        for pass in 1..=10 {
            let mut fresh = 0usize;
            let mut page = 1u64;
            loop {
                let query = vec![
                    ("updated_from", source_timestamp(at)),
                    ("updated_to", source_timestamp(at + 1_000_000)),
                    ("page", page.to_string()),
                    ("page_size", size.to_string()),
                ];
                let r = self.fetch(raw, "/v1/hoso", &query).await?;
                let data = r.records();
                for d in &data {
                    if seen.insert(d.to_string()) {
                        fresh += 1;
                    }
                }
                let last = data
                    .iter()
                    .filter_map(|d| instant(d.get("NgayCapNhat")).ok().flatten())
                    .max();
                self.take(r, data.len(), last, on_page);
                if (data.len() as u32) < size {
                    break;
                }
                page += 1;
            }
            debug!(pass, fresh, "same-second window pass");
            if pass > 1 && fresh == 0 {
                return Ok(());
            }
        }
        Err(SourceError::Other(format!(
            "records at {} kept changing over 10 passes; run again later",
            source_timestamp(at)
        )))
    }
}

/// `"/v1/hoso?updated_from=…&page=1"` for messages and logs (never holds the token).
pub fn describe(endpoint: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return endpoint.to_string();
    }
    let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{endpoint}?{}", q.join("&"))
}

fn without_url(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    if let Some(u) = e.url() {
        s = s
            .replace(&format!(" ({u})"), "")
            .replace(u.as_str(), "<source>");
    }
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

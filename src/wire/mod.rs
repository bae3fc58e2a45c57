//! The case system's wire format (`../shared/spec/source-api.md`), which the pull, the replay
//! of `raw/`, the normaliser and the demo source all speak: the endpoints, the envelope every
//! body has, the case record, the shapes values arrive in and Vietnam time.

pub mod envelope;
pub mod record;
pub mod scalar;
pub mod time;

pub use envelope::{classify_body, classify_reading, records_of, BodyVerdict, Envelope};
pub use record::{CasePage, CaseRecord, Supplement, TransferRecord};
pub use scalar::{
    enum_code, flag, instant, scalar_enum, scalar_flag, scalar_instant, scalar_str, scalar_text,
    text, Scalar,
};
pub use time::{in_range, local_date, parse_date, parse_instant, source_timestamp};

/// Reads a body as `T`, as `serde_json::from_slice` does. Its UTF-8 is checked once, for the
/// whole body (simdutf8), so serde_json reads it as text and does not check every string again:
/// that check was a twentieth of the pull's CPU. A body that is not UTF-8 is read as bytes, with
/// serde_json's own errors.
pub fn from_json<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> serde_json::Result<T> {
    match simdutf8::basic::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// The three endpoints of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/v1/donvi`: agencies.
    Agencies,
    /// `/v1/tthc`: the procedure catalog.
    Catalog,
    /// `/v1/hoso`: case files, paged.
    Cases,
}

impl Endpoint {
    pub const ALL: [Endpoint; 3] = [Endpoint::Agencies, Endpoint::Catalog, Endpoint::Cases];

    /// Its path, e.g. `/v1/hoso`.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Agencies => "/v1/donvi",
            Endpoint::Catalog => "/v1/tthc",
            Endpoint::Cases => "/v1/hoso",
        }
    }

    /// The folder its bodies land in under `raw/run_id=<run>/`, e.g. `v1-hoso`.
    pub fn raw_dir(self) -> &'static str {
        match self {
            Endpoint::Agencies => "v1-donvi",
            Endpoint::Catalog => "v1-tthc",
            Endpoint::Cases => "v1-hoso",
        }
    }

    /// The endpoint whose body landed at `path` (`raw/run_id=…/v1-hoso/000007_….json.zst`).
    pub fn of_raw_path(path: &str) -> Option<Endpoint> {
        let dir = path.rsplit('/').nth(1)?;
        Endpoint::ALL.into_iter().find(|e| e.raw_dir() == dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_their_raw_folders() {
        for e in Endpoint::ALL {
            let p = format!("raw/run_id=r/{}/000001_page=1.json.gz", e.raw_dir());
            assert_eq!(Endpoint::of_raw_path(&p), Some(e));
            assert_eq!(
                e.raw_dir(),
                e.path().trim_start_matches('/').replace('/', "-")
            );
        }
        assert_eq!(
            Endpoint::of_raw_path("raw/run_id=r/v1-other/1.json.gz"),
            None
        );
        assert_eq!(Endpoint::of_raw_path("v1-hoso"), None);
    }

    #[test]
    fn a_body_reads_the_same_checked_once_or_string_by_string() {
        use serde_json::Value;
        let bodies: [&[u8]; 5] = [
            "{\"TenHoSo\":\"Đăng ký khai sinh\",\"e\":\"\\u0110\\n\",\"n\":[1,2.5]}".as_bytes(),
            b"{\"a\":\"\xff\xfe\"}",
            b"{\"a\":\"ok\"}\xff",
            b"{\"a\":",
            b"",
        ];
        for body in bodies {
            let ours = from_json::<Value>(body).map_err(|e| e.to_string());
            let theirs = serde_json::from_slice::<Value>(body).map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{}", String::from_utf8_lossy(body));
        }
        assert!(from_json::<Value>(bodies[1]).is_err());
    }
}

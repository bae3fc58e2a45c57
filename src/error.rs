//! Every way motcua can stop, as one enum with the exit code each means (README, "Exit
//! codes"), and the typed errors of the stages it wraps. This module depends on no other
//! module of the crate, so every stage can use it without a cycle.

use std::fmt;

/// The result of motcua's own functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why motcua stopped. [`Error::exit_code`] is what the process exits with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad usage or settings: a period id, a pipeline file, a missing secret.
    #[error("{0}")]
    Usage(String),
    /// The case system could not be used.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// A state file under `_state/` is damaged or impossible.
    #[error(transparent)]
    StateDamaged(#[from] StateDamaged),
    /// Another run holds the lock.
    #[error(transparent)]
    LockBusy(#[from] LockBusy),
    /// This run lost the lock while it worked.
    #[error(transparent)]
    LockLost(#[from] LockLost),
    /// A KPI identity broke: nothing was published.
    #[error(transparent)]
    IdentityBroken(#[from] IdentityBroken),
    /// Some periods were not published; the others were.
    #[error(transparent)]
    PeriodsFailed(#[from] PeriodsFailed),
    /// A replay was asked to republish what no run published.
    #[error("{0}")]
    NothingToPublish(String),
    /// Stopped by a signal.
    #[error("stopped by {0}; what was published before stays, the lock is released; run again to finish")]
    Interrupted(Signal),
    /// What the run needs is not in the output root (raw responses pruned, a bucket gone).
    #[error("{0}")]
    Missing(String),
    /// The output root could not be read or written.
    #[error("{what} ({hint}): {source}")]
    Store {
        what: String,
        hint: &'static str,
        #[source]
        source: object_store::Error,
    },
    /// A local file or folder: scratch space, a dataset, a spill file.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Data that could not be read, written or computed.
    #[error("{what}: {source}")]
    Data {
        what: String,
        #[source]
        source: polars::error::PolarsError,
    },
    /// JSON that could not be read or written.
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A worker thread stopped without an answer: a bug.
    #[error("{0}; this is a bug in motcua, please report it with the run record")]
    Internal(String),
}

impl Error {
    /// The exit code of README's table.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) | Error::NothingToPublish(_) => 2,
            Error::Source(s) => s.exit_code(),
            Error::IdentityBroken(_) => 5,
            Error::LockBusy(_) | Error::LockLost(_) => 6,
            Error::PeriodsFailed(_) => 7,
            Error::StateDamaged(_) => 8,
            Error::Interrupted(Signal::Interrupt) => 130,
            Error::Interrupted(Signal::Terminate) => 143,
            Error::Missing(_)
            | Error::Store { .. }
            | Error::Io { .. }
            | Error::Data { .. }
            | Error::Json { .. }
            | Error::Internal(_) => 1,
        }
    }

    /// The same low-level error, saying `what` was being done instead; other errors as they
    /// are.
    pub fn doing(self, what: impl Into<String>) -> Error {
        match self {
            Error::Store { hint, source, .. } => Error::Store {
                what: what.into(),
                hint,
                source,
            },
            Error::Io { source, .. } => Error::Io {
                what: what.into(),
                source,
            },
            Error::Data { source, .. } => Error::Data {
                what: what.into(),
                source,
            },
            Error::Json { source, .. } => Error::Json {
                what: what.into(),
                source,
            },
            other => other,
        }
    }

    /// Whether the error is the refusal at the lock (such a run leaves no run record).
    pub fn is_lock_busy(&self) -> bool {
        matches!(self, Error::LockBusy(_))
    }
}

impl From<polars::error::PolarsError> for Error {
    fn from(source: polars::error::PolarsError) -> Self {
        Error::Data {
            what: "computing with polars".into(),
            source,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(source: std::io::Error) -> Self {
        Error::Io {
            what: "a local file".into(),
            source,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(source: serde_json::Error) -> Self {
        Error::Json {
            what: "JSON".into(),
            source,
        }
    }
}

/// Says what was being done when a low-level error happened.
pub trait Doing<T> {
    fn doing(self, what: impl Into<String>) -> Result<T>;
    fn doing_with(self, what: impl FnOnce() -> String) -> Result<T>;
}

macro_rules! doing_for {
    ($error:ty, $variant:ident) => {
        impl<T> Doing<T> for std::result::Result<T, $error> {
            fn doing(self, what: impl Into<String>) -> Result<T> {
                self.map_err(|source| Error::$variant {
                    what: what.into(),
                    source,
                })
            }
            fn doing_with(self, what: impl FnOnce() -> String) -> Result<T> {
                self.map_err(|source| Error::$variant {
                    what: what(),
                    source,
                })
            }
        }
    };
}

doing_for!(polars::error::PolarsError, Data);
doing_for!(std::io::Error, Io);
doing_for!(serde_json::Error, Json);

/// The signal that stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// Why a pull failed. Each message says what happened and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    #[error("the source answered {request} with a body that breaks the contract of source-api.md ({problem}); nothing was staged or published: report it to the case system's operators")]
    Contract { request: String, problem: String },
    #[error("the source answered {request} with a body larger than {limit} bytes; nothing was staged or published: raise source.max_body_mib in the pipeline file, or lower source.page_size")]
    TooLarge { request: String, limit: u64 },
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
    #[error("records at {at} kept changing over 10 passes of {request}; run again later")]
    Unsettled { request: String, at: String },
    #[error("a full page of {request} has no readable NgayCapNhat, so the pull cannot advance: the source breaks its contract; report it to its operators")]
    NoCursor { request: String },
    #[error(
        "the source token has characters an HTTP header cannot carry: check MOTCUA_SOURCE_TOKEN"
    )]
    BadToken,
    #[error("the source URL cannot be used: {0}; check source.url in the pipeline file")]
    BadUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("cannot land a raw response of {request}: {message}")]
    Landing { request: String, message: String },
    /// The thread that reads the pulled pages stopped (its own error says why).
    #[error("the pages of {request} could not be read: the thread reading them stopped")]
    ReaderStopped { request: String },
}

impl SourceError {
    fn exit_code(&self) -> u8 {
        match self {
            SourceError::Unauthorized { .. } | SourceError::BadToken => 3,
            SourceError::BadUrl(_) | SourceError::Client(_) => 2,
            SourceError::Landing { .. } | SourceError::ReaderStopped { .. } => 1,
            _ => 4,
        }
    }
}

/// A state file that cannot be used as it is: what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{path} cannot be used: {problem}; {fix}")]
pub struct StateDamaged {
    pub path: &'static str,
    pub problem: String,
    pub fix: &'static str,
}

/// Another run holds the lock: who.
#[derive(Debug, thiserror::Error)]
#[error("another run holds the lock _state/lock of this output: {holder}; wait for it to finish, or pass --wait to queue behind it")]
pub struct LockBusy {
    /// The holder's run id.
    pub run_id: String,
    /// The holder as the lock names it: run, command, host, pid, since, expiry.
    pub holder: String,
}

/// This run lost the lock while it worked.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "this run lost the lock _state/lock ({0}); it stopped without publishing further — run again"
)]
pub struct LockLost(pub String);

/// A KPI identity broke; nothing was published.
#[derive(Debug, thiserror::Error)]
#[error("identity broken in {period} {table} on {failures} of {rows} rows: {identity}; nothing was published — this is a bug in motcua, please report it with the run record")]
pub struct IdentityBroken {
    pub period: String,
    pub table: String,
    pub identity: String,
    pub failures: u64,
    pub rows: u64,
}

/// Some periods could not be published; the others were.
#[derive(Debug, thiserror::Error)]
#[error("{} of {} periods were not published ({}): see the run record _runs/{run_id}.json, fix the cause, then rerun with `backfill --resume` (or run those periods again)", failed.len(), total, failed.join(", "))]
pub struct PeriodsFailed {
    pub failed: Vec<String>,
    pub total: usize,
    pub run_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_exit_code() {
        let cases: Vec<(Error, u8)> = vec![
            (Error::Usage("x".into()), 2),
            (Error::NothingToPublish("x".into()), 2),
            (SourceError::BadToken.into(), 3),
            (
                SourceError::Unauthorized {
                    status: 401,
                    request: "r".into(),
                }
                .into(),
                3,
            ),
            (SourceError::BadUrl("x".into()).into(), 2),
            (
                SourceError::Contract {
                    request: "r".into(),
                    problem: "p".into(),
                }
                .into(),
                4,
            ),
            (
                SourceError::Landing {
                    request: "r".into(),
                    message: "m".into(),
                }
                .into(),
                1,
            ),
            (
                IdentityBroken {
                    period: "p".into(),
                    table: "t".into(),
                    identity: "i".into(),
                    failures: 1,
                    rows: 2,
                }
                .into(),
                5,
            ),
            (
                LockBusy {
                    run_id: "r".into(),
                    holder: "h".into(),
                }
                .into(),
                6,
            ),
            (LockLost("x".into()).into(), 6),
            (
                PeriodsFailed {
                    failed: vec!["2024-Q2".into()],
                    total: 8,
                    run_id: "r".into(),
                }
                .into(),
                7,
            ),
            (
                StateDamaged {
                    path: "_state/lock",
                    problem: "p".into(),
                    fix: "f",
                }
                .into(),
                8,
            ),
            (Error::Interrupted(Signal::Interrupt), 130),
            (Error::Interrupted(Signal::Terminate), 143),
            (Error::Internal("x".into()), 1),
            (Error::Missing("x".into()), 1),
            (std::io::Error::other("disk").into(), 1),
        ];
        for (e, code) in cases {
            assert_eq!(e.exit_code(), code, "{e}");
        }
    }

    #[test]
    fn errors_say_what_was_being_done() {
        let r: std::result::Result<(), std::io::Error> = Err(std::io::Error::other("full"));
        let e = r.doing("writing the spill file").unwrap_err();
        assert_eq!(e.to_string(), "writing the spill file: full");
        assert_eq!(e.exit_code(), 1);
    }
}

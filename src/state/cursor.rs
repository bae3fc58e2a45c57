//! The incremental cursor `_state/cursor.json`: the greatest `NgayCapNhat` staged, never past
//! the upper bound of the pull that staged it. Read back, it is checked like any input.

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Doing, Result, StateDamaged};
use crate::store::Store;
use crate::wire::{in_range, parse_instant, source_timestamp};

pub const CURSOR_PATH: &str = "_state/cursor.json";

const CURSOR_FIX: &str = "run once with --full-refresh, which pulls everything again and rewrites the cursor (or delete the file, which does the same)";
/// The incremental cursor: the greatest `NgayCapNhat` staged, never past the upper bound of
/// the pull that staged it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cursor {
    /// `yyyyMMddHHmmss`, Vietnam time, as the source writes it.
    pub cursor: String,
    pub cursor_micros: i64,
    pub run_id: String,
    pub written_at: String,
}

impl Cursor {
    pub fn new(micros: i64, run_id: &str) -> Cursor {
        Cursor {
            cursor: source_timestamp(micros),
            cursor_micros: micros,
            run_id: run_id.to_string(),
            written_at: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        }
    }

    /// A cursor read back from storage, checked: its instant in range, its two forms equal.
    pub fn parse(body: &[u8]) -> Result<Cursor, StateDamaged> {
        let damaged = |problem: String| StateDamaged {
            path: CURSOR_PATH,
            problem,
            fix: CURSOR_FIX,
        };
        let c: Cursor = serde_json::from_slice(body)
            .map_err(|e| damaged(format!("it is not a cursor ({e})")))?;
        if !in_range(c.cursor_micros) {
            return Err(damaged(format!(
                "cursor_micros {} is not a time",
                c.cursor_micros
            )));
        }
        if parse_instant(&c.cursor) != Some(c.cursor_micros) {
            return Err(damaged(format!(
                "cursor {:?} and cursor_micros {} disagree",
                c.cursor, c.cursor_micros
            )));
        }
        Ok(c)
    }

    /// Fails when the cursor lies at or after `bound`, the upper bound of this run's pull: no
    /// pull of this motcua moves it there, so a record stamped in the future did, under an
    /// earlier version, and pulling from it would miss every change made since.
    pub fn check_before(&self, bound: i64) -> Result<(), StateDamaged> {
        if self.cursor_micros < bound {
            return Ok(());
        }
        Err(StateDamaged {
            path: CURSOR_PATH,
            problem: format!(
                "it stands at {}, at or after this pull's upper bound {} (a record stamped in the future moved it there under an earlier motcua), so pulling from it would miss every change since",
                self.cursor,
                source_timestamp(bound)
            ),
            fix: CURSOR_FIX,
        })
    }
}

pub async fn read_cursor(store: &Store) -> Result<Option<Cursor>> {
    match store.get(CURSOR_PATH).await? {
        Some(b) => Ok(Some(Cursor::parse(&b)?)),
        None => Ok(None),
    }
}

pub async fn write_cursor(store: &Store, c: &Cursor) -> Result<()> {
    let body = serde_json::to_vec_pretty(c).doing("encoding the cursor")?;
    store.publish(CURSOR_PATH, Bytes::from(body)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_read_back_is_checked() {
        let c = Cursor::new(parse_instant("20240915020000").unwrap(), "r");
        let body = serde_json::to_vec(&c).unwrap();
        assert_eq!(Cursor::parse(&body).unwrap().cursor, "20240915020000");
        let bad =
            |v: serde_json::Value| Cursor::parse(v.to_string().as_bytes()).unwrap_err().problem;
        assert!(bad(serde_json::json!({"cursor": "x"})).contains("not a cursor"));
        assert!(bad(
            serde_json::json!({"cursor": "20240915020000", "cursor_micros": i64::MIN,
            "run_id": "r", "written_at": ""})
        )
        .contains("not a time"));
        assert!(bad(
            serde_json::json!({"cursor": "20240915020001", "cursor_micros": c.cursor_micros,
            "run_id": "r", "written_at": ""})
        )
        .contains("disagree"));
        assert!(c.check_before(c.cursor_micros + 1).is_ok());
        let e = c.check_before(c.cursor_micros).unwrap_err();
        assert!(e.to_string().contains("--full-refresh"), "{e}");
    }
}

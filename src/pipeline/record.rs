//! The run record `_runs/<run_id>.json` (`outputs.md`): written last by every run that got the
//! lock, whatever happened — command and periods, start and end, outcome and error, the cursor,
//! counts, identity checks, every file written, stage timings.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{NaiveDate, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::period::{Convention, Period};
use crate::error::{Doing, Result};
use crate::kpi::IdentityCheck;
use crate::store::{Store, WrittenFile};

/// What a run does, as its record names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommandKind {
    Run,
    Backfill,
    Replay,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Run => "run",
            CommandKind::Backfill => "backfill",
            CommandKind::Replay => "replay",
        }
    }
}

impl std::fmt::Display for CommandKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Under way (a record read back in this state belongs to a run that was killed).
    Running,
    /// Every period published.
    Succeeded,
    /// Some periods published, others not.
    Partial,
    /// Nothing published, or the run stopped.
    Failed,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
        })
    }
}

/// Counts of the run record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub retries: u64,
    pub pages: u64,
    pub records_pulled: u64,
    pub bytes_pulled: u64,
    pub raw_bytes_written: u64,
    pub raw_files_replayed: u64,
    pub valid_records: u64,
    pub duplicates_dropped: u64,
    pub records_rejected: u64,
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub cases_in_staging: u64,
    /// Staging partitions written (replaced) by the run.
    #[serde(alias = "staging_buckets_written")]
    pub staging_partitions_written: u64,
    /// Bytes of those partitions: what the run rewrote of staging.
    #[serde(default)]
    pub staging_bytes_written: u64,
    /// Partitions and bytes of the whole staging table once the run had staged.
    #[serde(default)]
    pub staging_partitions: u64,
    #[serde(default)]
    pub staging_bytes: u64,
    /// Files a rebuild (replay, or the one-off migration of an older layout) removed.
    #[serde(default)]
    pub staging_files_removed: u64,
    /// Staging partitions the KPIs counted from their files, and those whose counts came from
    /// the cache (`_state/kpi-cache/`: the file had not changed since it was counted).
    #[serde(default)]
    pub kpi_partitions_counted: u64,
    #[serde(default)]
    pub kpi_partitions_cached: u64,
    pub agencies: u64,
    pub procedures: u64,
    pub unknown_agencies: Vec<String>,
    pub cases_at_unknown_agencies: u64,
    pub raw_runs_pruned: u64,
    /// Records pulled with `NgayCapNhat` at or after the pull's upper bound (`pull_bound`):
    /// staged and counted, but they never move the cursor.
    #[serde(default)]
    pub records_after_bound: u64,
    /// Of those, records stamped later than the moment they were pulled (plus the clock-skew
    /// allowance): a clock error at the source.
    #[serde(default)]
    pub future_stamped_records: u64,
    /// The most distant of those stamps, `yyyyMMddHHmmss` Vietnam time.
    #[serde(default)]
    pub future_stamp_max: Option<String>,
}

/// The run record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub pipeline: String,
    pub command: CommandKind,
    /// `from..to` of a backfill.
    #[serde(default)]
    pub range: Option<String>,
    pub output: String,
    /// The province of a shared root (`schemas/root-layout.md`); the files below are then
    /// where they are in the root, under `province=<code>` folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province: Option<String>,
    pub period_convention: Convention,
    pub periods: Vec<PeriodRecord>,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub duration_secs: f64,
    pub outcome: Outcome,
    pub error: Option<String>,
    pub cursor_before: Option<String>,
    pub pulled_from: Option<String>,
    /// The pull's fixed upper bound (`updated_to`): the run's start minus the clock-skew
    /// allowance. The cursor never passes it.
    #[serde(default)]
    pub pull_bound: Option<String>,
    pub cursor_after: Option<String>,
    pub counts: Counts,
    pub identity_checks: Vec<IdentityCheck>,
    pub identities_hold: Option<bool>,
    pub files: Vec<WrittenFile>,
    /// Seconds spent in each stage: `pull` (or `replay_raw`, with normalising), `stage`,
    /// `compute` (staging read and counted, every period's tables built), `publish`.
    #[serde(default)]
    pub timings_secs: BTreeMap<String, f64>,
    /// The day the restated tables take their structure from.
    #[serde(default)]
    pub restate_to: Option<NaiveDate>,
    /// Per period and agency, the cases counted under an agency on a day outside its validity.
    #[serde(default)]
    pub agencies_outside_validity: Vec<OutsideValidity>,
    /// Agencies whose chain of successors ends before the restating date (kept as they are).
    #[serde(default)]
    pub restate_broken_chains: Vec<String>,
}

/// Cases of a period counted under an agency on a day outside its validity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutsideValidity {
    pub period: String,
    pub agency_code: String,
    pub cases: u64,
}

/// One period of a run and what became of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeriodRecord {
    pub id: String,
    /// The convention it was computed under (the run's, unless a replay republished a
    /// period under the convention it was first published with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convention: Option<Convention>,
    pub start: String,
    pub end: String,
    pub published: bool,
    #[serde(default)]
    pub error: Option<String>,
}

impl PeriodRecord {
    pub fn of(p: &Period) -> PeriodRecord {
        PeriodRecord {
            id: p.id.to_string(),
            convention: Some(p.convention),
            start: p.start.to_string(),
            end: p.end.to_string(),
            published: false,
            error: None,
        }
    }
}

/// Now, as the run record writes times.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Where the record of run `run_id` lives.
pub fn path(run_id: &str) -> String {
    format!("_runs/{run_id}.json")
}

impl RunRecord {
    /// A record of a run that has just started.
    pub fn start(
        run_id: &str,
        pipeline: &str,
        command: CommandKind,
        output: &str,
        convention: Convention,
    ) -> Self {
        RunRecord {
            run_id: run_id.to_string(),
            pipeline: pipeline.to_string(),
            command,
            range: None,
            output: output.to_string(),
            province: None,
            period_convention: convention,
            periods: vec![],
            started_at: now(),
            ended_at: None,
            duration_secs: 0.0,
            outcome: Outcome::Running,
            error: None,
            cursor_before: None,
            pulled_from: None,
            pull_bound: None,
            cursor_after: None,
            counts: Counts::default(),
            identity_checks: vec![],
            identities_hold: None,
            files: vec![],
            timings_secs: BTreeMap::new(),
            restate_to: None,
            agencies_outside_validity: vec![],
            restate_broken_chains: vec![],
        }
    }

    /// Writes the record (one atomic write).
    pub async fn write(&self, store: &Store) -> Result<()> {
        let mut shown = self.clone();
        shown.province = store.province().map(|p| p.code().to_string());
        for f in &mut shown.files {
            f.path = store.located(&f.path);
        }
        let body = serde_json::to_vec_pretty(&shown).doing("encoding the run record")?;
        store.publish(&path(&self.run_id), Bytes::from(body)).await
    }

    /// Records the period `id` as published.
    pub fn published(&mut self, id: &str) {
        if let Some(p) = self.periods.iter_mut().find(|p| p.id == id) {
            p.published = true;
        }
    }

    /// Records why the period `id` was not published.
    pub fn failed(&mut self, id: &str, error: String) {
        if let Some(p) = self.periods.iter_mut().find(|p| p.id == id) {
            p.error = Some(error);
        }
    }
}

/// Every readable run record under `_runs/`, oldest first; an unreadable one is named in a
/// warning and skipped.
pub async fn all(store: &Store) -> Result<Vec<RunRecord>> {
    let mut out = vec![];
    for (path, _) in store.list("_runs").await? {
        let Some(body) = store.get(&path).await? else {
            continue;
        };
        match serde_json::from_slice::<RunRecord>(&body) {
            Ok(r) => out.push(r),
            Err(e) => {
                tracing::warn!(record = %path, error = %e, "a run record cannot be read; skipped")
            }
        }
    }
    out.sort_by(|a, b| (&a.started_at, &a.run_id).cmp(&(&b.started_at, &b.run_id)));
    Ok(out)
}

/// The newest `n` readable run records, newest first, and how many records there are (run ids
/// sort in start order, so only those `n` are read).
pub async fn latest(store: &Store, n: usize) -> Result<(usize, Vec<RunRecord>)> {
    let listed = store.list("_runs").await?;
    let mut out = vec![];
    for (path, _) in listed.iter().rev().take(n) {
        if let Some(body) = store.get(path).await? {
            if let Ok(r) = serde_json::from_slice::<RunRecord>(&body) {
                out.push(r);
            }
        }
    }
    Ok((listed.len(), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON of a run record keeps the names and values readers and `status` rely on.
    #[test]
    fn a_record_reads_and_writes_its_enums_as_words() {
        let mut r = RunRecord::start(
            "r1",
            "demo",
            CommandKind::Backfill,
            "./data",
            Convention::Decree09,
        );
        r.outcome = Outcome::Partial;
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["command"], "backfill");
        assert_eq!(v["outcome"], "partial");
        assert_eq!(v["period_convention"], "decree09");
        let back: RunRecord = serde_json::from_value(v).unwrap();
        assert_eq!(
            (back.command, back.outcome),
            (CommandKind::Backfill, Outcome::Partial)
        );
        assert_eq!(path("r1"), "_runs/r1.json");
        for o in [
            Outcome::Running,
            Outcome::Succeeded,
            Outcome::Partial,
            Outcome::Failed,
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), o.to_string());
        }
    }
}

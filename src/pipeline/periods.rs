//! Which periods a command publishes: `run`'s own (by default the current quarter to date and
//! the previous one), a backfill's range (or, resuming, what the last backfill of that range
//! left undone), and what a replay republishes — every period the run records say was
//! published, each under the convention it was published with.

use std::collections::{BTreeMap, BTreeSet};

use chrono::Utc;
use tracing::{info, warn};

use super::record::{self, CommandKind, Outcome, RunRecord};
use super::Command;
use crate::config::Settings;
use crate::domain::period::{self, Convention, Period, PeriodId};
use crate::error::{Error, Result};
use crate::store::Store;

/// The default periods of `run`: the current quarter to date and the previous one, so that a
/// case changed after its quarter was published reaches that quarter at the next run.
pub fn default_periods(settings: &Settings) -> Vec<PeriodId> {
    let today = Utc::now()
        .with_timezone(&chrono_tz::Asia::Ho_Chi_Minh)
        .date_naive();
    let q = PeriodId::quarter_containing(today, settings.convention);
    vec![q.previous(), q]
}

/// The periods a command publishes, each resolved under its convention.
pub async fn of(settings: &Settings, store: &Store, command: &Command) -> Result<Vec<Period>> {
    let ours = |ids: Vec<PeriodId>| -> Vec<Period> {
        ids.iter().map(|p| p.resolve(settings.convention)).collect()
    };
    Ok(match command {
        Command::Run { periods, .. } => ours(periods.clone()),
        Command::Backfill {
            from,
            to,
            resume: again,
            ..
        } => {
            let all = period::range(*from, *to).map_err(|e| Error::Usage(e.to_string()))?;
            ours(if *again {
                resume(store, &all, &format!("{from}..{to}"), settings.convention).await?
            } else {
                all
            })
        }
        Command::Replay { periods, .. } if !periods.is_empty() => ours(periods.clone()),
        Command::Replay { run_id, .. } => replayed(store, run_id.as_deref()).await?,
    })
}

/// What a replay republishes by default: every period the run records (of every run, or of
/// run `run` alone) say was published, each under the convention it was published with —
/// whether or not `kpi/` still holds it.
async fn replayed(store: &Store, run: Option<&str>) -> Result<Vec<Period>> {
    let records = record::all(store).await?;
    let chosen: Vec<&RunRecord> = match run {
        Some(id) => vec![records.iter().find(|r| r.run_id == id).ok_or_else(|| {
            Error::NothingToPublish(format!("there is no run record _runs/{id}.json to say which periods run {id} published: give them with --period"))
        })?],
        None => records.iter().collect(),
    };
    // The latest run that published a period says under which convention.
    let mut latest: BTreeMap<PeriodId, Convention> = BTreeMap::new();
    for r in &chosen {
        for p in r.periods.iter().filter(|p| p.published) {
            match p.id.parse::<PeriodId>() {
                Ok(id) => {
                    latest.insert(id, p.convention.unwrap_or(r.period_convention));
                }
                Err(_) => {
                    warn!(run = %r.run_id, period = %p.id, "a published period of a run record cannot be read; not republished")
                }
            }
        }
    }
    let whose = run.map_or("the run records under _runs/".to_string(), |id| {
        format!("run {id}")
    });
    if latest.is_empty() {
        return Err(Error::NothingToPublish(format!(
            "{whose} list no published period, so a replay has nothing to republish: give the periods with --period"
        )));
    }
    let present: BTreeSet<String> = published(store)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let missing: Vec<String> = latest
        .keys()
        .map(|p| p.to_string())
        .filter(|p| !present.contains(p))
        .collect();
    info!(
        periods = ?latest.keys().map(|p| p.to_string()).collect::<Vec<_>>(),
        missing_from_kpi = ?missing,
        "republishing every period {whose} published"
    );
    Ok(latest.into_iter().map(|(id, c)| id.resolve(c)).collect())
}

/// Periods of a backfill range that the last backfill of that range did not publish, or whose
/// partition files are missing.
async fn resume(
    store: &Store,
    all: &[PeriodId],
    range: &str,
    convention: Convention,
) -> Result<Vec<PeriodId>> {
    let last: Option<RunRecord> = record::all(store).await?.into_iter().rfind(|r| {
        r.command == CommandKind::Backfill
            && r.range.as_deref() == Some(range)
            && r.period_convention == convention
            && r.outcome != Outcome::Running
    });
    let published: BTreeSet<String> = published(store)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let failed: BTreeSet<&str> = last
        .iter()
        .flat_map(|r| {
            r.periods
                .iter()
                .filter(|p| !p.published)
                .map(|p| p.id.as_str())
        })
        .collect();
    let todo: Vec<PeriodId> = all
        .iter()
        .filter(|p| failed.contains(p.to_string().as_str()) || !published.contains(&p.to_string()))
        .copied()
        .collect();
    info!(
        last_backfill = last.as_ref().map(|r| r.run_id.as_str()).unwrap_or("none"),
        periods = ?todo.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "resuming: only the periods that failed or are missing"
    );
    Ok(todo)
}

/// Published periods (the as-was tables present) with the time they were last written.
pub async fn published(store: &Store) -> Result<Vec<(String, chrono::DateTime<Utc>)>> {
    let base = &crate::publish::TABLES[..3];
    let mut found: BTreeMap<String, (BTreeSet<String>, chrono::DateTime<Utc>)> = BTreeMap::new();
    for (path, _, modified) in store.list_meta("kpi").await? {
        let mut parts = path.split('/');
        let (Some(_), Some(table)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Some(id) = path.split('/').find_map(|s| s.strip_prefix("period=")) else {
            continue;
        };
        if !base.contains(&table) {
            continue;
        }
        let e = found
            .entry(id.to_string())
            .or_insert((BTreeSet::new(), modified));
        e.0.insert(table.to_string());
        e.1 = e.1.max(modified);
    }
    Ok(found
        .into_iter()
        .filter(|(_, (tables, _))| tables.len() == base.len())
        .map(|(id, (_, t))| (id, t))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::record::PeriodRecord;

    /// A replay with no period given republishes what the records say was published, each
    /// under its convention, and says when there is nothing.
    #[tokio::test]
    async fn a_replay_republishes_what_the_records_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let e = replayed(&store, None).await.unwrap_err();
        assert!(matches!(e, Error::NothingToPublish(_)), "{e}");
        let q = |id: &str, c: Convention, published: bool| PeriodRecord {
            published,
            ..PeriodRecord::of(&id.parse::<PeriodId>().unwrap().resolve(c))
        };
        let mut a = RunRecord::start(
            "20240101T000000000Z-aaaa",
            "t",
            CommandKind::Run,
            "o",
            Convention::Decree09,
        );
        a.periods = vec![
            q("2024-Q2", Convention::Decree09, true),
            q("2024-Q3", Convention::Decree09, true),
        ];
        a.write(&store).await.unwrap();
        let mut b = RunRecord::start(
            "20240102T000000000Z-bbbb",
            "t",
            CommandKind::Run,
            "o",
            Convention::Calendar,
        );
        b.periods = vec![
            q("2024-Q3", Convention::Calendar, true),
            q("2024-Q4", Convention::Calendar, false),
        ];
        b.write(&store).await.unwrap();
        let all = replayed(&store, None).await.unwrap();
        let got: Vec<(String, Convention)> = all
            .iter()
            .map(|p| (p.id.to_string(), p.convention))
            .collect();
        assert_eq!(
            got,
            [
                ("2024-Q2".to_string(), Convention::Decree09),
                ("2024-Q3".to_string(), Convention::Calendar)
            ]
        );
        let first = replayed(&store, Some("20240101T000000000Z-aaaa"))
            .await
            .unwrap();
        assert_eq!(
            first.iter().map(|p| p.convention).collect::<Vec<_>>(),
            [Convention::Decree09; 2]
        );
        assert!(replayed(&store, Some("nope")).await.is_err());
    }
}

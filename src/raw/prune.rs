//! Raw retention: the bodies of runs older than `raw_retention` are deleted by each successful
//! run (never its own).

use std::time::Duration;

use chrono::Utc;
use tracing::info;

use crate::error::Result;
use crate::store::Store;

/// Deletes the raw responses of runs that started more than `keep` ago (never `this_run`'s);
/// the number of runs pruned.
pub async fn prune(store: &Store, keep: Duration, this_run: &str) -> Result<u64> {
    let keep = chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let cutoff = Utc::now()
        .checked_sub_signed(keep)
        .map_or(i64::MIN, |t| t.timestamp_micros());
    let mut pruned = 0;
    for run in super::replay::runs(store).await? {
        let Some(started) = crate::run_id::started_at(&run) else {
            continue;
        };
        if run != this_run && started < cutoff {
            for (p, _) in store.list(&format!("raw/run_id={run}")).await? {
                store.delete(&p).await?;
            }
            pruned += 1;
        }
    }
    if pruned > 0 {
        info!(
            runs = pruned,
            "pruned raw responses older than the retention"
        );
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raw::RawLog;
    use crate::wire::Endpoint;

    #[tokio::test]
    async fn only_runs_older_than_the_retention_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), "t").unwrap();
        let now = crate::run_id::new();
        for run in ["20200101T000000000Z-0000", "not-a-run", now.as_str()] {
            let raw = RawLog::new(store.clone(), run);
            raw.land(Endpoint::Agencies, &[], "{}".into())
                .await
                .unwrap();
            raw.settle().await.unwrap();
        }
        assert_eq!(
            prune(&store, Duration::from_secs(30 * 86_400), "x")
                .await
                .unwrap(),
            1
        );
        let left = crate::raw::replay::runs(&store).await.unwrap();
        assert_eq!(left, vec![now.clone(), "not-a-run".to_string()]);
        // Its own run is never pruned, even with a retention of zero.
        assert_eq!(prune(&store, Duration::ZERO, &now).await.unwrap(), 0);
    }
}

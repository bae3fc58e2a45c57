//! `motcua replay`: rebuild staging and the KPIs from the raw layer alone, without the source.

use crate::domain::period::PeriodId;
use crate::error::{Error, Result};
use crate::pipeline::Command;

#[derive(clap::Args)]
pub struct Args {
    /// Replay the raw responses of the runs up to this one, and publish its periods.
    #[arg(
        long,
        value_name = "RUN_ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub run_id: Option<String>,
    /// Replay every run's raw responses, and republish every published period.
    #[arg(long)]
    pub all: bool,
    /// Publish these periods instead.
    #[arg(long = "period", value_name = "ID")]
    pub periods: Vec<PeriodId>,
    #[command(flatten)]
    pub common: super::Common,
}

pub async fn run(a: Args) -> Result<()> {
    if a.common.from_staging {
        return Err(Error::Usage(
            "replay rebuilds staging from raw/; --from-staging is for run and backfill".into(),
        ));
    }
    let settings = a.common.settings(true)?;
    let work = Command::Replay {
        run_id: a.run_id,
        periods: a.periods,
    };
    a.common.execute(&settings, work).await
}

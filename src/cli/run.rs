//! `motcua run`: pull what changed, stage it, publish each period.

use crate::domain::period::PeriodId;
use crate::error::Result;
use crate::pipeline::{periods::default_periods, Command};

#[derive(clap::Args)]
pub struct Args {
    /// A period to publish: 2024-Q3, 2024-H1, 2024-9M, 2024 or 2024-09. Repeatable.
    #[arg(long = "period", value_name = "ID")]
    pub periods: Vec<PeriodId>,
    /// Pull everything again, ignoring the cursor.
    #[arg(long)]
    pub full_refresh: bool,
    #[command(flatten)]
    pub common: super::Common,
}

pub async fn run(a: Args) -> Result<()> {
    let settings = a.common.settings(false)?;
    let periods = match a.periods.is_empty() {
        true => default_periods(&settings),
        false => a.periods,
    };
    let work = Command::Run {
        periods,
        full_refresh: a.full_refresh,
    };
    a.common.execute(&settings, work).await
}

//! The `motcua` command line. See `README.md` for the commands, flags, environment and exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use motcua::config::{Overrides, Settings};
use motcua::period::{self, Convention, PeriodId};
use motcua::source::SourceError;
use motcua::{demo, report, run};

/// Turns a province's administrative-procedure cases into its quarterly figures.
#[derive(Parser)]
#[command(name = "motcua", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pull what changed since the last run, update staging, publish each --period
    /// (default: the current quarter to date and the previous one).
    Run {
        /// A period to publish: 2024-Q3, 2024-H1, 2024-9M, 2024 or 2024-09. Repeatable.
        #[arg(long = "period", value_name = "ID")]
        periods: Vec<PeriodId>,
        #[command(flatten)]
        common: Common,
    },
    /// Pull like `run`, then publish every period from --from to --to (one kind).
    Backfill {
        #[arg(long, value_name = "ID")]
        from: PeriodId,
        #[arg(long, value_name = "ID")]
        to: PeriodId,
        #[command(flatten)]
        common: Common,
    },
    /// Serve the demo province on 127.0.0.1 (token: MOTCUA_SOURCE_TOKEN, default "demo-token").
    DemoSource {
        /// Port to listen on; 0 picks a free one.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Seed of the synthetic province.
        #[arg(long, default_value_t = 2024)]
        seed: u64,
        /// Multiplies the number of cases (1.0: about 160 thousand records).
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        /// Serve donvi.json, tthc.json and hoso.json from this folder instead.
        #[arg(long, value_name = "DIR")]
        dataset: Option<PathBuf>,
        /// Misbehave as real servers do (429, 5xx, dropped connections, busy, slow, live updates).
        #[arg(long, default_value = "on", value_parser = ["on", "off"])]
        chaos: String,
        /// Write the URL to this file once listening.
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
    },
}

#[derive(Args)]
struct Common {
    /// decree09 (default) or calendar.
    #[arg(long, value_enum)]
    period_convention: Option<Convention>,
    /// The deployment's pipeline file (TOML).
    #[arg(long, value_name = "FILE")]
    pipeline: Option<PathBuf>,
    /// Base URL of the case system, e.g. https://motcua.example.gov.vn/api/
    #[arg(long, value_name = "URL")]
    source_url: Option<String>,
    /// Output root: a folder, file://… or s3://bucket/prefix (default ./data).
    #[arg(long, value_name = "URL")]
    output: Option<String>,
}

impl Common {
    fn overrides(&self) -> Overrides {
        Overrides {
            pipeline: self.pipeline.clone(),
            source_url: self.source_url.clone(),
            output: self.output.clone(),
            convention: self.period_convention,
        }
    }
}

/// Exit codes (listed in README.md).
mod exit {
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const TOKEN_REFUSED: u8 = 3;
    pub const SOURCE_UNAVAILABLE: u8 = 4;
    pub const IDENTITY_BROKEN: u8 = 5;
}

fn classify(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<SourceError>() {
            return match s {
                SourceError::Unauthorized { .. } => exit::TOKEN_REFUSED,
                _ => exit::SOURCE_UNAVAILABLE,
            };
        }
        if cause.downcast_ref::<run::IdentityBroken>().is_some() {
            return exit::IDENTITY_BROKEN;
        }
    }
    exit::FAILED
}

fn init_logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MOTCUA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

async fn publish_periods(
    common: &Common,
    command: &str,
    periods: Option<Vec<PeriodId>>,
) -> Result<(), (u8, String)> {
    let settings =
        Settings::resolve(&common.overrides()).map_err(|e| (exit::USAGE, format!("{e:#}")))?;
    let periods = periods.unwrap_or_else(|| run::default_periods(&settings));
    match run::execute(&settings, command, &periods).await {
        Ok(outcome) => {
            for t in &outcome.tables {
                match report::level_table(t) {
                    Ok(table) => println!("{table}"),
                    Err(e) => tracing::warn!(error = %e, "could not format the summary table"),
                }
            }
            println!(
                "run {} published {} period(s) to {}",
                outcome.record.run_id,
                outcome.tables.len(),
                settings.output
            );
            Ok(())
        }
        Err(e) => Err((classify(&e), format!("{e:#}"))),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    let result = match cli.command {
        Command::Run { periods, common } => {
            let periods = (!periods.is_empty()).then_some(periods);
            publish_periods(&common, "run", periods).await
        }
        Command::Backfill { from, to, common } => match period::range(from, to) {
            Ok(ids) => publish_periods(&common, "backfill", Some(ids)).await,
            Err(e) => Err((exit::USAGE, e)),
        },
        Command::DemoSource {
            port,
            seed,
            scale,
            dataset,
            chaos,
            ready_file,
        } => {
            let token =
                std::env::var("MOTCUA_SOURCE_TOKEN").unwrap_or_else(|_| "demo-token".into());
            let chaos = if chaos == "on" {
                demo::Chaos::all()
            } else {
                demo::Chaos::off()
            };
            let data = match dataset {
                Some(dir) => demo::load_dataset(&dir),
                None => Ok(demo::generate(seed, scale)),
            };
            match data {
                Ok(data) => demo::run(data, &token, chaos, port, ready_file.as_deref())
                    .await
                    .map_err(|e| (exit::FAILED, format!("{e:#}"))),
                Err(e) => Err((exit::USAGE, format!("{e:#}"))),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("motcua: {message}");
            ExitCode::from(code)
        }
    }
}

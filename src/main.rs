//! The `motcua` command line. See `README.md` for the commands, flags, environment and exit codes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use motcua::config::{Overrides, PipelineFile, Settings};
use motcua::period::{Convention, PeriodId};
use motcua::run::{self, Command as RunCommand, Options};
use motcua::source::SourceError;
use motcua::state::{LockBusy, LockLost, StateDamaged};
use motcua::{demo, progress, report, status, store};

/// mimalloc: parsing JSON and polars allocate and free a great deal, from several threads;
/// glibc's malloc spent a quarter of a replay's time and held freed memory per thread.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns a province's administrative-procedure cases into its quarterly figures.
#[derive(Parser)]
#[command(name = "motcua", version, about)]
struct Cli {
    /// Log lines as human-readable text (default) or JSON lines for cron and log shippers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Pull what changed since the last run, update staging, publish each --period
    /// (default: the current quarter to date and the previous one).
    Run {
        /// A period to publish: 2024-Q3, 2024-H1, 2024-9M, 2024 or 2024-09. Repeatable.
        #[arg(long = "period", value_name = "ID")]
        periods: Vec<PeriodId>,
        /// Pull everything again, ignoring the cursor.
        #[arg(long)]
        full_refresh: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Pull like `run`, then publish every period from --from to --to (one kind).
    Backfill {
        #[arg(long, value_name = "ID")]
        from: PeriodId,
        #[arg(long, value_name = "ID")]
        to: PeriodId,
        /// Publish only the periods the last backfill of this range failed or left missing.
        #[arg(long)]
        resume: bool,
        /// Pull everything again, ignoring the cursor.
        #[arg(long)]
        full_refresh: bool,
        #[command(flatten)]
        common: Common,
    },
    /// Rebuild staging and the KPIs from the raw layer alone, without the source.
    Replay {
        /// Replay the raw responses of the runs up to this one, and publish its periods.
        #[arg(
            long,
            value_name = "RUN_ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        run_id: Option<String>,
        /// Replay every run's raw responses, and republish every published period.
        #[arg(long)]
        all: bool,
        /// Publish these periods instead.
        #[arg(long = "period", value_name = "ID")]
        periods: Vec<PeriodId>,
        #[command(flatten)]
        common: Common,
    },
    /// Show the last runs, the cursor, the lock holder and the published periods.
    Status {
        /// The deployment's pipeline file (for its output root).
        #[arg(long, value_name = "FILE")]
        pipeline: Option<PathBuf>,
        /// Output root: a folder, file://… or s3://bucket/prefix (default ./data).
        #[arg(long, value_name = "URL")]
        output: Option<String>,
        /// How many runs to list.
        #[arg(long, default_value_t = 10)]
        runs: usize,
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
        /// Do not serve: write the province into the raw layer of one run under this output
        /// root, for `motcua replay` (the benchmark's way to provinces of millions of records).
        #[arg(long, value_name = "URL", conflicts_with_all = ["dataset", "ready_file"])]
        write_raw: Option<String>,
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
    /// When another run holds the output's lock, wait for it instead of exiting.
    #[arg(long)]
    wait: bool,
    /// run, backfill: do not pull; publish the periods from staging as it stands (agencies
    /// and catalog from the last pull's raw responses). The source is not contacted and the
    /// cursor does not move: to republish after an upgrade, or while the source is down.
    #[arg(long)]
    from_staging: bool,
    /// Set for `replay`, which never contacts the source.
    #[arg(skip)]
    offline: bool,
}

impl Common {
    fn overrides(&self) -> Overrides {
        Overrides {
            pipeline: self.pipeline.clone(),
            source_url: self.source_url.clone(),
            output: self.output.clone(),
            convention: self.period_convention,
            offline: self.from_staging || self.offline,
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
    pub const LOCKED: u8 = 6;
    pub const PERIODS_FAILED: u8 = 7;
    pub const STATE_DAMAGED: u8 = 8;
    pub const INTERRUPTED: u8 = 130;
    pub const TERMINATED: u8 = 143;
}

fn classify(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<SourceError>() {
            return match s {
                SourceError::Unauthorized { .. } | SourceError::BadToken => exit::TOKEN_REFUSED,
                SourceError::BadUrl(_) | SourceError::Client(_) => exit::USAGE,
                SourceError::Landing { .. } => exit::FAILED,
                _ => exit::SOURCE_UNAVAILABLE,
            };
        }
        if cause.is::<run::IdentityBroken>() {
            return exit::IDENTITY_BROKEN;
        }
        if cause.is::<LockBusy>() || cause.is::<LockLost>() {
            return exit::LOCKED;
        }
        if cause.is::<run::PeriodsFailed>() {
            return exit::PERIODS_FAILED;
        }
        if cause.is::<StateDamaged>() {
            return exit::STATE_DAMAGED;
        }
        if cause.is::<run::NothingToPublish>() {
            return exit::USAGE;
        }
        if let Some(run::Interrupted(signal)) = cause.downcast_ref::<run::Interrupted>() {
            return if *signal == "SIGTERM" {
                exit::TERMINATED
            } else {
                exit::INTERRUPTED
            };
        }
    }
    exit::FAILED
}

fn init_logs(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("MOTCUA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::stderr().is_terminal();
    match format {
        LogFormat::Json => {
            progress::enable(false);
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
        }
        LogFormat::Text => {
            progress::enable(terminal);
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(progress::LogWriter)
                .with_target(false)
                .with_ansi(terminal)
                .init();
        }
    }
}

async fn execute(common: &Common, command: RunCommand) -> Result<(), (u8, String)> {
    let settings =
        Settings::resolve(&common.overrides()).map_err(|e| (exit::USAGE, format!("{e:#}")))?;
    let options = Options {
        wait: common.wait,
        from_staging: common.from_staging,
    };
    match run::execute(&settings, &command, options).await {
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
    init_logs(cli.log_format);
    let result = match cli.command {
        Command::Run {
            periods,
            full_refresh,
            common,
        } => {
            let periods = if periods.is_empty() {
                match Settings::resolve(&common.overrides()) {
                    Ok(s) => run::default_periods(&s),
                    Err(e) => return fail(exit::USAGE, format!("{e:#}")),
                }
            } else {
                periods
            };
            execute(
                &common,
                RunCommand::Run {
                    periods,
                    full_refresh,
                },
            )
            .await
        }
        Command::Backfill {
            from,
            to,
            resume,
            full_refresh,
            common,
        } => match motcua::period::range(from, to) {
            Ok(_) => {
                execute(
                    &common,
                    RunCommand::Backfill {
                        from,
                        to,
                        resume,
                        full_refresh,
                    },
                )
                .await
            }
            Err(e) => Err((exit::USAGE, e)),
        },
        Command::Replay {
            run_id,
            all: _,
            periods,
            mut common,
        } => {
            if common.from_staging {
                return fail(
                    exit::USAGE,
                    "replay rebuilds staging from raw/; --from-staging is for run and backfill"
                        .into(),
                );
            }
            common.offline = true;
            execute(&common, RunCommand::Replay { run_id, periods }).await
        }
        Command::Status {
            pipeline,
            output,
            runs,
        } => {
            let output = match (output, pipeline.map(|p| PipelineFile::load(&p))) {
                (Some(o), _) => Ok(o),
                (None, Some(Ok(f))) => Ok(f.output.unwrap_or_else(|| "./data".into())),
                (None, Some(Err(e))) => Err((exit::USAGE, format!("{e:#}"))),
                (None, None) => Ok("./data".into()),
            };
            match output {
                Ok(o) => match store::Store::open(&o, "status") {
                    Ok(s) => match status::report(&s, runs).await {
                        Ok(text) => {
                            print!("{text}");
                            Ok(())
                        }
                        Err(e) => Err((exit::FAILED, format!("{e:#}"))),
                    },
                    Err(e) => Err((exit::USAGE, format!("{e:#}"))),
                },
                Err(e) => Err(e),
            }
        }
        Command::DemoSource {
            seed,
            scale,
            write_raw: Some(output),
            ..
        } => match demo::write_raw(seed, scale, &output).await {
            Ok((run_id, records)) => {
                println!("wrote {records} case records as raw run {run_id} under {output}: `motcua replay --all` reads them");
                Ok(())
            }
            Err(e) => Err((exit::FAILED, format!("{e:#}"))),
        },
        Command::DemoSource {
            port,
            seed,
            scale,
            dataset,
            chaos,
            ready_file,
            write_raw: None,
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
        Err((code, message)) => fail(code, message),
    }
}

fn fail(code: u8, message: String) -> ExitCode {
    eprintln!("motcua: {message}");
    ExitCode::from(code)
}

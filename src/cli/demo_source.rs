//! `motcua demo-source`: serve the demo province (or a dataset folder) on 127.0.0.1, or write
//! it straight into the raw layer of one run.

use std::path::PathBuf;

use clap::ValueEnum;

use crate::demo;
use crate::error::Result;

/// Whether the demo source misbehaves.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(clap::Args)]
pub struct Args {
    /// Port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Seed of the synthetic province.
    #[arg(long, default_value_t = 2024)]
    pub seed: u64,
    /// Multiplies the number of cases (1.0: about 240 thousand records). The province is drawn
    /// to a scratch folder in the temp dir (about 1.4 GB a million records) and served from
    /// there, so memory stays a few hundred megabytes at ten million records; `POST
    /// /demo/night?changes=20000&corrections=0` moves it on by one night.
    #[arg(long, default_value_t = 1.0)]
    pub scale: f64,
    /// The province letter code ending every agency code (and so every case id): serve the
    /// same province as another one's, e.g. H01, for many provinces in one root.
    #[arg(long, value_name = "CODE", default_value = crate::demo::AGENCY_CODE)]
    pub agency_code: String,
    /// Serve donvi.json, tthc.json and hoso.json from this folder instead.
    #[arg(long, value_name = "DIR")]
    pub dataset: Option<PathBuf>,
    /// Misbehave as real servers do (429, 5xx, dropped connections, busy, slow, live updates).
    #[arg(long, value_enum, default_value_t = Switch::On)]
    pub chaos: Switch,
    /// Write the URL to this file once listening.
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// Do not serve: write the province into the raw layer of one run under this output
    /// root, for `motcua replay` (the benchmark's way to provinces of millions of records).
    #[arg(long, value_name = "URL", conflicts_with_all = ["dataset", "ready_file"])]
    pub write_raw: Option<String>,
}

pub async fn run(a: Args) -> Result<()> {
    if let Some(output) = a.write_raw {
        let (run_id, records) = demo::write_raw(a.seed, a.scale, &output).await?;
        println!("wrote {records} case records as raw run {run_id} under {output}: `motcua replay --all` reads them");
        return Ok(());
    }
    let token = std::env::var("MOTCUA_SOURCE_TOKEN").unwrap_or_else(|_| "demo-token".into());
    let chaos = match a.chaos {
        Switch::On => demo::Chaos::all(),
        Switch::Off => demo::Chaos::off(),
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], a.port));
    let src = match a.dataset {
        Some(dir) => demo::start(demo::load_dataset(&dir)?, &token, chaos, addr).await?,
        None => demo::start_province(a.seed, a.scale, &token, chaos, addr).await?,
    }
    .with_agency_code(&a.agency_code)?;
    // Each page is built in a fresh megabyte and freed once sent: given back at once, its
    // pages were faulted in again for the next, a third of the source's CPU.
    crate::memory::keep_freed();
    demo::run(src, a.ready_file.as_deref()).await
}

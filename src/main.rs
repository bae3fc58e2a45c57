//! The `motcua` command line: parse, dispatch to `cli::<command>::run`, map the error to its
//! exit code. See `README.md` for the commands, flags, environment and exit codes.

use std::process::ExitCode;

use clap::Parser;
use motcua::cli::{init_logs, Cli};

/// mimalloc: parsing JSON and polars allocate and free a great deal, from several threads;
/// glibc's malloc spent a quarter of a replay's time and held freed memory per thread. Built
/// without transparent huge pages (`no_thp`): with them, a KPI step's resident memory was half
/// as large again as its heap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Memory freed goes back to the system at once, but while records are read
    // (`motcua::memory`): a KPI step over ten million cases peaks at 245 MiB, not 414.
    motcua::memory::return_freed();
    let cli = Cli::parse();
    init_logs(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("motcua: cannot start its runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(cli.dispatch()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("motcua: {e}");
            ExitCode::from(e.exit_code())
        }
    };
    // The command is done (every write awaited): what the process holds goes with it at
    // once, rather than its threads handing their memory back page by page as they end. The
    // runtime is still shut down in full: its tasks' drops remove their scratch folders.
    motcua::memory::keep_freed_until_exit();
    drop(runtime);
    code
}

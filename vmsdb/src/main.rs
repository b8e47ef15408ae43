//! The `vmsdb` binary: parses the command line and runs the server until a signal stops it.

use clap::Parser;
use std::process::ExitCode;
use vmsdb::{Cli, Command, Settings};

#[global_allocator]
static GLOBAL: vmsdb::alloc::Allocator = vmsdb::alloc::Allocator;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let Cli { command } = Cli::parse();
    match command {
        Command::Serve(args) => {
            let settings = match Settings::resolve(args, std::env::var("VMSDB_TOKEN").ok()) {
                Ok(settings) => settings,
                Err(e) => {
                    eprintln!("vmsdb serve: {e}");
                    return ExitCode::from(2);
                }
            };
            match vmsdb::run(settings).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vmsdb serve: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Node(args) => {
            let run = async { vmsdb::node::run_node(args.resolve()?).await };
            match run.await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vmsdb node: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Why(args) => vmsdb::history_cmd::print(vmsdb::history_cmd::why(args).await),
        Command::Replay(args) => vmsdb::history_cmd::print(vmsdb::history_cmd::replay(args).await),
        Command::Audit(args) => vmsdb::history_cmd::print(vmsdb::governance_cmd::audit(args).await),
        Command::Forget(args) => {
            vmsdb::history_cmd::print(vmsdb::governance_cmd::forget(args).await)
        }
    }
}

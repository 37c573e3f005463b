//! `ordo`: the command line. It parses arguments and dispatches to the libraries; the logic
//! lives in `ordo-coordinator` (node side) and `ordo-participant` (client side).

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let arguments = cli::Arguments::parse();
    cli::init_logging();
    match cli::run(arguments) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

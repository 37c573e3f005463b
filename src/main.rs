//! `ordo`: the command line. It parses arguments and dispatches to the libraries; the logic
//! lives in `ordo-coordinator` (node side) and `ordo-participant` (client side).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: under load the node's workers spent a tenth of their time
/// in glibc's allocator (`_int_malloc`, `unlink_chunk`) on the short-lived buffers of frames,
/// batches and QUIC packets.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let arguments = cli::Arguments::parse();
    cli::init_logging(arguments.log_format);
    let format = arguments.log_format;
    match cli::run(arguments) {
        Ok(code) => code,
        Err(error) => {
            let code = cli::error_code(error.as_ref());
            match format {
                cli::LogFormat::Json => eprintln!(
                    "{}",
                    serde_json::json!({"level": "ERROR", "code": code, "error": error.to_string()})
                ),
                cli::LogFormat::Text => eprintln!("error[{code}]: {error}"),
            }
            ExitCode::FAILURE
        }
    }
}

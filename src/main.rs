//! The `ringlog` binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    ringlog::cli::init_tracing();
    let cli = match ringlog::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { ringlog::cli::EXIT_USAGE } else { ringlog::cli::EXIT_OK };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    ringlog::cli::run(cli)
}

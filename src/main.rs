//! The `ringlog` binary.

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    // `serve --help` ends with every setting and its default.
    let command = ringlog::cli::Cli::command()
        .mut_subcommand("serve", |serve| serve.after_long_help(ringlog::cli::serve_settings_help()));
    let parsed = command.try_get_matches().and_then(|matches| ringlog::cli::Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { ringlog::cli::EXIT_USAGE } else { ringlog::cli::EXIT_OK };
            let _ = error.print();
            return ExitCode::from(code);
        }
    };
    ringlog::cli::init_tracing(cli.log_format);
    ringlog::cli::run(cli)
}

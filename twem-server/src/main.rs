//! `twemproxy`: a drop-in for nutcracker. All logic lives in the library.
use clap::Parser;

fn main() {
    let cli = match twem_server::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap writes help to stdout and errors to stderr; only the exit
            // code differs from nutcracker's (1 for a usage error).
            let _ = e.print();
            std::process::exit(twem_server::cli::exit_code_of_usage_error(&e));
        }
    };
    std::process::exit(twem_server::run(cli));
}

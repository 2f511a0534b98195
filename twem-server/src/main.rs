//! `twemproxy`: a drop-in for nutcracker. All logic lives in the library.
use clap::Parser;

fn main() {
    let cli = match twem_server::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // nutcracker prints its help, like its errors, to stderr (and
            // exits 1 on a usage error, 0 for -h).
            eprint!("{}", e.render());
            std::process::exit(twem_server::cli::exit_code_of_usage_error(&e));
        }
    };
    std::process::exit(twem_server::run(cli));
}

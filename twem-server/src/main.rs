//! `twemproxy`: a drop-in for nutcracker. All logic lives in the library.
use clap::Parser;

fn main() {
    std::process::exit(twem_server::run(twem_server::cli::Cli::parse()));
}

//! Writes the twemproxy(8) man page, generated from the clap definitions of
//! [`twem_server::cli::Cli`] so it says exactly what `--help` says. The
//! Debian package ships it (`scripts/deb.sh` runs this first).
//!
//! ```sh
//! cargo run -p twem-server --example man -- target/man/twemproxy.8
//! ```

use std::process::ExitCode;

use clap::CommandFactory;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: man OUTPUT.8");
        return ExitCode::from(2);
    };
    let cmd = twem_server::cli::Cli::command().version(env!("CARGO_PKG_VERSION"));
    let mut page = Vec::new();
    // Section 8: a daemon an administrator runs.
    if let Err(e) = clap_mangen::Man::new(cmd).section("8").render(&mut page) {
        eprintln!("man: {e}");
        return ExitCode::FAILURE;
    }
    if let Err(e) = std::fs::write(&out, page) {
        eprintln!("man: {}: {e}", std::path::Path::new(&out).display());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // ring is the one rustls provider; installing it first avoids the "no process-level
    // CryptoProvider" panic should another crate ever enable aws-lc (CRATES.md §1).
    let _ = rustls::crypto::ring::default_provider().install_default();
    match teamgate::cli::run(teamgate::cli::Cli::parse()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("teamgate: {e:#}");
            ExitCode::from(2)
        }
    }
}

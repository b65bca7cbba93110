//! The `leecher` binary: everything it does lives in the `shoal-leecher` crate, so it can be tested in-process.
fn main() -> std::process::ExitCode {
    shoal_leecher::main()
}

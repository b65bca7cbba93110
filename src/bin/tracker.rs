//! The `tracker` binary: everything it does lives in the `shoal-tracker` crate, so it can be tested in-process.
fn main() -> std::process::ExitCode {
    shoal_tracker::main()
}

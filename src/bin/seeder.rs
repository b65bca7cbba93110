//! The `seeder` binary: everything it does lives in the `shoal-seeder` crate, so it can be tested in-process.
fn main() -> std::process::ExitCode {
    shoal_seeder::main()
}

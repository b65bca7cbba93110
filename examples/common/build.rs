//! Shared by the demo and the bench: building `tracker`, `seeder` and `leecher` with the cargo that
//! runs the example, in the example's own profile, next to the example itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, ensure, Context, Result};

/// How to build the three programs for the example that is running.
pub struct Plan {
    /// The profile's folder (`target/release`, say): where the programs land.
    pub dir: PathBuf,
    /// The profile's name: `release`, `debug` or a custom one.
    pub profile: String,
    /// `cargo build --bins` with that flag, to run in the workspace.
    pub command: Command,
}

/// Works out the plan from where the running example's executable is (`target/<profile>/examples`).
pub fn plan() -> Result<Plan> {
    let exe = std::env::current_exe().context("cannot find the example's own executable")?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected location of the example: {}", exe.display()))?
        .to_path_buf();
    let profile = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(["build", "--bins"]);
    command.args(profile_flag(&profile).split_whitespace());
    // `cargo run` tells the example about its own package (CARGO_MANIFEST_DIR, CARGO_PKG_NAME
    // and the like). Build scripts that watch those (ring's does) would see them change between
    // the example's build and this one, and rebuild every time, with all that depends on them.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(set_by_cargo_run) {
            command.env_remove(key);
        }
    }
    if let Some(workspace) = option_env!("CARGO_MANIFEST_DIR") {
        command.current_dir(workspace);
    }
    Ok(Plan {
        dir,
        profile,
        command,
    })
}

/// Whether `cargo run` sets `key` for the program it runs (not for cargo itself).
fn set_by_cargo_run(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "OUT_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

/// What selects `profile` on cargo's command line: "", " --release" or " --profile NAME".
pub fn profile_flag(profile: &str) -> String {
    match profile {
        "debug" => String::new(),
        "release" => " --release".to_string(),
        other => format!(" --profile {other}"),
    }
}

/// Checks that the build left the three programs in `dir`.
pub fn check(dir: &Path) -> Result<()> {
    for bin in ["tracker", "seeder", "leecher"] {
        let path = dir.join(bin);
        ensure!(
            path.is_file(),
            "{} is missing after the build (built for another target?)",
            path.display()
        );
    }
    Ok(())
}

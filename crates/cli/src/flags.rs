//! The flags more than one program takes, as groups each flattens into its own arguments
//! (`#[command(flatten)]`): one name, help text and meaning everywhere.
//!
//! Only what is really the same is here. `--port`, `--advertise` and `--max-upload-rate` are
//! spelled alike in the seeder and the leecher but their help says what each does with them.

/// Which tracker: `--tracker` and `--no-discovery` (seeder and leecher). The environment
/// (`P2P_TRACKER`, `P2P_NO_DISCOVERY`) is read by the engine, not by clap, so that a usage line
/// never shows a value that came from it.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TrackerFlags {
    /// Tracker address, port 6969 if none is given [env: P2P_TRACKER] (default: 127.0.0.1:6969,
    /// else one found on the LAN).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub tracker: Option<String>,
    /// Do not look for a tracker on the local network when none is configured [env: P2P_NO_DISCOVERY=1].
    #[arg(long)]
    pub no_discovery: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Program {
        #[command(flatten)]
        find: TrackerFlags,
    }

    #[test]
    fn the_group_keeps_its_flag_names() {
        let p = Program::try_parse_from(["p", "--tracker", "h:7000", "--no-discovery"]).unwrap();
        assert_eq!(p.find.tracker.as_deref(), Some("h:7000"));
        assert!(p.find.no_discovery);
        let p = Program::try_parse_from(["p"]).unwrap();
        assert_eq!((p.find.tracker, p.find.no_discovery), (None, false));
    }
}

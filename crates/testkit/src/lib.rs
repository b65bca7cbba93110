//! Test support for shoal's end-to-end tests (tests/*.rs), compiled once for all of them: the
//! child-process harness ([`Proc`], [`Run`]) on [`output::Output`] (which the demo and the
//! benchmark use too), a tracker of the tests' own ([`Swarm`]), the one parser of the leecher's
//! summary line ([`Summary`]), hostile peers, trackers and floods, the tracker page's helpers,
//! and (with feature `strategies`) the proptest strategies of the wire types. Nothing here is part of the
//! shipped programs.
//!
//! A test file starts with `use shoal_testkit::*;` and `const BINS: Bins = bins!();`, and passes
//! `BINS` to [`Swarm::new`] or one of its paths to [`Proc::spawn`] and [`run`]: only the test crate
//! sees the programs' `CARGO_BIN_EXE_*`.

pub mod chromium;
pub mod flood;
pub mod hostile;
pub mod hostile_manifest;
pub mod hostile_tracker;
pub mod output;
mod proc;
#[cfg(feature = "strategies")]
pub mod strategies;
mod summary;
mod swarm;
pub mod tracker;

pub use proc::{
    chunks_per_peer, finish, port_in, run, verified_chunks, wait_all_stderr, Bins, Proc, Run,
    PATIENCE,
};
pub use summary::Summary;
pub use swarm::{dir_names, id_of, part_of, pattern, silent_udp, Listed, Swarm};

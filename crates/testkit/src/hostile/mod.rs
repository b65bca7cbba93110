//! Hostile peers, and a gate in front of real seeders, for the fault tests. Test support only:
//! nothing here is a switch in the shipped binaries.
//!
//! - [`HostilePeer`]: a TCP server on 127.0.0.1:0 that speaks the peer protocol of
//!   [`shoal_proto::peer`] and registers itself with the real tracker (so a real leecher finds
//!   it). It serves a correct manifest (it knows the real file), then misbehaves as its [`Mode`]
//!   says: lies, stalls, trickles, sends garbage, dies.
//! - [`Proxy`]: sits in front of a real seeder, which advertises the proxy's port with
//!   `--advertise`. It passes everything through but holds chunk frames back until its [`Gate`]
//!   lets them go, so a test decides who delivers what, and when, without racing a fast seeder.
//!
//! Both count what they do in [`Events`]; tests wait on those counts (real signals), never on
//! sleeps.
//!
//! One tool per file: the peer ([`peer`], its connections in `serve`, its registration in
//! `register`), the proxy ([`proxy`]), their counts and gate ([`events`]), and the fault tests'
//! small helpers ([`faults`]).

pub mod events;
pub mod faults;
pub mod peer;
pub mod proxy;
mod register;
mod serve;

pub use events::{Counts, Events, Gate};
pub use faults::*;
pub use peer::{Garbage, HostilePeer, Mode, Served};
pub use proxy::{gated_seeder, seeder_behind_proxy, Proxy};
pub use register::{announce, tracker_peers, wait_tracker_peers};

// Shared between the files of this module.
use peer::{runtime, Background, PeerState};
use register::{keep_registered, register};
use serve::{accept_loop, read_frame};

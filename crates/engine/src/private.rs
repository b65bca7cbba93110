//! This process's private swarm, if it is in one: the keys from `--secret-file` or `P2P_SECRET`,
//! installed once at start by the program, read by the tracker client, discovery and the peer
//! connections. Like the environment it comes from, it is the same for the whole process; with
//! none installed everything is the open swarm's plain protocol.

use std::path::Path;
use std::sync::OnceLock;

use shoal_secret::datagram::{self, Direction, OpenError};
use shoal_secret::{Keys, SecretError};

static KEYS: OnceLock<Keys> = OnceLock::new();

/// Loads the secret (`file`, else `P2P_SECRET`) and installs its keys; prints the warning for a
/// passphrase. Returns whether this process is in a private swarm.
pub fn set_up(file: Option<&Path>) -> Result<bool, SecretError> {
    set_up_warning_with(file, |warning| tracing::warn!("{warning}"))
}

/// [`set_up`], with the warnings (a passphrase, a secret file others can read) handed to `warn`
/// (the prompt prints them before its console takes over the log).
pub fn set_up_warning_with(
    file: Option<&Path>,
    mut warn: impl FnMut(&str),
) -> Result<bool, SecretError> {
    let Some(loaded) = shoal_secret::load(file)? else {
        return Ok(false);
    };
    for warning in loaded.warnings() {
        warn(&warning);
    }
    install(Keys::derive(&loaded.secret));
    Ok(true)
}

/// Installs `keys` for the rest of the process; a second call changes nothing.
pub fn install(keys: Keys) {
    let _ = KEYS.set(keys);
}

/// The keys, in a private swarm.
pub fn keys() -> Option<&'static Keys> {
    KEYS.get()
}

fn now_ms() -> u64 {
    datagram::unix_ms(std::time::SystemTime::now())
}

/// A tracker request as it goes on the wire: sealed in a private swarm, else as it is.
pub(crate) fn outgoing(request: Vec<u8>) -> Vec<u8> {
    match keys() {
        Some(k) => match k.datagrams.seal(Direction::Request, &request, now_ms()) {
            Ok(sealed) => sealed,
            // No randomness for a nonce: send nothing a tracker of the swarm would take.
            Err(e) => {
                tracing::warn!("{e}");
                Vec::new()
            }
        },
        None => request,
    }
}

/// A tracker reply as received, opened in a private swarm (`Err` for anything that does not
/// open, is stale or replayed: drop it), else as it is.
pub(crate) fn incoming(reply: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, OpenError> {
    match keys() {
        Some(k) => Ok(k.datagrams.open(Direction::Reply, reply, now_ms())?.into()),
        None => Ok(reply.into()),
    }
}

/// Room for one tracker datagram as received: sealing adds its overhead.
pub(crate) const DATAGRAM_ROOM: usize = shoal_proto::tracker::MAX_DATAGRAM + datagram::OVERHEAD + 1;

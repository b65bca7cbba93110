//! One subkey per use of the secret (HKDF-SHA256, RFC 5869, with a distinct label each), so that
//! no key serves two constructions.

use hkdf::Hkdf;
use sha2::Sha256;

use crate::datagram::Sealer;
use crate::Secret;

const TRACKER_DATAGRAMS: &[u8] = b"shoal v1 tracker datagrams";
const PEER_PSK: &[u8] = b"shoal v1 peer noise psk";
const PAGE_TOKEN: &[u8] = b"shoal v1 status page token";

/// Everything a program of a private swarm needs from the secret.
pub struct Keys {
    /// Seals and opens tracker datagrams (discovery probes are tracker requests too).
    pub datagrams: Sealer,
    /// The pre-shared key of every Noise peer connection.
    pub peer_psk: [u8; 32],
    /// What the status page, its API and /metrics ask for (`?key=`), as 32 hex digits.
    pub page_token: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    pub fn derive(secret: &Secret) -> Keys {
        let hk = Hkdf::<Sha256>::new(None, secret.bytes());
        let expand = |label: &[u8]| {
            let mut k = [0u8; 32];
            hk.expand(label, &mut k)
                .expect("32 bytes is a valid HKDF-SHA256 length");
            k
        };
        let token = expand(PAGE_TOKEN);
        Keys {
            datagrams: Sealer::new(&expand(TRACKER_DATAGRAMS)),
            peer_psk: expand(PEER_PSK),
            page_token: token[..16].iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subkeys_differ_from_each_other_and_between_secrets() {
        let a = Keys::derive(&Secret::from_bytes([1; 32]));
        let b = Keys::derive(&Secret::from_bytes([2; 32]));
        assert_ne!(a.peer_psk, b.peer_psk);
        assert_ne!(a.page_token, b.page_token);
        assert_eq!(a.page_token.len(), 32);
        let again = Keys::derive(&Secret::from_bytes([1; 32]));
        assert_eq!(a.peer_psk, again.peer_psk);
        assert_eq!(a.page_token, again.page_token);
    }
}

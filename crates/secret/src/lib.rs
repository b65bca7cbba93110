//! A private shoal swarm: one secret shared by every machine, and what is built from it.
//!
//! - [`Secret`]: 32 random bytes, written as text people can paste, or stretched from a typed
//!   passphrase with argon2id; [`load`] finds it (`--secret-file`, else `P2P_SECRET`).
//! - [`Keys`]: one subkey per use, by HKDF-SHA256 with distinct labels.
//! - [`datagram`]: tracker datagrams sealed with XChaCha20-Poly1305, with a replay window.
//! - [`noise`]: peer connections over Noise_NNpsk0 (the `snow` crate) as a byte stream.

pub mod datagram;
mod keys;
pub mod noise;
mod secret;

pub use keys::Keys;
pub use secret::{load, Loaded, Origin, Secret, SecretError, PREFIX};

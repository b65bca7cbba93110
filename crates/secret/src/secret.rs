//! The swarm's secret: generated, written as text, parsed back, or stretched from a passphrase;
//! and where a program finds it.

use std::path::Path;

/// How a generated secret starts when written out, so that a person (and this parser) can tell
/// it from a passphrase.
pub const PREFIX: &str = "shoal-secret-";

/// argon2id parameters for a typed passphrase: 64 MiB of memory, 3 passes, 1 lane (RFC 9106's
/// second recommended option, with one lane since every program derives it once at start).
const ARGON2_MEMORY_KIB: u32 = 64 * 1024;
const ARGON2_PASSES: u32 = 3;
const ARGON2_LANES: u32 = 1;
/// Fixed, since every machine must derive the same key from the same passphrase. It only makes
/// a precomputed table for shoal's swarms useless elsewhere; it does not slow down a guess at
/// one swarm's passphrase (the memory-hard cost does that).
const ARGON2_SALT: &[u8] = b"shoal private swarm, passphrase v1";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret starts with {PREFIX} but is not 64 hexadecimal digits after it; paste it whole, as `tracker --new-secret` printed it")]
    Malformed,
    #[error("the secret is empty; make one with `tracker --new-secret`")]
    Empty,
    #[error("cannot read the secret file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("the system's random number generator failed: {0}")]
    Random(getrandom::Error),
    #[error("stretching the passphrase failed: {0}")]
    Stretch(argon2::Error),
}

/// 32 bytes every machine of the swarm shares.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Where a secret came from: a passphrase is weaker, and the programs say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Generated,
    Passphrase,
}

impl Secret {
    /// 32 fresh bytes from the operating system.
    pub fn generate() -> Result<Secret, SecretError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(SecretError::Random)?;
        Ok(Secret(bytes))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Secret {
        Secret(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The text form: [`PREFIX`] and 64 lowercase hexadecimal digits.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(PREFIX.len() + 64);
        s.push_str(PREFIX);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Reads what a person gave: the text form (surrounding white space ignored), or else a
    /// passphrase, stretched with argon2id. Text that starts with [`PREFIX`] but is damaged is an
    /// error, never taken for a passphrase: a mistyped secret must not make a different swarm.
    pub fn parse(text: &str) -> Result<(Secret, Origin), SecretError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(SecretError::Empty);
        }
        if let Some(hex) = text.strip_prefix(PREFIX) {
            let hex = hex.as_bytes();
            if hex.len() != 64 {
                return Err(SecretError::Malformed);
            }
            let mut bytes = [0u8; 32];
            for (b, pair) in bytes.iter_mut().zip(hex.chunks_exact(2)) {
                let pair = std::str::from_utf8(pair).map_err(|_| SecretError::Malformed)?;
                *b = u8::from_str_radix(pair, 16).map_err(|_| SecretError::Malformed)?;
            }
            return Ok((Secret(bytes), Origin::Generated));
        }
        Ok((Secret::stretch(text)?, Origin::Passphrase))
    }

    /// argon2id over the passphrase with the fixed parameters above.
    fn stretch(passphrase: &str) -> Result<Secret, SecretError> {
        let params = argon2::Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, ARGON2_LANES, Some(32))
            .map_err(SecretError::Stretch)?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(passphrase.as_bytes(), ARGON2_SALT, &mut out)
            .map_err(SecretError::Stretch)?;
        Ok(Secret(out))
    }
}

/// A secret a program found, and where it came from.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub secret: Secret,
    pub origin: Origin,
    /// The secret file and its mode, when users other than its owner may read it.
    pub loose_file: Option<(String, u32)>,
}

impl Loaded {
    /// The warnings to print once at start: for a passphrase, and for a secret file others can
    /// read.
    pub fn warnings(&self) -> Vec<String> {
        let mut all = Vec::new();
        if self.origin == Origin::Passphrase {
            all.push(
                "the secret is a passphrase: anyone who captures this swarm's traffic can try \
                 guesses at it offline; a generated secret (`tracker --new-secret`) is stronger"
                    .to_string(),
            );
        }
        if let Some((path, mode)) = &self.loose_file {
            all.push(format!(
                "the secret file {path} can be read by other users of this machine (mode \
                 {mode:03o}): `chmod 600 {path}`"
            ));
        }
        all
    }
}

/// The secret from `--secret-file PATH` if given, else from `P2P_SECRET` if set and not empty;
/// `None` for an open swarm.
pub fn load(file: Option<&Path>) -> Result<Option<Loaded>, SecretError> {
    let (text, loose_file) = match file {
        Some(path) => {
            let read = |source| SecretError::File {
                path: path.display().to_string(),
                source,
            };
            let text = std::fs::read_to_string(path).map_err(read)?;
            (text, loose(path).map_err(read)?)
        }
        None => match std::env::var("P2P_SECRET") {
            Ok(v) if !v.is_empty() => (v, None),
            _ => return Ok(None),
        },
    };
    let (secret, origin) = Secret::parse(&text)?;
    Ok(Some(Loaded {
        secret,
        origin,
        loose_file,
    }))
}

/// `path` and its permission bits, if its group or others may read it.
fn loose(path: &Path) -> std::io::Result<Option<(String, u32)>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    Ok((mode & 0o044 != 0).then(|| (path.display().to_string(), mode)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_damage_is_refused() {
        let s = Secret::generate().unwrap();
        let text = s.to_text();
        assert!(text.starts_with(PREFIX));
        let (back, origin) = Secret::parse(&format!("  {text}\n")).unwrap();
        assert_eq!(back, s);
        assert_eq!(origin, Origin::Generated);
        assert!(matches!(
            Secret::parse(&text[..text.len() - 1]),
            Err(SecretError::Malformed)
        ));
        let mut bad = text.clone();
        bad.replace_range(PREFIX.len()..PREFIX.len() + 1, "g");
        assert!(matches!(Secret::parse(&bad), Err(SecretError::Malformed)));
        assert!(matches!(Secret::parse(" \n"), Err(SecretError::Empty)));
        assert_ne!(Secret::generate().unwrap(), s);
    }

    #[test]
    fn a_passphrase_is_stretched_the_same_everywhere() {
        let (a, origin) = Secret::parse("correct horse battery staple").unwrap();
        assert_eq!(origin, Origin::Passphrase);
        let (b, _) = Secret::parse("correct horse battery staple\n").unwrap();
        let (c, _) = Secret::parse("correct horse battery stapler").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn a_secret_file_is_read_and_a_missing_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarm.secret");
        let s = Secret::generate().unwrap();
        std::fs::write(&path, s.to_text() + "\n").unwrap();
        assert_eq!(load(Some(&path)).unwrap().unwrap().secret, s);
        // Written with the usual umask's 0644, then made private.
        use std::os::unix::fs::PermissionsExt;
        let mode = |m| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m));
        mode(0o644).unwrap();
        let warned = load(Some(&path)).unwrap().unwrap().warnings();
        assert!(
            warned.len() == 1 && warned[0].contains("chmod 600") && warned[0].contains("644"),
            "{warned:?}"
        );
        mode(0o600).unwrap();
        assert!(load(Some(&path)).unwrap().unwrap().warnings().is_empty());
        let missing = dir.path().join("nope");
        let e = load(Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }
}

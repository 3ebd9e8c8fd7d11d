//! Mosquitto's password hashes, verified natively, so that a
//! `mosquitto_passwd` file works as `[auth] password_file` unchanged
//! (docs/mosquitto.md).
//!
//! Owns: parsing and checking `$7$ITERATIONS$SALT$HASH` (Mosquitto 2:
//! PBKDF2-HMAC-SHA512) and `$6$SALT$HASH` (Mosquitto 1.x: one SHA-512 of
//! the password then the salt), salt and hash in standard base64. Pure.
//! Must never: write such hashes (new ones are argon2id), or compare in
//! time that depends on where the hashes differ.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha512};

/// PBKDF2 rounds accepted at most: a file with more is refused at load
/// (each login would cost that many HMACs).
const MAX_ITERATIONS: u32 = 10_000_000;

/// A parsed Mosquitto hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MosquittoHash {
    Pbkdf2Sha512 { iterations: u32, salt: Vec<u8>, hash: Vec<u8> },
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
}

/// Whether `stored` is written in one of Mosquitto's forms (then [`parse`]
/// says whether it is a good one).
pub fn looks_like(stored: &str) -> bool {
    stored.starts_with("$7$") || stored.starts_with("$6$")
}

pub fn parse(stored: &str) -> Result<MosquittoHash, String> {
    let b64 = |what: &str, s: &str| STANDARD.decode(s).map_err(|e| format!("Mosquitto hash: bad base64 {what}: {e}"));
    let parts: Vec<&str> = stored.split('$').collect();
    match parts.as_slice() {
        ["", "7", iterations, salt, hash] => {
            let iterations: u32 = iterations
                .parse()
                .map_err(|_| format!("Mosquitto $7$ hash: {iterations:?} is not an iteration count"))?;
            if iterations == 0 || iterations > MAX_ITERATIONS {
                return Err(format!("Mosquitto $7$ hash: {iterations} iterations (1 ..= {MAX_ITERATIONS})"));
            }
            let (salt, hash) = (b64("salt", salt)?, b64("hash", hash)?);
            if hash.len() != 64 {
                return Err(format!("Mosquitto $7$ hash: {} bytes of hash, not 64", hash.len()));
            }
            Ok(MosquittoHash::Pbkdf2Sha512 { iterations, salt, hash })
        }
        ["", "6", salt, hash] => {
            let (salt, hash) = (b64("salt", salt)?, b64("hash", hash)?);
            if hash.len() != 64 {
                return Err(format!("Mosquitto $6$ hash: {} bytes of hash, not 64", hash.len()));
            }
            Ok(MosquittoHash::Sha512 { salt, hash })
        }
        _ => Err("not a Mosquitto hash ($7$ITERATIONS$SALT$HASH or $6$SALT$HASH)".into()),
    }
}

impl MosquittoHash {
    /// Whether `password` is the one hashed.
    pub fn verify(&self, password: &[u8]) -> bool {
        let mut computed = [0u8; 64];
        let expected = match self {
            MosquittoHash::Pbkdf2Sha512 { iterations, salt, hash } => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut computed);
                hash
            }
            MosquittoHash::Sha512 { salt, hash } => {
                let mut digest = Sha512::new();
                digest.update(password);
                digest.update(salt);
                computed.copy_from_slice(&digest.finalize());
                hash
            }
        };
        super::constant_time_eq(&computed, expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `mosquitto_passwd -b FILE alice wonderland` (Mosquitto 2.0.11).
    const ALICE: &str =
        "$7$101$TcD5uqEGTnNEMn6S$5jbyBh07jSTs2OgFPeyi1aqRQtXOimtz65bqSXvO4qd0BpCoX5mUjMZzftXja7CY7o9Mz4/jg9DbTudvnkVaEw==";

    #[test]
    fn a_mosquitto_2_hash_verifies_its_password_only() {
        let hash = parse(ALICE).unwrap();
        assert!(hash.verify(b"wonderland"));
        assert!(!hash.verify(b"Wonderland"));
        assert!(!hash.verify(b""));
    }

    #[test]
    fn a_mosquitto_1_hash_is_sha512_of_password_then_salt() {
        let salt = b"0123456789ab";
        let mut digest = Sha512::new();
        digest.update(b"builder");
        digest.update(salt);
        let stored = format!("$6${}${}", STANDARD.encode(salt), STANDARD.encode(digest.finalize()));
        let hash = parse(&stored).unwrap();
        assert!(hash.verify(b"builder"));
        assert!(!hash.verify(b"builder2"));
    }

    #[test]
    fn malformed_hashes_are_named() {
        for bad in ["$7$x$AAAA$AAAA", "$7$0$AAAA$AAAA", "$7$101$!!$AAAA", "$7$101$AAAA$AAAA", "$6$AAAA", "$5$a$b"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(looks_like(ALICE) && !looks_like("$argon2id$v=19$m=19456,t=2,p=1$abc$def"));
    }
}

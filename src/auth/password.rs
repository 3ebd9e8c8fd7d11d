//! The password file provider: `username:HASH` lines, HASH an argon2id PHC
//! string (`$argon2id$v=19$m=19456,t=2,p=1$...`), managed by
//! `starling passwd FILE USER` and read again on SIGHUP. Mosquitto's hashes
//! (`$7$`, `$6$`, from `mosquitto_passwd`) are verified too
//! ([`super::mosquitto_hash`]); `starling passwd` writes argon2id.
//!
//! Owns: parsing and editing the file, verification, and a bounded cache of
//! successful verifications. Argon2 is slow on purpose (tens of
//! milliseconds): verifications run on threads of their own (one per slot,
//! so argon2's memory is bounded by the slots), concurrent
//! attempts with the same user and password share one verification, and a
//! success is remembered (keyed by a SHA-256 of user, password and stored
//! hash, so a changed password never matches an old entry) so that a
//! reconnect storm costs hash lookups, not argon2 runs. At most
//! `[auth] max_concurrent_verifications` run at once (a semaphore: excess
//! attempts wait up to [`VERIFY_WAIT`], then are refused as server busy), and
//! an unknown user costs a verification of a dummy hash like a known one, so
//! the answer's timing does not tell which users exist.
//! Must never: log or keep a password in clear; cache a failure.

use super::{AuthRefusal, AuthRequest, Authenticator, Decision, DecisionFuture, Identity};
use crate::model::reason;
use anyhow::Context;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Remembered successful verifications, at most (then the cache starts over).
const CACHE_MAX: usize = 100_000;
/// How long an attempt waits for a verification slot before it is refused
/// as server busy (0x89).
pub const VERIFY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a check of a password found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// The file has no such user (a dummy hash was verified all the same).
    UnknownUser,
    Good,
    Bad,
    /// No verification slot within [`VERIFY_WAIT`].
    Busy,
}

/// The threads that run argon2, exactly one per verification slot. Not the
/// blocking pool: an argon2 run takes 19 MiB, and an allocator keeps what a
/// thread freed for that thread (glibc, one arena per thread); on the
/// blocking pool's many threads a flood of guesses left hundreds of MiB
/// resident although only two ran at once (tests/login_flood.rs). Here the
/// memory is bounded by the slots, whatever the allocator does. The threads
/// end when the [`PasswordFile`] is dropped (a reload builds new ones).
struct Verifiers {
    jobs: flume::Sender<VerifyJob>,
}

/// One verification: the stored hash (`None`: the dummy hash, for an
/// unknown user), the password, where the answer goes.
type VerifyJob = (Option<String>, Vec<u8>, tokio::sync::oneshot::Sender<bool>);

impl Verifiers {
    fn start(threads: usize) -> std::io::Result<Verifiers> {
        let (jobs, queue) = flume::unbounded::<VerifyJob>();
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("argon2-{n}")).spawn(move || {
                // This thread's argon2 memory, reused by every verification
                // it runs (grown to the largest `m` seen).
                let mut memory = Vec::new();
                while let Ok((stored, password, answer)) = queue.recv() {
                    let ok = match &stored {
                        Some(stored) => check_with(&mut memory, stored, &password),
                        None => check_with(&mut memory, dummy_hash(), &password),
                    };
                    let _ = answer.send(ok);
                }
            })?;
        }
        Ok(Verifiers { jobs })
    }

    /// Runs one verification on a verifier thread. The caller holds a slot,
    /// so at most one job per thread is ever queued.
    async fn verify(&self, stored: Option<String>, password: Vec<u8>) -> bool {
        let (answer, answered) = tokio::sync::oneshot::channel();
        self.jobs.send((stored, password, answer)).is_ok() && answered.await.unwrap_or(false)
    }
}

/// A Mosquitto hash of the same kind and cost as `like`, of a random
/// password: what an unknown user costs in a file of Mosquitto hashes.
fn dummy_like(like: &str) -> String {
    use base64::Engine;
    let b64 = |len: usize| {
        let bytes: Vec<u8> = (0..len).map(|_| rand::random::<u8>()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    match super::mosquitto_hash::parse(like) {
        Ok(super::mosquitto_hash::MosquittoHash::Pbkdf2Sha512 { iterations, .. }) => {
            format!("$7${iterations}${}${}", b64(12), b64(64))
        }
        _ => format!("$6${}${}", b64(12), b64(64)),
    }
}

/// An argon2id hash of a random password, verified for unknown users.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        hash_password(format!("{:032x}", rand::random::<u128>()).as_bytes()).expect("hashing a random password")
    })
}

pub struct PasswordFile {
    path: PathBuf,
    users: HashMap<String, String>,
    /// Keyed by SHA-256(user, password, stored hash); a cell is shared by
    /// concurrent attempts and holds true once verified.
    /// Lock map: docs/architecture.md, "Locks" (order, and the I/O under it).
    verified: Mutex<HashMap<[u8; 32], Arc<OnceCell<bool>>>>,
    /// Verification slots (argon2 runs at once).
    slots: Arc<tokio::sync::Semaphore>,
    verifiers: Verifiers,
    /// What an unknown user's password is checked against: a hash of the
    /// file's own kind (`None`: argon2id, [`dummy_hash`]), so that a file
    /// of fast Mosquitto hashes does not answer unknown users measurably
    /// slower or faster than known ones.
    dummy: Option<String>,
}

impl PasswordFile {
    /// `max_concurrent`: verification slots (0: twice the cores).
    pub fn load(path: &Path, max_concurrent: usize) -> anyhow::Result<PasswordFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("auth.password_file: cannot read {}", path.display()))?;
        let users = parse(&text).map_err(|e| anyhow::anyhow!("auth.password_file {}: {e}", path.display()))?;
        tracing::info!(file = %path.display(), users = users.len(), "password file loaded");
        let slots = match max_concurrent {
            0 => 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(PasswordFile {
            path: path.to_path_buf(),
            verified: Mutex::new(HashMap::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
            verifiers: Verifiers::start(slots).context("auth: starting the password verifier threads")?,
            dummy: users.values().find(|h| super::mosquitto_hash::looks_like(h)).map(|h| dummy_like(h)),
            users,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `password` is `user`'s.
    pub async fn verify(&self, user: &str, password: &[u8]) -> Verified {
        let Some(stored) = self.users.get(user).cloned() else {
            // As slow as a known user's wrong password: timing must not
            // tell which users exist.
            let Some(_slot) = self.slot().await else { return Verified::Busy };
            self.verifiers.verify(self.dummy.clone(), password.to_vec()).await;
            return Verified::UnknownUser;
        };
        let key: [u8; 32] = {
            let mut h = Sha256::new();
            for part in [user.as_bytes(), password, stored.as_bytes()] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part);
            }
            h.finalize().into()
        };
        let cell = {
            let mut verified = self.verified.lock();
            if verified.len() >= CACHE_MAX {
                verified.clear();
            }
            verified.entry(key).or_default().clone()
        };
        if cell.get() == Some(&true) {
            return Verified::Good; // remembered: no argon2 run, no slot
        }
        let Some(_slot) = self.slot().await else { return Verified::Busy };
        let ok = *cell.get_or_init(|| self.verifiers.verify(Some(stored), password.to_vec())).await;
        if !ok {
            // Failures are not remembered: each wrong guess costs a full verification.
            self.verified.lock().remove(&key);
        }
        if ok {
            Verified::Good
        } else {
            Verified::Bad
        }
    }

    /// A verification slot, waiting at most [`VERIFY_WAIT`].
    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::time::timeout(VERIFY_WAIT, self.slots.clone().acquire_owned()).await.ok()?.ok()
    }
}

impl Authenticator for PasswordFile {
    fn name(&self) -> &'static str {
        "password_file"
    }

    fn authenticate<'a>(&'a self, request: &'a AuthRequest<'a>) -> DecisionFuture<'a> {
        Box::pin(async move {
            let Some(user) = request.credentials.username.as_deref().filter(|u| !u.is_empty()) else {
                return Decision::Pass;
            };
            let password = request.credentials.password.as_deref().unwrap_or(&[]);
            match self.verify(user, password).await {
                Verified::UnknownUser => Decision::Pass,
                Verified::Good => Decision::Allow(Identity { user: Some(Arc::from(user)), ..Default::default() }),
                Verified::Bad => Decision::Deny(AuthRefusal {
                    code: reason::BAD_USER_NAME_OR_PASSWORD,
                    why: "unknown user or bad password".into(),
                }),
                Verified::Busy => Decision::Deny(AuthRefusal {
                    code: reason::SERVER_BUSY,
                    why: "too many logins being verified: try again shortly".into(),
                }),
            }
        })
    }
}

/// The library's own verification: what [`check_with`] must agree with.
#[cfg(test)]
fn check(stored: &str, password: &[u8]) -> bool {
    use argon2::password_hash::PasswordVerifier;
    PasswordHash::new(stored).is_ok_and(|hash| Argon2::default().verify_password(password, &hash).is_ok())
}

/// [`check`] in `memory` (argon2's blocks, reused): what a verifier thread
/// runs. Allocating the 19 MiB afresh for each run let glibc keep about
/// 200 MiB per thread (measured: a freed block could not be reused).
fn check_with(memory: &mut Vec<argon2::Block>, stored: &str, password: &[u8]) -> bool {
    if super::mosquitto_hash::looks_like(stored) {
        return super::mosquitto_hash::parse(stored).is_ok_and(|hash| hash.verify(password));
    }
    let mut verify = || -> Option<bool> {
        let hash = PasswordHash::new(stored).ok()?;
        let (salt, expected) = (hash.salt?, hash.hash?);
        let algorithm = argon2::Algorithm::try_from(hash.algorithm).ok()?;
        let version = hash.version.map(argon2::Version::try_from).transpose().ok()?.unwrap_or_default();
        let params = argon2::Params::try_from(&hash).ok()?;
        let mut salt_bytes = [0u8; 64];
        let salt = salt.decode_b64(&mut salt_bytes).ok()?;
        if memory.len() < params.block_count() {
            memory.resize(params.block_count(), argon2::Block::default());
        }
        let mut out = vec![0u8; expected.len()];
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password, salt, &mut out, &mut *memory)
            .ok()?;
        Some(super::constant_time_eq(&out, expected.as_bytes()))
    };
    verify().unwrap_or(false)
}

/// Parses the file: `user:hash` per line; blank lines and `#` comments skipped.
pub fn parse(text: &str) -> Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!("line {}: expected username:hash", n + 1));
        };
        if super::mosquitto_hash::looks_like(hash) {
            // A file made by mosquitto_passwd works unchanged.
            if let Err(e) = super::mosquitto_hash::parse(hash) {
                return Err(format!("line {} (user {user:?}): {e}", n + 1));
            }
        } else if let Err(e) = PasswordHash::new(hash) {
            return Err(format!("line {} (user {user:?}): not a PHC hash string: {e}", n + 1));
        }
        if users.insert(user.to_string(), hash.to_string()).is_some() {
            return Err(format!("line {}: user {user:?} appears twice", n + 1));
        }
    }
    Ok(users)
}

/// An argon2id PHC string for `password`, with a fresh random salt.
pub fn hash_password(password: &[u8]) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default().hash_password(password, &salt).map_err(|e| anyhow::anyhow!("hashing: {e}"))?.to_string())
}

fn check_user_name(user: &str) -> anyhow::Result<()> {
    if user.is_empty() || user.contains([':', '\n', '\r']) || user.trim() != user {
        anyhow::bail!("user name {user:?}: must be non-empty, without ':' , line breaks or surrounding spaces");
    }
    if super::is_reserved_user(user) {
        anyhow::bail!("user name {user:?}: names beginning with $ are the broker's own ($api-key, $bridge/...)");
    }
    Ok(())
}

/// Adds `user` or replaces their password; creates the file if needed.
/// The file is rewritten through a temporary file and a rename, so a
/// broker reloading at the same moment reads the old or the new file, never half.
pub fn set_password(path: &Path, user: &str, password: &[u8]) -> anyhow::Result<()> {
    check_user_name(user)?;
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    let hash = hash_password(password)?;
    let mut lines = read_lines(path)?;
    let entry = format!("{user}:{hash}");
    match lines.iter_mut().find(|l| l.split_once(':').is_some_and(|(u, _)| u == user)) {
        Some(line) => *line = entry,
        None => lines.push(entry),
    }
    write_lines(path, &lines)
}

/// Removes `user`; returns whether they were there.
pub fn delete_user(path: &Path, user: &str) -> anyhow::Result<bool> {
    let mut lines = read_lines(path)?;
    let before = lines.len();
    lines.retain(|l| l.split_once(':').is_none_or(|(u, _)| u != user));
    let removed = lines.len() != before;
    if removed {
        write_lines(path, &lines)?;
    }
    Ok(removed)
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().map(str::to_string).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

fn write_lines(path: &Path, lines: &[String]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_in_reused_memory_agrees_with_the_library() {
        let small = Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            argon2::Params::new(64, 1, 1, None).unwrap(),
        )
        .hash_password(b"tiny", &SaltString::generate(&mut OsRng))
        .unwrap()
        .to_string();
        let default = hash_password(b"wonderland").unwrap();
        let mut memory = Vec::new();
        // Big, then small, then big again in the same memory.
        for (stored, password) in [(&default, &b"wonderland"[..]), (&small, b"tiny"), (&default, b"wonderland")] {
            assert!(check_with(&mut memory, stored, password));
            assert!(!check_with(&mut memory, stored, b"wrong"));
            assert_eq!(check(stored, password), check_with(&mut memory, stored, password));
        }
        assert!(!check_with(&mut memory, "not a hash", b"x"));
        assert!(!check_with(&mut memory, "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ", b"x"), "no hash part");
    }

    #[tokio::test]
    async fn set_verify_replace_delete() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        set_password(&path, "alice", b"wonderland").unwrap();
        set_password(&path, "bob", b"builder").unwrap();
        let file = PasswordFile::load(&path, 0).unwrap();
        assert_eq!(file.verify("alice", b"wonderland").await, Verified::Good);
        assert_eq!(file.verify("alice", b"wonderland").await, Verified::Good, "cached");
        assert_eq!(file.verify("alice", b"wrong").await, Verified::Bad);
        assert_eq!(file.verify("carol", b"x").await, Verified::UnknownUser);
        assert!(std::fs::read_to_string(&path).unwrap().contains("$argon2id$"));

        set_password(&path, "alice", b"new").unwrap();
        let file = PasswordFile::load(&path, 0).unwrap();
        assert_eq!(file.verify("alice", b"wonderland").await, Verified::Bad);
        assert_eq!(file.verify("alice", b"new").await, Verified::Good);
        assert!(delete_user(&path, "bob").unwrap());
        assert!(!delete_user(&path, "bob").unwrap());
        assert_eq!(PasswordFile::load(&path, 0).unwrap().verify("bob", b"builder").await, Verified::UnknownUser);
    }

    /// With every verification slot taken, an attempt waits at most
    /// `VERIFY_WAIT` and is refused as busy; a remembered success needs no slot.
    #[tokio::test(start_paused = true)]
    async fn verifications_are_bounded_and_excess_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        set_password(&path, "alice", b"wonderland").unwrap();
        let file = PasswordFile::load(&path, 1).unwrap();
        assert_eq!(file.verify("alice", b"wonderland").await, Verified::Good);
        let held = file.slots.clone().acquire_owned().await.unwrap();
        assert_eq!(file.verify("alice", b"wrong").await, Verified::Busy);
        assert_eq!(file.verify("nobody", b"x").await, Verified::Busy, "unknown users take a slot too");
        assert_eq!(file.verify("alice", b"wonderland").await, Verified::Good, "remembered");
        drop(held);
        assert_eq!(file.verify("alice", b"wrong").await, Verified::Bad);
    }

    #[test]
    fn bad_files_name_the_line() {
        assert!(parse("# users\n\nalice:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA\n").is_ok());
        let err = parse("alice\n").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
        let err = parse("alice:plaintext\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("PHC"), "{err}");
        assert!(set_password(Path::new("/nonexistent/x"), "a:b", b"p").is_err());
    }
}

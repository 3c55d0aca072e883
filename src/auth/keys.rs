//! The key file: its format, its permission rule, and the lookup of a presented
//! bearer token among its keys.
//!
//! # Format
//!
//! One key per line, fields separated by spaces or tabs; `#` starts a comment (at
//! the start of a line or after a space), blank lines are ignored:
//!
//! ```text
//! # name      secret                                options (all optional)
//! checkout    zl_8c1f0a5e3b9d47c2a6e1f09b7d3c5a21   services=checkout,cart records_per_sec=5000
//! batch-jobs  zl_f3a9c0d7e1b54b8a9c2d6e0f1a7b3c94   bytes_per_sec=10MiB spool_share=20
//! ```
//!
//! - name: 1–64 of `A-Z a-z 0-9 _ . -`, unique; it is what `/stats`, `/metrics` and
//!   the journal show (never the secret).
//! - secret: at least [`MIN_SECRET_LEN`] printable ASCII characters without spaces
//!   (what clients send as `Authorization: Bearer <secret>`), unique.
//! - `services=a,b`: the only `service` values the key may write (OTLP: the
//!   resource's `service.name`, else `OTLP_DEFAULT_SERVICE`); absent = any.
//! - `records_per_sec=N`, `bytes_per_sec=N` (suffixes as elsewhere: `512K`, `10MiB`):
//!   this key's token buckets, per worker; `0` = unlimited; absent = the
//!   `INGEST_KEY_*_PER_SEC` defaults.
//! - `spool_share=P`: percent (1–100) of the spool cap this key's unsent rows may take;
//!   absent = `INGEST_KEY_SPOOL_SHARE`.
//!
//! # Permissions
//!
//! The file holds secrets: it must be owned by root or by the worker's own user, and
//! neither group-writable nor accessible to others (`mode & 0o027 == 0`). The
//! packaged layout is `root:zero-logs 0640` (root edits it, the worker reads it
//! through its group); a hand-run worker can use its own `0600` file. Under the
//! unit's `PrivateUsers=yes` root is not mapped and its files show the overflow uid
//! (65534), which then counts as root.
//!
//! # Lookup
//!
//! Secrets are kept only as SHA-256 digests. A presented token is hashed once and
//! compared with every stored digest by a loop that neither branches nor stops on a
//! match, so the time taken does not depend on which key (or how much of one)
//! matched.

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::limits::KeyLimits;

/// Shortest secret accepted: 16 characters of a random token is already ~96 bits.
pub const MIN_SECRET_LEN: usize = 16;
/// Longest key name.
pub const MAX_NAME_LEN: usize = 64;

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the key file {path}: {source}; create it (docs/SECURITY.md) or set INGEST_AUTH=none on a trusted network")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the key file {path} is {problem} (mode {mode:04o}, owner uid {uid}); {fix}")]
    Permissions {
        path: PathBuf,
        mode: u32,
        uid: u32,
        problem: &'static str,
        fix: &'static str,
    },
    #[error("{path}:{line}: {reason}")]
    Parse {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// One key as the file defines it.
#[derive(Clone, PartialEq)]
pub struct KeyDef {
    pub name: String,
    /// SHA-256 of the secret.
    pub digest: [u8; 32],
    /// `None`: any service.
    pub services: Option<Vec<String>>,
    pub limits: KeyLimits,
}

impl fmt::Debug for KeyDef {
    // Never the digest: a Debug print must not help an offline guess.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyDef")
            .field("name", &self.name)
            .field("services", &self.services)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl KeyDef {
    /// Whether records of `service` may be written with this key.
    pub fn allows(&self, service: &str) -> bool {
        match &self.services {
            None => true,
            Some(list) => list.iter().any(|s| s == service),
        }
    }
}

/// The SHA-256 digest of a secret or a presented token.
pub fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Index of the digest in `stored` equal to `presented`'s, looked at in constant
/// time: every entry is compared whole, and the match is selected with masks.
pub fn find(stored: &[[u8; 32]], presented: &[u8; 32]) -> Option<usize> {
    let mut found = 0usize;
    let mut any = 0u8;
    for (i, candidate) in stored.iter().enumerate() {
        let mut diff = 0u8;
        for (a, b) in candidate.iter().zip(presented) {
            diff |= a ^ b;
        }
        // 1 when equal, 0 otherwise, without a branch on the secret data.
        let equal = std::hint::black_box(((u16::from(diff)).wrapping_sub(1) >> 8) as u8 & 1);
        let mask = (equal as usize).wrapping_neg();
        found = (i & mask) | (found & !mask);
        any |= equal;
    }
    (any == 1).then_some(found)
}

/// Reads `path`, checking its owner and mode first.
pub fn load(path: &Path, defaults: &KeyLimits) -> Result<Vec<KeyDef>, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let euid = rustix::process::geteuid().as_raw();
    check_permissions(path, meta.mode(), host_root_as(meta.uid()), euid)?;
    let text = std::fs::read_to_string(path).map_err(io)?;
    parse(&text, defaults).map_err(|(line, reason)| KeyFileError::Parse {
        path: path.to_owned(),
        line,
        reason,
    })
}

/// The overflow uid files of unmapped users show under (`/proc/sys/kernel/overflowuid`,
/// which the unit's `ProcSubset=pid` hides: its default then).
const OVERFLOW_UID: u32 = 65534;

/// `uid` as the rule sees it: under the unit's `PrivateUsers=yes` the host's root is
/// not mapped into the worker's user namespace, so a `root:zero-logs 0640` file shows
/// the overflow uid; it is taken as root only where root is unmapped.
fn host_root_as(uid: u32) -> u32 {
    if uid == OVERFLOW_UID && !root_is_mapped() {
        0
    } else {
        uid
    }
}

/// Whether the host's uid 0 has an id in this process's user namespace.
fn root_is_mapped() -> bool {
    let Ok(map) = std::fs::read_to_string("/proc/self/uid_map") else {
        return true;
    };
    map.lines().any(|line| {
        let f: Vec<u64> = line
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        matches!(f[..], [_, outside, count] if outside == 0 && count > 0)
    })
}

/// The permission rule of the module docs, for a file of `mode` owned by `uid`, read
/// by a process of effective uid `euid`.
pub fn check_permissions(path: &Path, mode: u32, uid: u32, euid: u32) -> Result<(), KeyFileError> {
    let refuse = |problem, fix| {
        Err(KeyFileError::Permissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
            uid,
            problem,
            fix,
        })
    };
    if mode & 0o007 != 0 {
        return refuse(
            "readable or writable by other users",
            "chmod 640 it (owner root, group zero-logs) or chmod 600 (owner: the worker's user)",
        );
    }
    if mode & 0o020 != 0 {
        return refuse(
            "writable by its group",
            "chmod 640 it (owner root, group zero-logs)",
        );
    }
    if uid != 0 && uid != euid {
        return refuse(
            "owned by another user, who could change the keys",
            "chown it to root (group zero-logs, mode 640) or to the worker's user (mode 600)",
        );
    }
    Ok(())
}

/// Parses the file's text; an error is `(line number from 1, reason)`.
pub fn parse(text: &str, defaults: &KeyLimits) -> Result<Vec<KeyDef>, (usize, String)> {
    let mut keys: Vec<KeyDef> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let content = strip_comment(raw);
        let mut fields = content.split_whitespace();
        let Some(name) = fields.next() else { continue };
        check_name(name).map_err(|r| (line, r))?;
        let Some(secret) = fields.next() else {
            return Err((
                line,
                format!("key {name:?} has no secret; write `<name> <secret> [options]`"),
            ));
        };
        check_secret(secret).map_err(|r| (line, format!("key {name:?}: {r}")))?;
        let mut def = KeyDef {
            name: name.to_owned(),
            digest: digest(secret.as_bytes()),
            services: None,
            limits: defaults.clone(),
        };
        for option in fields {
            apply_option(&mut def, option).map_err(|r| (line, format!("key {name:?}: {r}")))?;
        }
        if keys.iter().any(|k| k.name == def.name) {
            return Err((
                line,
                format!("key name {name:?} is used twice; names must be unique"),
            ));
        }
        if find(
            &keys.iter().map(|k| k.digest).collect::<Vec<_>>(),
            &def.digest,
        )
        .is_some()
        {
            return Err((
                line,
                format!("key {name:?} has the secret of an earlier key; give every key its own"),
            ));
        }
        keys.push(def);
    }
    Ok(keys)
}

/// The line without its comment: `#` at the start or after whitespace (a secret may
/// contain `#`).
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid key name {name:?}: use 1-{MAX_NAME_LEN} of A-Z a-z 0-9 _ . -"
        ))
    }
}

fn check_secret(secret: &str) -> Result<(), String> {
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the secret must be printable ASCII without spaces".into());
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(format!(
            "the secret has {} characters, at least {MIN_SECRET_LEN} are required \
             (e.g. `openssl rand -hex 24`)",
            secret.len()
        ));
    }
    if secret.contains('=') && secret.split('=').next().is_some_and(is_option_name) {
        return Err(format!(
            "the second field looks like an option ({secret:?}), not a secret; write `<name> <secret> [options]`"
        ));
    }
    Ok(())
}

fn is_option_name(word: &str) -> bool {
    matches!(
        word,
        "services" | "service" | "records_per_sec" | "bytes_per_sec" | "spool_share"
    )
}

fn apply_option(def: &mut KeyDef, option: &str) -> Result<(), String> {
    let Some((key, value)) = option.split_once('=') else {
        return Err(format!(
            "unexpected {option:?}; options are services=, records_per_sec=, bytes_per_sec=, spool_share="
        ));
    };
    match key {
        "services" | "service" => {
            let list: Vec<String> = value
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if list.is_empty() {
                return Err("services= needs at least one service name".into());
            }
            def.services = Some(list);
        }
        "records_per_sec" => {
            let n: u64 = value
                .parse()
                .map_err(|_| format!("records_per_sec={value:?}: expected a whole number, 0 = unlimited"))?;
            def.limits.records_per_sec = n;
        }
        "bytes_per_sec" => {
            let n = crate::config::bytes(value).map_err(|r| format!("bytes_per_sec={value:?}: {r}"))?;
            def.limits.bytes_per_sec = n as u64;
        }
        "spool_share" => {
            def.limits.spool_share_percent = super::limits::percent(value)
                .map_err(|r| format!("spool_share={value:?}: {r}"))?;
        }
        _ => {
            return Err(format!(
                "unknown option {key:?}; options are services=, records_per_sec=, bytes_per_sec=, spool_share="
            ))
        }
    }
    Ok(())
}

/// The keys of one version of the file, ready for lookups.
pub struct KeySet<K> {
    digests: Vec<[u8; 32]>,
    keys: Vec<Arc<K>>,
}

impl<K> KeySet<K> {
    /// `keys[i]` is the key of `digests[i]`.
    pub fn new(digests: Vec<[u8; 32]>, keys: Vec<Arc<K>>) -> KeySet<K> {
        assert_eq!(digests.len(), keys.len());
        KeySet { digests, keys }
    }

    /// The key whose secret is `token`, in constant time (see the module docs).
    pub fn lookup(&self, token: &[u8]) -> Option<&Arc<K>> {
        find(&self.digests, &digest(token)).map(|i| &self.keys[i])
    }

    pub fn keys(&self) -> &[Arc<K>] {
        &self.keys
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> KeyLimits {
        KeyLimits {
            records_per_sec: 100,
            bytes_per_sec: 0,
            spool_share_percent: 50,
        }
    }

    #[test]
    fn parses_names_secrets_options_and_comments() {
        let text = "# keys\n\n\
                    web   secret-web-0123456789  services=checkout,cart records_per_sec=7 # trailing\n\
                    \tjobs\tsecret#jobs#0123456789\tbytes_per_sec=1KiB spool_share=20\n";
        let keys = parse(text, &defaults()).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].name, "web");
        assert_eq!(keys[0].digest, digest(b"secret-web-0123456789"));
        assert_eq!(
            keys[0].services.as_deref(),
            Some(&["checkout".to_string(), "cart".to_string()][..])
        );
        assert!(keys[0].allows("cart") && !keys[0].allows("billing"));
        assert_eq!(keys[0].limits.records_per_sec, 7);
        assert_eq!(keys[0].limits.spool_share_percent, 50, "the default");
        // `#` inside a secret is part of it.
        assert_eq!(keys[1].digest, digest(b"secret#jobs#0123456789"));
        assert!(keys[1].allows("anything"));
        assert_eq!(keys[1].limits.bytes_per_sec, 1024);
        assert_eq!(keys[1].limits.records_per_sec, 100, "the default");
        assert_eq!(keys[1].limits.spool_share_percent, 20);
        // The Debug print never shows the digest.
        assert!(!format!("{:?}", keys[0]).contains("digest"));
    }

    #[test]
    fn errors_name_the_line_and_the_fix() {
        let cases = [
            ("a 0123456789abcdef\nb\n", 2, "has no secret"),
            ("a short\n", 1, "at least 16"),
            ("bad/name 0123456789abcdef\n", 1, "invalid key name"),
            (
                "a 0123456789abcdef\n#\na 0123456789abcdeX\n",
                3,
                "used twice",
            ),
            (
                "a 0123456789abcdef\nb 0123456789abcdef\n",
                2,
                "secret of an earlier key",
            ),
            (
                "a 0123456789abcdef colour=red\n",
                1,
                "unknown option \"colour\"",
            ),
            (
                "a 0123456789abcdef records_per_sec=fast\n",
                1,
                "expected a whole number",
            ),
            ("a 0123456789abcdef spool_share=0\n", 1, "spool_share"),
            ("a services=checkout,cart\n", 1, "looks like an option"),
            ("a 0123456789abcdef services=\n", 1, "at least one service"),
        ];
        for (text, line, needle) in cases {
            let (at, reason) = parse(text, &defaults()).unwrap_err();
            assert_eq!(at, line, "{text:?}: {reason}");
            assert!(reason.contains(needle), "{text:?}: {reason}");
        }
        let err = KeyFileError::Parse {
            path: "/etc/zero-logs/keys".into(),
            line: 3,
            reason: "x".into(),
        };
        assert_eq!(err.to_string(), "/etc/zero-logs/keys:3: x");
    }

    #[test]
    fn permission_rule() {
        let p = Path::new("keys");
        let me = 1000;
        assert!(check_permissions(p, 0o100600, me, me).is_ok());
        assert!(check_permissions(p, 0o100640, 0, me).is_ok());
        assert!(check_permissions(p, 0o100400, 0, me).is_ok());
        let world = check_permissions(p, 0o100644, me, me)
            .unwrap_err()
            .to_string();
        assert!(
            world.contains("other users") && world.contains("chmod 640"),
            "{world}"
        );
        assert!(world.contains("mode 0644"), "{world}");
        let group_write = check_permissions(p, 0o100660, 0, me)
            .unwrap_err()
            .to_string();
        assert!(
            group_write.contains("writable by its group"),
            "{group_write}"
        );
        let stranger = check_permissions(p, 0o100600, 1234, me)
            .unwrap_err()
            .to_string();
        assert!(stranger.contains("another user"), "{stranger}");
        // The overflow uid counts as root only where root is unmapped (PrivateUsers=).
        assert_eq!(host_root_as(OVERFLOW_UID) == 0, !root_is_mapped());
        assert_eq!(host_root_as(1000), 1000);
    }

    #[test]
    fn lookup_finds_each_key_and_nothing_else() {
        let secrets = [
            "first-secret-0000",
            "second-secret-000",
            "third-secret-0000",
        ];
        let digests: Vec<_> = secrets.iter().map(|s| digest(s.as_bytes())).collect();
        let set = KeySet::new(digests, (0..3).map(Arc::new).collect());
        for (i, s) in secrets.iter().enumerate() {
            assert_eq!(set.lookup(s.as_bytes()).map(|k| **k), Some(i));
        }
        assert!(set.lookup(b"first-secret-000").is_none(), "a prefix");
        assert!(set.lookup(b"first-secret-00000").is_none(), "longer");
        assert!(set.lookup(b"").is_none());
        let empty: KeySet<usize> = KeySet::new(Vec::new(), Vec::new());
        assert!(empty.lookup(b"first-secret-0000").is_none());
        // Index 0 must be told from "no match".
        assert_eq!(find(&[digest(b"x")], &digest(b"x")), Some(0));
        assert_eq!(find(&[digest(b"x")], &digest(b"y")), None);
    }
}

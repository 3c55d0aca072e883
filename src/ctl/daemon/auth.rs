//! The management API's bearer token: read once at start from a root-only
//! file, compared in constant time.
//!
//! - The file missing: the daemon creates it (mode 0600, 32 random bytes as
//!   hex), so `cat /etc/zero-logs/api-token` gives the operator a token after
//!   the first start.
//! - The file readable or writable by group or others: the daemon refuses to
//!   start ([`TokenError::Permissions`]); a token others can read is no secret.
//! - Owned by another user than the daemon's (root): refused; that user could
//!   read it. An empty file: refused too.

use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why the token file cannot be used. Exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "{path} has mode {mode:04o}: the API token file must not be readable or writable by \
         group or others (chmod 600 {path})"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("{path} is owned by uid {owner}, not by this process's uid {me}: the API token file must be root's (chown root:root {path})")]
    Owner { path: PathBuf, owner: u32, me: u32 },
    #[error("{path} is empty: put a token in it (e.g. `openssl rand -hex 32`) or delete it to have one made")]
    Empty { path: PathBuf },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The secret. Not `Debug`-printable, never logged.
pub struct Token(Vec<u8>);

/// What [`Token::load_or_create`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Existing,
    Created,
}

impl Token {
    /// Reads `path`, or creates it with a random token when it does not exist.
    pub fn load_or_create(path: &Path) -> Result<(Token, TokenSource), TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_path_buf(),
            source,
        };
        match std::fs::metadata(path) {
            Ok(meta) => {
                let me = rustix::process::geteuid().as_raw();
                if meta.uid() != me {
                    return Err(TokenError::Owner {
                        path: path.to_path_buf(),
                        owner: meta.uid(),
                        me,
                    });
                }
                let mode = meta.mode() & 0o7777;
                if mode & 0o077 != 0 {
                    return Err(TokenError::Permissions {
                        path: path.to_path_buf(),
                        mode,
                    });
                }
                let text = std::fs::read_to_string(path).map_err(io)?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(TokenError::Empty {
                        path: path.to_path_buf(),
                    });
                }
                Ok((Token(token.as_bytes().to_vec()), TokenSource::Existing))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let secret: [u8; 32] = rand::random();
                let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                file.write_all(format!("{hex}\n").as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok((Token(hex.into_bytes()), TokenSource::Created))
            }
            Err(e) => Err(io(e)),
        }
    }

    #[cfg(test)]
    pub fn from_str_for_tests(text: &str) -> Token {
        Token(text.as_bytes().to_vec())
    }

    /// Whether `candidate` is the token, in time that depends only on the
    /// lengths, never on where the first difference is.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let mut diff = u8::from(self.0.len() != candidate.len());
        for (i, a) in self.0.iter().enumerate() {
            let b = candidate.get(i).copied().unwrap_or(0);
            diff |= a ^ b;
        }
        std::hint::black_box(diff) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn compares_whole_tokens_only() {
        let t = Token::from_str_for_tests("s3cret");
        assert!(t.matches(b"s3cret"));
        for wrong in [
            &b""[..],
            b"s3cre",
            b"s3cret!",
            b"S3cret",
            b"x3cret",
            b"s3crex",
        ] {
            assert!(!t.matches(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn creates_a_private_token_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-token");
        let (made, how) = Token::load_or_create(&path).unwrap();
        assert_eq!(how, TokenSource::Created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        assert!(made.matches(text.trim().as_bytes()));
        let (again, how) = Token::load_or_create(&path).unwrap();
        assert_eq!(how, TokenSource::Existing);
        assert!(again.matches(text.trim().as_bytes()));
    }

    #[test]
    fn refuses_readable_or_empty_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-token");
        std::fs::write(&path, "abc\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Token::load_or_create(&path).err().unwrap();
        assert!(
            matches!(err, TokenError::Permissions { mode: 0o640, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Token::load_or_create(&path).is_ok());
        std::fs::write(&path, " \n").unwrap();
        assert!(matches!(
            Token::load_or_create(&path).err().unwrap(),
            TokenError::Empty { .. }
        ));
    }
}

//! Key files of closed groups: 32 random bytes as 64 hex characters, mode 0600, the same
//! shape as a network key file. Whoever holds the file is a member of the closed groups made
//! with it (see [`p2ps_overlay::groups::closed`]).

use p2ps_overlay::groups::{GroupSecret, GROUP_SECRET_LEN};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A key file is 64 hex characters and a newline; anything far larger is not a key file.
const MAX_KEY_FILE_BYTES: u64 = 1024;

/// Why a group key could not be parsed, loaded or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupKeyError {
    /// The text is not 64 hex characters.
    #[error("a group key is {} hex characters", GROUP_SECRET_LEN * 2)]
    Malformed,
    /// The key file does not exist.
    #[error("group key file {0} does not exist (make one with `p2ps group key new FILE`)")]
    NotFound(PathBuf),
    /// The key file can be read or written by group or other users.
    #[error("group key file {path} has mode {mode:o}; it must not be accessible by group or others (chmod 600)")]
    InsecurePermissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold a group key.
    #[error("group key file {path} is not a group key")]
    NotAKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<GroupKeyError>,
    },
    /// `create` was asked to write over an existing file.
    #[error("group key file {0} already exists; not replacing it")]
    AlreadyExists(PathBuf),
    /// Reading or writing the key file failed.
    #[error("group key file {path}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}

/// A group secret from its 64 hex characters (surrounding whitespace ignored).
pub fn parse(text: &str) -> Result<GroupSecret, GroupKeyError> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.trim().as_bytes())
        .map_err(|_| GroupKeyError::Malformed)?;
    let secret: [u8; GROUP_SECRET_LEN] = bytes.try_into().map_err(|_| GroupKeyError::Malformed)?;
    Ok(GroupSecret::from_bytes(secret))
}

/// The secret as 64 hex characters (the key file's content). Handle with care.
pub fn to_hex(secret: &GroupSecret) -> String {
    data_encoding::HEXLOWER.encode(secret.as_bytes())
}

/// Loads the key file at `path`: a regular file not accessible by group or others, holding
/// 64 hex characters.
pub fn load(path: &Path) -> Result<GroupSecret, GroupKeyError> {
    let io = |source| GroupKeyError::Io {
        path: path.into(),
        source,
    };
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(GroupKeyError::NotFound(path.into()))
        }
        Err(e) => return Err(io(e)),
    };
    let not_a_key = |source| GroupKeyError::NotAKey {
        path: path.into(),
        source: Box::new(source),
    };
    if !meta.is_file() || meta.len() > MAX_KEY_FILE_BYTES {
        return Err(not_a_key(GroupKeyError::Malformed));
    }
    if let Some(mode) = p2ps_transport::secret_file::too_open(&meta) {
        return Err(GroupKeyError::InsecurePermissions {
            path: path.into(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(io)?;
    parse(&text).map_err(not_a_key)
}

/// Makes a new random key (from the operating system's generator) and writes it to `path`
/// with mode 0600. Never replaces an existing file.
pub fn create(path: &Path) -> Result<GroupSecret, GroupKeyError> {
    let mut secret = [0u8; GROUP_SECRET_LEN];
    for chunk in secret.chunks_mut(8) {
        chunk.copy_from_slice(&p2ps_transport::random_u64().to_le_bytes());
    }
    let secret = GroupSecret::from_bytes(secret);
    let io = |source| GroupKeyError::Io {
        path: path.into(),
        source,
    };
    let mut file = p2ps_transport::secret_file::create_new(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            GroupKeyError::AlreadyExists(path.into())
        } else {
            io(e)
        }
    })?;
    file.write_all(format!("{}\n", to_hex(&secret)).as_bytes())
        .map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_key_loads_and_open_or_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("chess.key");
        let made = create(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(load(&path).ok(), Some(made));
        assert!(matches!(
            create(&path),
            Err(GroupKeyError::AlreadyExists(_))
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o644));
            assert!(matches!(
                load(&path),
                Err(GroupKeyError::InsecurePermissions { .. })
            ));
        }
        assert!(matches!(
            load(&dir.path().join("none")),
            Err(GroupKeyError::NotFound(_))
        ));
        assert!(parse("abc").is_err());
        assert!(parse(&"0".repeat(64)).is_ok());
    }
}

//! Files that hold a secret (a node's identity key, a network key) must be readable by their
//! owner only: this is the one check all of them (and the group keys of `p2ps`) make before
//! reading one, and the one way they are created.

use std::fs;

/// The file's permission bits if group or others may read or write it (it must then be
/// refused), `None` if only its owner may. Always `None` where there are no such bits.
pub fn too_open(meta: &fs::Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

/// Creates the file at `path` for writing a secret, readable and writable by its owner only
/// (mode 0600 where there are modes). Never replaces a file: fails with
/// [`std::io::ErrorKind::AlreadyExists`] if one is there.
pub fn create_new(path: &std::path::Path) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

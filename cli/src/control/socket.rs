//! Where a node's control socket is, and how it is kept private to the node's user.
//!
//! A Unix domain socket at `--control PATH`, or by default `$XDG_RUNTIME_DIR/p2ps/<name>.sock`
//! (falling back to `/tmp/p2ps-<uid>/<name>.sock`), `<name>` being `--name` (default `node`).
//! Only the node's user can reach it: its directory is owned by that user and not writable by
//! anyone else (the default directory is created `0700`), the socket file is `0600`, and the
//! node also checks each caller's uid (`SO_PEERCRED`).

use anyhow::{bail, Context, Result};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The current user's uid.
pub(crate) fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Checks a node name: it becomes a file name.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        bail!(
            "invalid node name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', \
             not starting with '.'"
        );
    }
    Ok(())
}

/// The directory that holds control sockets by default: `$XDG_RUNTIME_DIR/p2ps`, or
/// `/tmp/p2ps-<uid>` without it.
pub(crate) fn default_control_dir(runtime_dir: Option<&Path>, uid: u32) -> PathBuf {
    match runtime_dir {
        Some(d) if d.is_absolute() => d.join("p2ps"),
        _ => PathBuf::from(format!("/tmp/p2ps-{uid}")),
    }
}

/// Where the control socket is: `control` if given, else the default for `name`. The flag says
/// whether it is the default (whose directory may be created).
pub(crate) fn control_path(control: Option<&Path>, name: &str) -> Result<(PathBuf, bool)> {
    match control {
        Some(p) => Ok((p.to_path_buf(), false)),
        None => {
            check_name(name)?;
            let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
            let dir = default_control_dir(runtime.as_deref(), current_uid());
            Ok((dir.join(format!("{name}.sock")), true))
        }
    }
}

/// Makes sure the directory of a control socket is private to this user: creates it `0700` if
/// it is the default one and missing, and checks that it is owned by this user and writable by
/// nobody else (for the default directory: accessible by nobody else).
pub(crate) fn prepare_socket_dir(dir: &Path, is_default: bool) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if !dir.exists() {
        if !is_default {
            bail!(
                "directory {} for the control socket does not exist",
                dir.display()
            );
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the control socket directory {}", dir.display()))?;
    }
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("checking the control socket directory {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "{} (for the control socket) is not a directory",
            dir.display()
        );
    }
    let uid = current_uid();
    if meta.uid() != uid {
        bail!(
            "the control socket directory {} belongs to uid {}, not to you (uid {uid}); \
             choose another one with --control",
            dir.display(),
            meta.uid()
        );
    }
    let mode = meta.mode() & 0o777;
    let forbidden = if is_default { 0o077 } else { 0o022 };
    if mode & forbidden != 0 {
        let fix = if is_default {
            format!("chmod 700 {}", dir.display())
        } else {
            "use a directory only you can write to, or leave out --control for the default one"
                .to_string()
        };
        bail!(
            "the control socket directory {} has mode {mode:o}: other users could reach or \
             replace the socket ({fix})",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_paths() {
        assert_eq!(
            default_control_dir(Some(Path::new("/run/user/1000")), 1000),
            PathBuf::from("/run/user/1000/p2ps")
        );
        assert_eq!(default_control_dir(None, 7), PathBuf::from("/tmp/p2ps-7"));
        // A relative XDG_RUNTIME_DIR is ignored, as the spec says.
        assert_eq!(
            default_control_dir(Some(Path::new("rel")), 7),
            PathBuf::from("/tmp/p2ps-7")
        );
        assert!(check_name("node").is_ok());
        assert!(check_name("n-1_a.b").is_ok());
        for bad in ["", ".hidden", "a/b", "../x", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn socket_dirs_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("a/b");
        // Explicit paths are not created; default ones are, 0700.
        assert!(prepare_socket_dir(&d, false).is_err());
        prepare_socket_dir(&d, true).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(prepare_socket_dir(&d, false).is_ok());
        let e = prepare_socket_dir(&d, true).unwrap_err().to_string();
        assert!(e.contains("chmod 700"), "{e}");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_socket_dir(&d, false).unwrap_err().to_string();
        assert!(e.contains("only you can write to"), "{e}");
    }
}

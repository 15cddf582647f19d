//! Running code of the test process inside a network namespace.
//!
//! `setns(CLONE_NEWNET)` moves only the calling thread, and a socket belongs for its whole life
//! to the namespace it was created in. So a fresh thread enters the namespace, runs the code
//! (which may create sockets, or drive a current-thread tokio runtime), and ends; sockets it
//! returns keep working from any thread.

use super::error::{NatLabError, Result};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

/// Where `ip netns add` puts the namespace handles.
pub(crate) const NETNS_DIR: &str = "/var/run/netns";

/// The handle file of namespace `ns`.
pub(crate) fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(ns)
}

/// Moves the calling thread into namespace `ns`.
pub(crate) fn enter(ns: &str) -> Result<()> {
    let setns_err = |source| NatLabError::Setns {
        ns: ns.to_string(),
        source,
    };
    let file = File::open(ns_path(ns)).map_err(setns_err)?;
    rustix::thread::move_into_link_name_space(
        file.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(|e| setns_err(e.into()))
}

/// Runs `f` on a new thread inside namespace `ns` and waits for its result.
pub(crate) fn run_in<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            enter(ns)?;
            Ok(f())
        });
        handle
            .join()
            .map_err(|_| NatLabError::ThreadPanicked(ns.to_string()))?
    })
}

/// Starts `f` on a new thread inside namespace `ns`. Joining the handle gives `f`'s result, or
/// the error that kept the thread from entering the namespace.
pub(crate) fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<T>>> {
    let name = ns.to_string();
    std::thread::Builder::new()
        .name(format!("netns {ns}"))
        .spawn(move || enter(&name).map(|()| f()))
        .map_err(|source| NatLabError::Io {
            what: format!("spawning a thread for namespace {ns}"),
            source,
        })
}

/// Writes a sysctl of the namespace the calling thread is in (`/proc/sys` follows the
/// opener's network namespace).
pub(crate) fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    std::fs::write(&path, value).map_err(|source| NatLabError::Io {
        what: format!("writing {path}"),
        source,
    })
}

//! Running the lab's helper programs (`ip`, `nft`, `miniupnpd`) with a time limit each, so a
//! hung command fails the test instead of hanging it.

use super::error::{NatLabError, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long one configuration command (`ip`, `nft`) may take.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a program is: `$PATH` first, then the sbin directories (which a non-login root shell
/// may lack).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `name` resolved by [`find_program`], or an error naming the missing program.
pub(crate) fn program(name: &'static str) -> Result<PathBuf> {
    find_program(name).ok_or(NatLabError::MissingProgram(name))
}

/// The command line, for error messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion (feeding it `stdin` if given) within [`COMMAND_TIMEOUT`]; returns
/// its stdout. A non-zero exit is an error carrying stderr; a command that overruns is killed.
pub(crate) fn run(cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    let command = describe(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| NatLabError::Spawn {
        command: command.clone(),
        source,
    })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as the command's own error (it read a truncated script).
        let _ = pipe.write_all(text.as_bytes());
    }
    let pid = child.id();
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(COMMAND_TIMEOUT) {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => {
            return Err(NatLabError::Io {
                what: command,
                source,
            })
        }
        Err(_) => {
            kill(pid);
            return Err(NatLabError::Timeout {
                command,
                timeout: COMMAND_TIMEOUT,
            });
        }
    };
    if !output.status.success() {
        return Err(NatLabError::Failed {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Sends SIGKILL to `pid` (never to this process itself); a process that is already gone is
/// not an error.
pub(crate) fn kill(pid: u32) {
    if pid == std::process::id() {
        return;
    }
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Some(pid) = rustix::process::Pid::from_raw(raw) {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
}

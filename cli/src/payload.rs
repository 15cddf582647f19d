//! The message of `send`, `route`, `broadcast`, `range` and `group send`: given on the command
//! line, read from standard input (`-`) or from a file (`@PATH`), and held to one size limit
//! from the command line through the control socket to the node.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;

/// Largest message, in bytes: what a `p2ps node` accepts (it sets its `max_message_size` to
/// this), and what the clients send.
pub(crate) const MAX_PAYLOAD_BYTES: usize = p2ps_transport::DEFAULT_MAX_FRAME_SIZE;

/// How the TEXT argument of every sending command is read (shown in `--help`).
pub(crate) const TEXT_HELP: &str = "The message, sent as UTF-8 (at most 1 MiB = 1048576 bytes): \
    the text itself, `-` to read it from standard input, or `@FILE` to read a file (write `@@…` \
    for a text that starts with `@`)";

/// The message named by a TEXT argument: `-` reads standard input, `@PATH` reads a file, `@@…`
/// is the text `@…`, anything else is the text itself.
pub(crate) fn message(arg: &str) -> Result<String> {
    message_from(arg, std::io::stdin().lock())
}

/// [`message`] with `stdin` standing for standard input.
pub(crate) fn message_from(arg: &str, stdin: impl Read) -> Result<String> {
    let (bytes, from) = if arg == "-" {
        (
            read_limited(stdin, "standard input")?,
            "standard input".to_string(),
        )
    } else if let Some(text) = arg.strip_prefix("@@") {
        (
            format!("@{text}").into_bytes(),
            "the command line".to_string(),
        )
    } else if let Some(path) = arg.strip_prefix('@') {
        let path = Path::new(path);
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening the message file {}", path.display()))?;
        let from = format!("the file {}", path.display());
        (read_limited(file, &from)?, from)
    } else {
        (arg.as_bytes().to_vec(), "the command line".to_string())
    };
    check_size(bytes.len())?;
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "the message from {from} is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Refuses a message over [`MAX_PAYLOAD_BYTES`].
pub(crate) fn check_size(len: usize) -> Result<()> {
    if len > MAX_PAYLOAD_BYTES {
        bail!("the message is {len} bytes, over the limit of {MAX_PAYLOAD_BYTES} bytes (1 MiB)");
    }
    Ok(())
}

/// Reads at most one byte more than the limit, so that a huge input is refused without being
/// read whole.
fn read_limited(r: impl Read, what: &str) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(MAX_PAYLOAD_BYTES as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("reading the message from {what}"))?;
    if buf.len() > MAX_PAYLOAD_BYTES {
        bail!("the message from {what} is over the limit of {MAX_PAYLOAD_BYTES} bytes (1 MiB)");
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stdin_and_files() {
        assert_eq!(message_from("hello", &b"unused"[..]).unwrap(), "hello");
        assert_eq!(
            message_from("-", &b"from stdin\n"[..]).unwrap(),
            "from stdin\n"
        );
        assert_eq!(message_from("@@home", &b""[..]).unwrap(), "@home");
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("m.txt");
        std::fs::write(&p, "from a file").unwrap();
        let arg = format!("@{}", p.display());
        assert_eq!(message_from(&arg, &b""[..]).unwrap(), "from a file");
        let e = format!(
            "{:#}",
            message_from(&format!("@{}", tmp.path().join("none").display()), &b""[..]).unwrap_err()
        );
        assert!(e.contains("opening the message file"), "{e}");
        std::fs::write(&p, [0x66, 0xff]).unwrap();
        let e = message_from(&arg, &b""[..]).unwrap_err().to_string();
        assert!(e.contains("not UTF-8") && e.contains("offset 1"), "{e}");
    }

    #[test]
    fn one_limit_for_every_source() {
        let max = "x".repeat(MAX_PAYLOAD_BYTES);
        assert_eq!(
            message_from("-", max.as_bytes()).unwrap().len(),
            MAX_PAYLOAD_BYTES
        );
        assert_eq!(
            message_from(&max, &b""[..]).unwrap().len(),
            MAX_PAYLOAD_BYTES
        );
        let over = "x".repeat(MAX_PAYLOAD_BYTES + 1);
        for e in [
            message_from("-", over.as_bytes()).unwrap_err().to_string(),
            message_from(&over, &b""[..]).unwrap_err().to_string(),
        ] {
            assert!(e.contains("over the limit of 1048576 bytes"), "{e}");
        }
    }

    #[test]
    fn the_control_socket_takes_the_largest_message() {
        // The worst case for JSON: every byte a control character, escaped as \u00XX.
        let payload = "\u{1}".repeat(MAX_PAYLOAD_BYTES);
        let req = crate::control::protocol::Request::GroupSend {
            group: "g".repeat(255),
            key: Some("0".repeat(64)),
            payload,
        };
        let line = serde_json::to_vec(&req).unwrap();
        assert!(
            line.len() < crate::control::protocol::MAX_REQUEST_BYTES,
            "{} >= {}",
            line.len(),
            crate::control::protocol::MAX_REQUEST_BYTES
        );
    }
}

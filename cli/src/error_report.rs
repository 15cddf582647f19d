//! How a failed command reports its error: the message and its causes, one per line, without
//! the backtrace that returning `anyhow::Result` from `main` prints under `RUST_BACKTRACE=1`.

/// The text printed on stderr for a command that failed with `e`: `Error: …`, then each cause
/// on its own numbered line, a cause that only repeats the message above it left out.
pub(crate) fn render(e: &anyhow::Error) -> String {
    use std::fmt::Write as _;
    let mut out = format!("Error: {e}\n");
    let mut previous = e.to_string();
    let mut causes = Vec::new();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        // A cause whose text the previous message already ends with adds nothing.
        if !previous.ends_with(&text) {
            causes.push(text.clone());
        }
        previous = text;
    }
    if !causes.is_empty() {
        out.push_str("\nCaused by:\n");
        for (i, c) in causes.iter().enumerate() {
            let _ = writeln!(out, "    {i}: {c}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn causes_are_listed_once_without_a_backtrace() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let e = Err::<(), _>(io)
            .context("could not bind UDP socket on 127.0.0.1:9")
            .context("starting the node on 127.0.0.1:9")
            .unwrap_err();
        assert_eq!(
            render(&e),
            "Error: starting the node on 127.0.0.1:9\n\nCaused by:\n    \
             0: could not bind UDP socket on 127.0.0.1:9\n    1: Address already in use\n"
        );
        assert_eq!(render(&anyhow::anyhow!("plain")), "Error: plain\n");
        assert!(!render(&e).contains("backtrace"));
    }

    #[test]
    fn a_cause_repeated_in_its_parents_message_is_left_out() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let e = anyhow::Error::new(io).context("bind failed: Address already in use");
        assert_eq!(render(&e), "Error: bind failed: Address already in use\n");
    }
}

//! Progress bars of long commands (`p2ps sim …`), on stderr: hidden when stderr is not a
//! terminal (a file, a pipe, CI) and when the command prints JSON, so that what scripts read
//! never changes.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A bar of `len` steps named `what`; hidden when `json` or stderr is not a terminal.
pub(crate) fn bar(len: u64, what: &str, json: bool) -> ProgressBar {
    let shown = !json && std::io::stderr().is_terminal();
    let target = if shown {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let style = ProgressStyle::with_template(
        "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, about {eta} left)",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::with_draw_target(Some(len), target)
        .with_style(style)
        .with_prefix(what.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_pipes_hide_the_bar() {
        assert!(bar(10, "x", true).is_hidden());
        // Tests run with stderr captured or piped, never a terminal.
        if !std::io::stderr().is_terminal() {
            assert!(bar(10, "x", false).is_hidden());
        }
    }
}

//! Progress bars of long commands (`p2ps sim …`, `p2ps bench cluster`, `p2ps census`), on
//! stderr: hidden when stderr is not a terminal (a file, a pipe, CI) and when the command
//! prints JSON, so that what scripts read never changes.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How long work may take before a spinner appears: shorter work shows none.
const MOMENT: Duration = Duration::from_millis(500);
/// How often a bar that follows the clock or spins is redrawn.
const TICK: Duration = Duration::from_millis(200);

/// Whether bars are drawn: not for JSON, not when stderr is not a terminal.
fn shown(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A bar of `len` steps named `what`; hidden when `json` or stderr is not a terminal.
pub(crate) fn bar(len: u64, what: &str, json: bool) -> ProgressBar {
    let target = if shown(json) {
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

/// A bar of `secs` seconds named `what` that fills as time passes, for a phase that waits;
/// hidden like [`bar`]. Finish it (or drop it) when the phase ends.
pub(crate) fn timed(secs: u64, what: &str, json: bool) -> ProgressBar {
    let b = bar(secs, what, json);
    if !b.is_hidden() {
        let weak = b.downgrade();
        let start = Instant::now();
        std::thread::spawn(move || {
            while let Some(b) = weak.upgrade() {
                if b.is_finished() {
                    break;
                }
                b.set_position(start.elapsed().as_secs().min(secs));
                drop(b);
                std::thread::sleep(TICK);
            }
        });
    }
    b
}

/// A spinner named `what` for work of unknown length, drawn only once the work has taken
/// longer than a moment ([`MOMENT`]); hidden like [`bar`]. Finish it when the work ends.
pub(crate) fn spinner(what: &str, json: bool) -> ProgressBar {
    let style = ProgressStyle::with_template("{spinner} {prefix} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let s = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        .with_style(style)
        .with_prefix(what.to_string());
    if shown(json) {
        let weak = s.downgrade();
        std::thread::spawn(move || {
            std::thread::sleep(MOMENT);
            if let Some(s) = weak.upgrade() {
                if !s.is_finished() {
                    s.set_draw_target(ProgressDrawTarget::stderr());
                    s.enable_steady_tick(TICK);
                }
            }
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_pipes_hide_the_bar() {
        assert!(bar(10, "x", true).is_hidden());
        assert!(timed(10, "x", true).is_hidden());
        assert!(spinner("x", true).is_hidden());
        // Tests run with stderr captured or piped, never a terminal.
        if !std::io::stderr().is_terminal() {
            assert!(bar(10, "x", false).is_hidden());
            assert!(timed(10, "x", false).is_hidden());
        }
    }
}

//! Log lines and progress bars on one terminal. While bars are drawn, log
//! lines go through them ([`MultiProgress::println`]: above the bars, which
//! are redrawn below), so a warning never tears a bar apart; otherwise they
//! go to stderr as usual. Also the client's bar itself, whose rate reads
//! `1.3/s`, not indicatif's `1.2779/s`.

use std::io::{self, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressState, ProgressStyle};
use tracing_subscriber::fmt::MakeWriter;

/// The client's progress bar for `len` numbers, drawn by `bars`. Added to
/// them before its ticker starts: a bar ticking on its own draws a line of
/// its own on stderr, which stays above the bars as a stale copy.
pub fn progress_bar(bars: &MultiProgress, len: u64) -> ProgressBar {
    let bar = bars.add(ProgressBar::new(len));
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} {rate} eta {eta} {msg}",
    )
    .expect("template is valid")
    .with_key(
        "rate",
        |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&rate(state.per_sec()));
        },
    );
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Numbers per second with at most one decimal: more digits only flicker
/// as the estimate moves.
fn rate(per_sec: f64) -> String {
    // 9.95 and up would print as `10.0`.
    if per_sec >= 9.95 {
        format!("{per_sec:.0}/s")
    } else {
        format!("{per_sec:.1}/s")
    }
}

/// The bars being drawn, if any.
static ACTIVE: Mutex<Option<MultiProgress>> = Mutex::new(None);

/// Log lines go through `bars` until the guard is dropped.
pub fn activate(bars: &MultiProgress) -> Active {
    *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = Some(bars.clone());
    Active(())
}

/// While it lives, log lines go through the bars given to [`activate`].
pub struct Active(());

impl Drop for Active {
    fn drop(&mut self) {
        *ACTIVE.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The writer for `tracing_subscriber`: one per log event.
pub struct LogWriter;

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line(Vec::new())
    }
}

/// One log event's text, written out whole when the event is done.
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        let text = std::mem::take(&mut self.0);
        let bars = ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match bars {
            Some(bars) => {
                let text = String::from_utf8_lossy(&text);
                bars.println(text.trim_end_matches('\n'))
            }
            None => io::stderr().write_all(&text),
        }
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::{InMemoryTerm, ProgressDrawTarget};

    #[test]
    fn the_rate_has_at_most_one_decimal() {
        assert_eq!(rate(1.2779), "1.3/s");
        assert_eq!(rate(0.04), "0.0/s");
        assert_eq!(rate(9.94), "9.9/s");
        assert_eq!(rate(9.96), "10/s");
        assert_eq!(rate(99.51), "100/s");
        assert_eq!(rate(1234.4), "1234/s");
    }

    /// Regression: warnings printed beside the progress bar broke it. With
    /// the bar active, a log line lands above the bar, which stays whole
    /// on its own line below.
    #[test]
    fn log_lines_go_above_an_active_bar() {
        let term = InMemoryTerm::new(10, 60);
        let bars =
            MultiProgress::with_draw_target(ProgressDrawTarget::term_like(Box::new(term.clone())));
        let bar = bars.add(ProgressBar::new(10));
        bar.set_position(3);
        bar.tick();
        {
            let _active = activate(&bars);
            let mut line = LogWriter.make_writer();
            // tracing writes an event in pieces; the line is whole.
            line.write_all(b"WARN stream went ").unwrap();
            line.write_all(b"silent; reconnecting\n").unwrap();
        }
        bar.tick();
        let screen = term.contents();
        let lines: Vec<&str> = screen.lines().collect();
        assert_eq!(
            lines[0], "WARN stream went silent; reconnecting",
            "{screen}"
        );
        assert!(lines[1].contains("3/10"), "{screen}");
        assert!(!ACTIVE.lock().unwrap().is_some(), "the guard deactivates");
    }
}

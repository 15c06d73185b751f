//! Log lines and progress bars on one terminal. While bars are drawn, log
//! lines go through them ([`MultiProgress::println`]: above the bars, which
//! are redrawn below), so a warning never tears a bar apart; otherwise they
//! go to stderr as usual.

use std::io::{self, Write};
use std::sync::Mutex;

use indicatif::MultiProgress;
use tracing_subscriber::fmt::MakeWriter;

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
    use indicatif::{InMemoryTerm, ProgressBar, ProgressDrawTarget};

    /// Issue 13: warnings printed beside the progress bar broke it. With
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

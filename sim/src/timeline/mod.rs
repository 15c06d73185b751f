//! A run drawn as a picture: [`render`] turns one seed's [`Report`] into a
//! self-contained HTML page (inline SVG and CSS; no script, no external
//! resource), to be opened in any browser.
//!
//! - One lane per host: a lane for network-wide faults (when there are
//!   any), each server (with a row per client it streamed to), every
//!   other host seen in the trace (a store host, say), then each client.
//! - Server streams are bars from `Attached` to their last event,
//!   labelled with client, incarnation (its top 16 bits, in hex) and
//!   generation; the numbers they sent are ticks on the bar.
//! - On a client's lane: the stream it held (bar, labelled with the
//!   server and the index it attached at), numbers received above it
//!   (duplicates in orange), acknowledgements below it, connects (○),
//!   failed or silent streams (×), its end (✓ or ✗ with the verdict), and
//!   a dark red line while the fault schedule left it isolated.
//! - Faults are shaded spans with labels: cuts (red), one-way cuts
//!   (purple), holds (amber) on the client's lane and on the server's row
//!   for that client; crashes (grey) over the server's lane; fault rate
//!   and latency changes on the network lane.
//! - Broken invariants are numbered red markers with the text in a
//!   tooltip, listed again under the picture.
//!
//! Everything drawn comes from the [`Report`] (server events, the client
//! reports, the event trace, read by its fields) and the [`Violation`]s
//! (placed at their time, or at the number they are about), so the
//! picture follows the trace as it grows: events of hosts it does not
//! draw otherwise get a lane of their own, named by the host. Ticks
//! closer than a few pixels are merged into one mark whose tooltip gives
//! the range, so a run of minutes and thousands of numbers stays readable
//! and the file stays small.
//!
//! Inside: `model` gathers what is drawn; `draw` (the picture's pieces)
//! and `html` (the page) write it with `maud`, which escapes every value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::invariants::Violation;
use crate::report::Report;
use crate::scenario::Scenario;

mod draw;
mod html;
mod model;

use model::Model;

/// Where the timeline of `seed` of `test` goes: `SIM_TIMELINE` if set,
/// else `sim-timelines/<test>-seed-<seed>.html` in the target directory
/// (`CARGO_TARGET_DIR`, else the `target` directory holding the running
/// test binary, else the system's temporary directory).
pub fn path_for(test: &str, seed: u64) -> PathBuf {
    if let Some(path) = std::env::var_os("SIM_TIMELINE").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let name: String = test
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    target_dir()
        .join("sim-timelines")
        .join(format!("{name}-seed-{seed}.html"))
}

/// Whether `SIM_TIMELINE` asks for a timeline.
pub fn requested() -> bool {
    std::env::var_os("SIM_TIMELINE").is_some_and(|p| !p.is_empty())
}

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|dir| dir.file_name().is_some_and(|n| n == "target"))
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// Writes `html` (from [`render`]) to `path`, creating its directory.
pub fn write(path: &Path, html: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, html)
}

/// The run as a self-contained HTML page.
pub fn render(scenario: &Scenario, report: &Report, violations: &[Violation]) -> String {
    let model = Model::build(scenario, report, violations);
    html::page(scenario, report, &model)
}

/// `12.345 s`: seconds, with milliseconds when there are any.
fn seconds(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.3} s", d.as_secs_f64())
    }
}

/// Cuts `text` to about `chars` characters.
fn clip(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_string();
    }
    let mut s: String = text.chars().take(chars.saturating_sub(1)).collect();
    s.push('…');
    s
}

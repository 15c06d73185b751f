//! The picture's pieces, drawn as SVG with `maud` (which escapes every
//! value put into text or an attribute): the [`Canvas`] and its marks,
//! and what goes on a server row, a client lane or another host's lane.

use std::time::Duration;

use maud::{html, Markup};

use super::model::{ClientLane, Mark, Placed, Span, Stream};
use super::{clip, seconds};

/// Width of the picture, in pixels.
pub(super) const WIDTH: f64 = 1560.0;
/// Left margin holding the lane names.
pub(super) const GUTTER: f64 = 130.0;
/// Right margin.
pub(super) const RIGHT: f64 = 40.0;
/// Height of the time axis at the top.
pub(super) const AXIS: f64 = 28.0;
/// Ticks closer than this many pixels are drawn as one.
pub(super) const BUCKET: f64 = 3.0;
/// Rough width of one character of the 11 px monospace font.
pub(super) const CHAR: f64 = 6.7;
/// Violations listed under the picture, and in one marker's tooltip: a
/// broken run can break a rule at every number.
pub(super) const MAX_LISTED: usize = 200;
pub(super) const MAX_IN_TOOLTIP: usize = 20;
/// One colour per client (cycled).
pub(super) const PALETTE: [&str; 10] = [
    "#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
    "#d62728", "#ff7f0e",
];

/// Heights.
pub(super) const NET_H: f64 = 30.0;
pub(super) const SERVER_H: f64 = 24.0;
pub(super) const ROW_H: f64 = 22.0;
pub(super) const OTHER_H: f64 = 26.0;
pub(super) const CLIENT_H: f64 = 66.0;

/// A coordinate, to a tenth of a pixel.
pub(super) struct Px(pub(super) f64);

impl std::fmt::Display for Px {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1}", self.0)
    }
}

/// The picture's lanes, drawn in order from the top; `svg` holds what is
/// drawn so far.
pub(super) struct Canvas {
    pub(super) svg: String,
    pub(super) end: f64,
}

impl Canvas {
    pub(super) fn x(&self, at: Duration) -> f64 {
        let span = WIDTH - GUTTER - RIGHT;
        GUTTER + (at.as_secs_f64() / self.end).clamp(0.0, 1.0) * span
    }

    pub(super) fn x_end(&self, to: Option<Duration>) -> f64 {
        to.map_or(WIDTH - RIGHT, |t| self.x(t))
    }

    pub(super) fn draw(&mut self, markup: Markup) {
        self.svg.push_str(&markup.into_string());
    }

    pub(super) fn text(&mut self, x: f64, y: f64, class: &str, text: &str) {
        self.draw(text_at(x, y, class, text));
    }

    /// A lane's background, name and a second line under the name.
    pub(super) fn lane(&mut self, host: &str, y: f64, h: f64, odd: bool, note: &str) {
        self.draw(html! {
            g class="lane" data-host=(host) {
                rect class=(if odd { "bg odd" } else { "bg" }) x="0" y=(Px(y)) width=(WIDTH) height=(Px(h)) {}
                (text_at(8.0, y + 15.0, "lanename", host))
                @if !note.is_empty() && h >= 30.0 {
                    (text_at(8.0, y + 28.0, "small", note))
                }
            }
        });
    }

    pub(super) fn span(&mut self, span: &Span, y: f64, h: f64, labelled: bool) {
        let x0 = self.x(span.from);
        let x1 = self.x_end(span.to).max(x0 + 2.0);
        let until = span.to.map_or("the end".into(), seconds);
        self.draw(html! {
            rect class={ "span " (span.class) } x=(Px(x0)) y=(Px(y)) width=(Px(x1 - x0)) height=(Px(h)) {
                title { (span.label) " from " (seconds(span.from)) " to " (until) }
            }
        });
        if labelled {
            // A narrow span's label runs on past it (its tooltip has it all).
            let room = ((x1 - x0 - 4.0).max(20.0 * CHAR) / (CHAR * 0.9)) as usize;
            if room >= 3 {
                let label = clip(&span.label, room);
                let class = format!("spanlabel {}", span.class);
                self.text(x0 + 2.0, y + 9.0, &class, &label);
            }
        }
    }

    pub(super) fn mark(&mut self, mark: &Mark, y: f64) {
        let x = self.x(mark.at);
        self.draw(html! {
            text x=(Px(x)) y=(Px(y)) class={ "mark " (mark.class) } {
                (mark.symbol)
                title { (mark.title) " at " (seconds(mark.at)) }
            }
        });
    }

    /// Ticks for `items` (time, index) from `y` down `h` pixels; ticks
    /// closer than [`BUCKET`] pixels become one wider mark. Tooltips read
    /// `<what> <sigil><index>` (`sent #7`, `ack @8`).
    pub(super) fn ticks(
        &mut self,
        items: &[(Duration, u32)],
        (y, h): (f64, f64),
        class: &str,
        (what, sigil): (&str, char),
    ) {
        let mut i = 0;
        while i < items.len() {
            let bucket = (self.x(items[i].0) / BUCKET).floor();
            let mut j = i + 1;
            while j < items.len() && (self.x(items[j].0) / BUCKET).floor() == bucket {
                j += 1;
            }
            let group = &items[i..j];
            let (t0, first) = group[0];
            let (t1, last) = group[group.len() - 1];
            if group.len() == 1 {
                let x = self.x(t0);
                self.draw(html! {
                    line class={ "tick " (class) } x1=(Px(x)) x2=(Px(x)) y1=(Px(y)) y2=(Px(y + h)) {
                        title { (what) " " (sigil) (first) " at " (seconds(t0)) }
                    }
                });
            } else {
                let x = bucket * BUCKET;
                let (lo, hi) = (first.min(last), first.max(last));
                self.draw(html! {
                    rect class={ "tick agg " (class) } x=(Px(x)) y=(Px(y)) width=(BUCKET) height=(Px(h)) {
                        title {
                            (what) " " (sigil) (lo) "–" (sigil) (hi) ": " (group.len())
                            " between " (seconds(t0)) " and " (seconds(t1))
                        }
                    }
                });
            }
            i = j;
        }
    }
}

pub(super) fn text_at(x: f64, y: f64, class: &str, text: &str) -> Markup {
    html! { text x=(Px(x)) y=(Px(y)) class=(class) { (text) } }
}

pub(super) fn colour(client: Option<usize>) -> &'static str {
    client.map_or("#555555", |c| PALETTE[c % PALETTE.len()])
}

/// A server stream's bar; its label goes inside, or after it if it does
/// not fit and the row is free up to `next` (where the next bar starts).
pub(super) fn stream_bar(c: &mut Canvas, s: &Stream, y: f64, name: &str, next: f64) {
    let x0 = c.x(s.from);
    let x1 = c.x(s.to).max(x0 + 3.0);
    let colour = colour(s.client);
    let inc = format!("{:04x}", s.incarnation >> 48);
    let label = format!("{name} i{inc} g{}", s.generation);
    let first = s.sent.first().map(|(_, n)| *n);
    let last = s.sent.last().map(|(_, n)| *n);
    let title = format!(
        "{name}, session {} (incarnation {}), generation {}, boot {}: attached at {} from #{}; {}{}",
        s.session,
        inc,
        s.generation,
        s.boot,
        seconds(s.from),
        s.next_index,
        match (first, last) {
            (Some(a), Some(b)) => format!("sent #{a}–#{b} until {}", seconds(s.to)),
            _ => "sent nothing".into(),
        },
        if s.completed { "; completed" } else { "" },
    );
    c.draw(html! {
        rect class="stream" x=(Px(x0)) y=(Px(y + 2.0)) width=(Px(x1 - x0)) height=(Px(ROW_H - 4.0))
            style={ "fill:" (colour) ";stroke:" (colour) } {
            title { (title) }
        }
    });
    let room = ((x1 - x0 - 4.0) / CHAR) as usize;
    let text = if s.completed {
        format!("{label} ✓")
    } else {
        label
    };
    let width = text.chars().count() as f64 * CHAR;
    if room >= text.chars().count() {
        c.text(x0 + 3.0, y + 12.0, "barlabel", &text);
    } else if x1 + 4.0 + width < next - 2.0 {
        c.text(x1 + 4.0, y + 12.0, "barlabel", &text);
    } else if room >= 3 {
        c.text(x0 + 3.0, y + 12.0, "barlabel", &clip(&text, room));
    }
    c.ticks(&s.sent, (y + 13.0, ROW_H - 15.0), "sent", ("sent", '#'));
}

/// A client's lane, top to bottom: fault labels and its verdict, numbers
/// received, the stream it holds (with connects and failures on it),
/// acknowledgements, isolation, then violations (drawn by the caller).
pub(super) fn client_lane(c: &mut Canvas, lane: &ClientLane, i: usize, y: f64) {
    const NUMBERS: f64 = 14.0;
    const BAR: f64 = 25.0;
    const ACKS: f64 = 37.0;
    const ISOLATED: f64 = 46.0;
    let colour = colour(Some(i));
    for span in &lane.spans {
        c.span(span, y + 1.0, ISOLATED - 1.0, true);
    }
    for &(from, to) in &lane.isolation {
        let (x0, x1) = (c.x(from), c.x(to));
        c.draw(html! {
            rect class="isolated" x=(Px(x0)) y=(Px(y + ISOLATED)) width=(Px((x1 - x0).max(1.0))) height="3" {
                title {
                    "isolated (no working stream to a running server) from "
                    (seconds(from)) " to " (seconds(to))
                }
            }
        });
    }
    for (from, to, label) in &lane.attached {
        let x0 = c.x(*from);
        let x1 = c.x_end(*to).max(x0 + 2.0);
        c.draw(html! {
            rect class="held" x=(Px(x0)) y=(Px(y + BAR)) width=(Px(x1 - x0)) height="11"
                style={ "fill:" (colour) ";stroke:" (colour) } {
                title {
                    "attached " (label) " from " (seconds(*from)) " to "
                    (to.map_or("the end".into(), seconds))
                }
            }
        });
        let room = ((x1 - x0 - 10.0) / (CHAR * 0.9)) as usize;
        if room >= label.chars().count() {
            c.text(x0 + 7.0, y + BAR + 9.0, "heldlabel", label);
        }
    }
    c.ticks(
        &lane.numbers,
        (y + NUMBERS, 10.0),
        "number",
        ("received", '#'),
    );
    c.ticks(
        &lane.duplicates,
        (y + NUMBERS, 10.0),
        "dup",
        ("received again", '#'),
    );
    c.ticks(&lane.acks, (y + ACKS, 8.0), "ack", ("ack", '@'));
    for mark in &lane.marks {
        c.mark(mark, y + BAR + 10.0);
    }
    if let Some((at, ok, short, long)) = &lane.end {
        let x = c.x(*at);
        let class = if *ok { "ok" } else { "bad" };
        let symbol = if *ok { "✓" } else { "✗" };
        c.draw(html! {
            text x=(Px(x)) y=(Px(y + BAR + 11.0)) class={ "end " (class) } {
                (symbol)
                title { (long) " at " (seconds(*at)) }
            }
        });
        let width = short.chars().count() as f64 * CHAR;
        let lx = if x + 8.0 + width < WIDTH - 2.0 {
            x + 6.0
        } else {
            x - 4.0 - width
        };
        c.text(lx, y + 10.0, &format!("endlabel {class}"), short);
    }
}

/// Ticks for the events of a host drawn by name only; ticks closer than
/// [`BUCKET`] pixels become one, its tooltip giving the first event.
pub(super) fn other_events(c: &mut Canvas, events: &[(Duration, String)], y: f64) {
    let mut i = 0;
    while i < events.len() {
        let bucket = (c.x(events[i].0) / BUCKET).floor();
        let mut j = i + 1;
        while j < events.len() && (c.x(events[j].0) / BUCKET).floor() == bucket {
            j += 1;
        }
        let group = &events[i..j];
        let title = if group.len() == 1 {
            format!("{} at {}", group[0].1, seconds(group[0].0))
        } else {
            format!(
                "{} events from {} to {}, first: {}",
                group.len(),
                seconds(group[0].0),
                seconds(group[group.len() - 1].0),
                group[0].1
            )
        };
        let x = c.x(group[0].0);
        c.draw(html! {
            line class="tick other" x1=(Px(x)) x2=(Px(x)) y1=(Px(y + 5.0)) y2=(Px(y + OTHER_H - 5.0)) {
                title { (title) }
            }
        });
        i = j;
    }
}

/// Numbered red markers at `y`; markers closer than a marker's width
/// become one (`3–7`) whose tooltip lists them all.
pub(super) fn violation_markers(c: &mut Canvas, placed: &[&Placed], y: f64) {
    let mut sorted = placed.to_vec();
    sorted.sort_by_key(|v| (v.at, v.number));
    let mut i = 0;
    while i < sorted.len() {
        let x = c.x(sorted[i].at);
        let mut j = i + 1;
        while j < sorted.len() && c.x(sorted[j].at) - x < 48.0 {
            j += 1;
        }
        let group = &sorted[i..j];
        let label = match group {
            [one] => one.number.to_string(),
            _ => {
                let lo = group.iter().map(|v| v.number).min().unwrap_or_default();
                let hi = group.iter().map(|v| v.number).max().unwrap_or_default();
                format!("{lo}–{hi}")
            }
        };
        let w = (label.chars().count() as f64 * 7.0 + 8.0).max(16.0);
        let mut titles: Vec<String> = group
            .iter()
            .take(MAX_IN_TOOLTIP)
            .map(|v| format!("violation {} at {}: {}", v.number, seconds(v.at), v.text))
            .collect();
        if group.len() > MAX_IN_TOOLTIP {
            titles.push(format!("… and {} more", group.len() - MAX_IN_TOOLTIP));
        }
        c.draw(html! {
            g class="violation" {
                rect x=(Px(x - w / 2.0)) y=(Px(y - 8.0)) width=(Px(w)) height="16" rx="8" {}
                text x=(Px(x)) y=(Px(y + 4.0)) { (label) }
                title { (titles.join("\n")) }
            }
        });
        i = j;
    }
}

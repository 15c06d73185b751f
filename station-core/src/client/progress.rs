//! Progress: numbers taken in order and acknowledged, a stream kept while
//! its server is alive but holds the next number, and the verdict once
//! the session is over.

use std::time::Instant;

use super::backoff::SinceProgress;
use super::{later, Attempt, Client, Number, Outcome, Output, Phase, Verdict};

impl Client {
    /// Handles a `Number` on the current stream.
    pub fn handle_number(&mut self, now: Instant, n: Number) {
        if self.on_attached_stream(now, "Number").is_none() {
            return;
        }
        self.phase = Phase::Streaming {
            last: now,
            look: None,
        };
        self.last_heard = Some(now);
        if n.index < self.next_index {
            return; // A duplicate: we hold it already.
        }
        if n.index > self.next_index {
            return self.protocol_error(
                now,
                format!("expected number {}, got {}", self.next_index, n.index),
            );
        }
        let last = n.index + 1 == self.count;
        if n.checksum.is_some() != last {
            return self.protocol_error(
                now,
                format!("checksum on number {} of {}", n.index, self.count),
            );
        }
        self.protocol_errors = 0;
        self.failures = 0;
        self.since_progress = SinceProgress::default();
        self.last_progress = now;
        if !self.stream_progressed {
            self.stream_progressed = true;
            self.attempt = Some(Attempt::Succeeded);
        }
        self.sum += u64::from(n.value);
        self.crc.push(n.value);
        self.next_index += 1;
        if last {
            self.server_checksum = n.checksum;
            self.finish_complete();
        } else if self.next_index - self.acked >= self.ack_every {
            self.acked = self.next_index;
            self.out.push_back(Output::Ack(self.next_index));
        }
    }

    /// Handles a `Paused` on the current stream: the server holds the
    /// number at `next_index` because its store has not confirmed its
    /// lease. The server and the connection are alive, and resuming
    /// elsewhere would cost that store more, so the stream is kept (the
    /// watchdog starts over, and what we hold is acknowledged, so that the
    /// server hears from us), but the watchdog fires at the latest half the
    /// TTL after a server last proved the session alive (and half the
    /// give-up time after the last new number): the client then resumes
    /// while the session can still be resumed.
    pub fn handle_paused(&mut self, now: Instant, next_index: u32) {
        let Some(last) = self.on_attached_stream(now, "Paused") else {
            return;
        };
        if next_index != self.next_index {
            return self.protocol_error(
                now,
                format!(
                    "server paused at index {next_index}, we expect {}",
                    self.next_index
                ),
            );
        }
        self.hold_on(now, last);
    }

    /// The connection the current stream runs on has carried server
    /// messages for other streams since this one's last: the server is
    /// alive and sending, only late for this stream (it runs behind, under
    /// load). Called when the watchdog is due, it keeps the stream as a
    /// `Paused` would, within the same bounds: a resume costs a loaded
    /// server a store load and a takeover more, and brings the numbers no
    /// sooner. Without such evidence (one stream a connection, or a
    /// connection silent as a whole) the watchdog judges alone.
    pub fn handle_server_busy(&mut self, now: Instant) {
        if let Phase::Streaming { last, .. } = self.phase {
            self.hold_on(now, last);
        }
    }

    /// Keeps the current stream, whose last server message came at `last`:
    /// the watchdog starts over at `now`, within the client's patience,
    /// and what we hold is acknowledged so that the server hears from us.
    pub(super) fn hold_on(&mut self, now: Instant, last: Instant) {
        let Some(heard) = self.last_heard else {
            return;
        };
        // The watchdog moves on to `now + silence`, but never past the end
        // of our patience, so that the resume still finds the session (a
        // server whose renewals fail keeps it until about `ttl − lease`
        // after it was last confirmed), well before the give-up clocks run
        // out.
        let patience =
            (self.ttl.unwrap_or_default() / 2).min(self.cfg.give_up_without_progress / 2);
        let until = later(heard, patience).min(later(self.last_progress, patience));
        let moved = now.min(until.checked_sub(self.silence()).unwrap_or(last));
        if moved <= last {
            return;
        }
        self.phase = Phase::Streaming {
            last: moved,
            look: None,
        };
        // The server waits for no number, but may for an ack of what it
        // sent (we ack every `ack_every`): it would take our silence for a
        // dead client while it holds the next numbers.
        if self.acked < self.next_index {
            self.acked = self.next_index;
            self.out.push_back(Output::Ack(self.next_index));
        }
    }

    /// Every number is held: acknowledge the end and judge the checksum.
    pub(super) fn finish_complete(&mut self) {
        self.acked = self.count;
        self.out.push_back(Output::Ack(self.count));
        let verdict = if self.server_checksum == Some(self.crc.value()) {
            Verdict::Verified
        } else {
            Verdict::ChecksumMismatch
        };
        self.finish(verdict);
    }

    pub(super) fn finish(&mut self, verdict: Verdict) {
        // Holding every number with a checksum decides the outcome even if
        // the session is gone by the time we come back to acknowledge it.
        let verdict = match (self.next_index == self.count, self.server_checksum) {
            (true, Some(c)) if c == self.crc.value() => Verdict::Verified,
            (true, Some(_)) => Verdict::ChecksumMismatch,
            _ => verdict,
        };
        self.phase = Phase::Done;
        self.out.push_back(Output::Finished(Outcome {
            client_id: self.client_id,
            count: self.count,
            received: self.next_index,
            sum: self.sum,
            server_checksum: self.server_checksum,
            client_checksum: self.crc.value(),
            reconnects: self.reconnects,
            verdict,
        }));
    }
}

//! The faults a run can suffer ([`Op`]) and how the harness applies them.

use std::time::Duration;

use super::{Down, Event, Harness, StreamId, Up};
use crate::client::StreamEnd;

/// One fault or stretch of time.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// Let time run.
    Run(Duration),
    /// Reset the client's current stream: both sides are told.
    Drop,
    /// Deliver the next message this much later (later messages of the
    /// same stream and direction queue behind it).
    Delay(Duration),
    /// Deliver the next `Number` twice.
    Duplicate,
    /// Lose the next `Ack`.
    LoseAck,
    /// Lose the next number that carries the checksum.
    LoseFinalNumber,
    /// Lose the next final `Ack`.
    LoseFinalAck,
    /// Cut the network off for this long: open streams go half-open (every
    /// message on them is lost and nobody is told), and connections fail
    /// until it is back.
    Partition(Duration),
    /// The server process dies and restarts at once: every session vanishes
    /// without a word, the client's connection is reset, the (shared) store
    /// keeps its records.
    Crash,
    /// The store answers `Unavailable` to everything for this long.
    StoreOutage(Duration),
}

impl Harness {
    /// Applies one operation.
    pub(crate) fn apply(&mut self, op: &Op) {
        self.log(|| format!("op {op:?}"));
        match op {
            Op::Run(d) => {
                let until = self.now + *d;
                self.run_until(until);
            }
            Op::Drop => {
                if let Some(sid) = self.current {
                    let stream = &self.streams[&sid];
                    if stream.session.is_some() && !stream.broken {
                        self.break_stream(sid);
                        let (a, b) = (self.latency(), self.latency());
                        let reset = StreamEnd::Transport("connection reset".into());
                        self.enqueue(self.now + a, Event::Client(sid, Down::End(reset)));
                        self.enqueue(self.now + b, Event::Server(sid, Up::Closed));
                    }
                }
            }
            Op::Delay(d) => {
                self.faults.delay_next = Some(*d);
                self.longest_delay = self.longest_delay.max(*d);
            }
            Op::Duplicate => self.faults.duplicate_next = true,
            Op::LoseAck => self.faults.lose_ack = true,
            Op::LoseFinalNumber => self.faults.lose_final_number = true,
            Op::LoseFinalAck => self.faults.lose_final_ack = true,
            Op::Partition(d) => {
                self.partition_until = self.partition_until.max(self.now + *d);
                let open: Vec<StreamId> = self
                    .streams
                    .iter()
                    .filter(|(_, s)| s.session.is_some() && !s.broken)
                    .map(|(id, _)| *id)
                    .collect();
                open.into_iter().for_each(|sid| self.break_stream(sid));
            }
            Op::Crash => {
                let ids: Vec<StreamId> = self.streams.keys().copied().collect();
                for sid in ids {
                    if self.streams[&sid].session.is_none() {
                        continue;
                    }
                    let was_open = !self.streams[&sid].broken;
                    self.break_stream(sid);
                    self.streams.get_mut(&sid).expect("listed").session = None;
                    if was_open && self.current == Some(sid) {
                        let after = self.latency();
                        let reset = StreamEnd::Transport("connection reset by peer".into());
                        self.enqueue(self.now + after, Event::Client(sid, Down::End(reset)));
                    }
                }
            }
            Op::StoreOutage(d) => {
                self.store_down_until = self.store_down_until.max(self.now + *d);
            }
        }
        self.settle();
    }

    /// Marks a stream broken and loses everything in flight on it.
    pub(super) fn break_stream(&mut self, sid: StreamId) {
        self.streams.get_mut(&sid).expect("known stream").broken = true;
        self.queue.retain(|_, ev| ev.stream() != sid);
    }
}

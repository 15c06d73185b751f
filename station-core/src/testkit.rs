//! Drives a server [`Stream`] from arbitrary event lists and checks what it
//! says: shared by the fuzz target (`fuzz/`) and the property test, so both
//! hold the machine to the same rules.
//!
//! Inputs are raw and hostile on purpose — ids that are not UUIDs, counts out
//! of range, tokens of the wrong length, acks anywhere, store answers that do
//! not match the question — because the session must turn all of them into
//! errors, never a panic or a wrong number.
//!
//! [`client`] does the same for the client machine, fed hostile servers.

use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

use crate::sequence;
use crate::server::{
    Config, End, Fresh, Lookup, Open, Output, Record, Resume, StoreOp, StoreReply, Stream,
};
use crate::{ClientId, Secret};
// The id every valid event uses.
use fixtures::ID;

pub mod client;
pub mod fixtures;
pub mod invariants;

/// The token of the "live" session the store may claim exists.
const TOKEN: Secret = Secret([0x5a; 16]);

/// One thing that can happen to a server stream. The fuzz target's input.
#[derive(Clone, Debug, Arbitrary)]
pub enum Event {
    /// The client sends `Open`.
    Open {
        /// 0: valid id, 1: empty, 2: not a UUID.
        id: u8,
        /// Requested count, any value.
        count: u32,
        /// Nonce length (0 and 16 are valid).
        nonce_len: u8,
    },
    /// The client sends `Resume`.
    Resume {
        /// 0: valid id, 1: empty, 2: not a UUID.
        id: u8,
        /// Whether the token matches the live session's.
        right_token: bool,
        /// Token length (16 is valid).
        token_len: u8,
        /// Requested next index, any value.
        next_index: u32,
    },
    /// The client sends `Ack`.
    Ack(u32),
    /// The store answers (whatever was asked).
    Store(Answer),
    /// Time passes, then the timer fires.
    Wait(#[arbitrary(with = millis)] Duration),
    /// The client goes away.
    Closed,
    /// The server shuts down.
    Shutdown,
}

/// A store answer, chosen independently of the question.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum Answer {
    /// `Done`.
    Done,
    /// `Conflict`.
    Conflict,
    /// `ExpiredOrReplaced`: a write found the session expired.
    WriteExpiredOrReplaced,
    /// `Vanished`: a write found no record.
    WriteVanished,
    /// `Unavailable`.
    Unavailable,
    /// `Exists` with a live record of this count and nonce byte.
    Exists {
        /// The live record's count.
        count: u32,
        /// Fills its nonce.
        nonce: u8,
    },
    /// `Loaded(Live)` with a record of this count.
    Live {
        /// The live record's count.
        count: u32,
    },
    /// `Loaded(Expired)`.
    Expired,
    /// `Loaded(Missing)`.
    Missing,
}

/// A `Wait` as fuzzed: whole milliseconds up to a `u16`, so most waits are
/// within a few intervals (`run` caps them at a minute anyway).
fn millis(u: &mut Unstructured<'_>) -> arbitrary::Result<Duration> {
    Ok(Duration::from_millis(u64::from(u16::arbitrary(u)?)))
}

/// Feeds `events` to a fresh session and checks every output. Returns a
/// description of the first broken rule. Panics only if the session does.
pub fn run(events: &[Event]) -> Result<(), String> {
    let t0 = Instant::now();
    let mut now = t0;
    let cfg = Config::new(Duration::from_millis(100), Duration::from_secs(3));
    let mut session = Stream::new(cfg, t0);
    let mut check = Checker::default();
    for event in events {
        match event.clone() {
            Event::Open {
                id,
                count,
                nonce_len,
            } => {
                let nonce = vec![7u8; usize::from(nonce_len)];
                let open = Open {
                    client_id: client_id(id),
                    count,
                    nonce: &nonce,
                };
                check.seed = Some(FRESH_SEED);
                session.handle_open(
                    now,
                    open,
                    Fresh {
                        seed: FRESH_SEED,
                        token: TOKEN,
                        incarnation: 1,
                        holder: 2,
                    },
                );
            }
            Event::Resume {
                id,
                right_token,
                token_len,
                next_index,
            } => {
                let token = vec![if right_token { 0x5a } else { 0x11 }; usize::from(token_len)];
                let resume = Resume {
                    client_id: client_id(id),
                    token: &token,
                    next_index,
                };
                let fresh = Fresh {
                    seed: 0,
                    token: Secret::ZERO,
                    incarnation: 0,
                    holder: 3,
                };
                session.handle_resume(now, resume, fresh);
            }
            Event::Ack(n) => session.handle_ack(now, n),
            // Answered whatever was asked, or nothing (an adapter bug the
            // session must survive too).
            Event::Store(answer) => session.handle_store(now, answer.reply(&mut check)),
            Event::Wait(d) => {
                now += d.min(Duration::from_secs(60));
                session.handle_timeout(now);
            }
            Event::Closed => session.handle_closed(now),
            Event::Shutdown => session.begin_shutdown(now),
        }
        while let Some(out) = session.poll_output() {
            check.output(&out)?;
        }
        if let Some(at) = session.poll_timeout() {
            if at < t0 {
                return Err(format!("deadline {at:?} before the stream began"));
            }
        }
    }
    Ok(())
}

/// Seed the "fresh" randomness gives new sessions.
const FRESH_SEED: u64 = 0xf00d;
/// Seed of the live record the store may return.
const LIVE_SEED: u64 = 0xbeef;

fn client_id(kind: u8) -> &'static str {
    match kind % 3 {
        0 => ID,
        1 => "",
        _ => "67e55044-10b1-426f-9247-bb680e5fe0cZ",
    }
}

impl Answer {
    fn reply(self, check: &mut Checker) -> StoreReply {
        let live = |count: u32, nonce: u8| Record {
            client_id: ClientId::parse(ID).expect("valid id"),
            token: TOKEN,
            nonce: Secret([nonce; 16]),
            seed: LIVE_SEED,
            count,
            acked: 0,
            generation: 3,
            incarnation: 1,
            holder: 2,
        };
        match self {
            Answer::Done => StoreReply::Done,
            Answer::Conflict => StoreReply::Conflict,
            Answer::WriteExpiredOrReplaced => StoreReply::ExpiredOrReplaced,
            Answer::WriteVanished => StoreReply::Vanished,
            Answer::Unavailable => StoreReply::Unavailable("fuzzed".into()),
            Answer::Exists { count, nonce } => {
                // If the session attaches to this record, its numbers follow
                // the record's seed.
                check.alternate_seed = Some(LIVE_SEED);
                StoreReply::Exists(live(count, nonce))
            }
            Answer::Live { count } => {
                check.seed = Some(LIVE_SEED);
                StoreReply::Loaded(Lookup::Live(live(count, 0)))
            }
            Answer::Expired => StoreReply::Loaded(Lookup::Expired),
            Answer::Missing => StoreReply::Loaded(Lookup::Missing),
        }
    }
}

/// The rules every session output stream obeys.
#[derive(Default)]
struct Checker {
    ended: bool,
    released: bool,
    attached: Option<(u32, u32)>,
    next: u32,
    seed: Option<u64>,
    alternate_seed: Option<u64>,
}

impl Checker {
    fn output(&mut self, out: &Output) -> Result<(), String> {
        if self.ended {
            // The one output allowed after the end: the release, a write
            // (or the delete) of the stream's own generation.
            let own = match out {
                Output::Store(StoreOp::Update {
                    record,
                    expect_generation,
                    ..
                }) => record.generation == *expect_generation,
                Output::Store(StoreOp::Delete { .. }) => true,
                _ => false,
            };
            if !own || self.released {
                return Err(format!("output after End: {out:?}"));
            }
            self.released = true;
            return Ok(());
        }
        match out {
            Output::Store(_) => {}
            Output::Attached(a) => {
                if self.attached.is_some() {
                    return Err("Attached twice".into());
                }
                if a.next_index > a.count || a.count == 0 || a.count > sequence::MAX_COUNT {
                    return Err(format!("Attached out of range: {a:?}"));
                }
                self.attached = Some((a.count, a.next_index));
                self.next = a.next_index;
            }
            Output::Send(n) => {
                let Some((count, _)) = self.attached else {
                    return Err(format!("number before Attached: {n:?}"));
                };
                if n.index != self.next || n.index >= count {
                    return Err(format!(
                        "number {} out of order (expected {})",
                        n.index, self.next
                    ));
                }
                let seeds = [self.seed, self.alternate_seed];
                let matching = seeds
                    .into_iter()
                    .flatten()
                    .find(|&s| sequence::value(s, n.index) == n.value);
                let Some(seed) = matching else {
                    return Err(format!("number {} has a value from no known seed", n.index));
                };
                let last = n.index + 1 == count;
                let want = last.then(|| sequence::checksum(seed, count));
                if n.checksum != want {
                    return Err(format!(
                        "checksum {:?} on number {} of {count}",
                        n.checksum, n.index
                    ));
                }
                self.next += 1;
            }
            Output::Paused { next_index } => {
                let Some((count, _)) = self.attached else {
                    return Err(format!("Paused before Attached (next {next_index})"));
                };
                if *next_index != self.next || *next_index >= count {
                    return Err(format!(
                        "Paused at {next_index}, but the next number is {} of {count}",
                        self.next
                    ));
                }
            }
            Output::End(end) => {
                self.ended = true;
                if matches!(end, End::Completed { .. }) && self.attached.is_none() {
                    return Err("completed without attaching".into());
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the fuzzer: a store record with an impossible count was
    /// attached as is.
    #[test]
    fn implausible_store_records_end_the_stream() {
        let events = [
            Event::Resume {
                id: 255,
                right_token: true,
                token_len: 16,
                next_index: 1_869_555_311,
            },
            Event::Store(Answer::Live {
                count: 2_610_670_319,
            }),
            Event::Store(Answer::Done),
        ];
        assert_eq!(run(&events), Ok(()));
    }

    /// The fuzzer's saved input, decoded as the fuzz target decodes it
    /// (with the derived `Arbitrary`), still passes.
    #[test]
    fn the_saved_fuzz_input_passes() {
        let bytes =
            include_bytes!("../../fuzz/regressions/crash-657d0cfde29d1431614e0d5ea28d79a24a5c28f7");
        let events = Vec::<Event>::arbitrary_take_rest(Unstructured::new(bytes)).unwrap();
        assert!(!events.is_empty());
        assert_eq!(run(&events), Ok(()));
    }

    #[test]
    fn a_plain_session_passes_the_checks() {
        let events = [
            Event::Open {
                id: 0,
                count: 3,
                nonce_len: 16,
            },
            Event::Store(Answer::Done),
            Event::Ack(1),
            Event::Wait(Duration::from_millis(100)),
            Event::Store(Answer::Done),
            Event::Ack(2),
            Event::Wait(Duration::from_millis(100)),
            Event::Store(Answer::Done),
            Event::Ack(3),
            Event::Store(Answer::Done),
        ];
        assert_eq!(run(&events), Ok(()));
    }
}

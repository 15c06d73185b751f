//! Drives a [`Client`] from arbitrary server events and checks what it
//! does: shared by the client fuzz target (`fuzz/`) and the property test,
//! so both hold the machine to the same rules.
//!
//! The events are what a hostile or broken server can send: `Attached` with
//! any count, index, token length, TTL, interval and `ack_every`; numbers
//! out of order, duplicated, beyond the count, with wrong values, with the
//! checksum missing, wrong or misplaced; any status (any code, any reason,
//! any pushback); and time jumping anywhere. The client must handle each one
//! or call it a protocol error — never panic, never loop, never claim a
//! sequence it does not hold.

use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};

use crate::client::{
    Attached, Client, Code, Config, Decision, Number, Output, Request, RetryBudget, StreamEnd,
    Verdict,
};
use crate::sequence::{self, RunningChecksum};
use crate::testkit::invariants;
use crate::{ClientId, Reason, Secret};

/// The seed of the "real" sequence; values from elsewhere are wrong.
const SEED: u64 = 0x5eed;
/// Bytes of the token a valid `Attached` carries.
const TOKEN: u8 = 0x42;

/// One thing a server (or the network, or time) can do to the client. The
/// fuzz target's input.
#[derive(Clone, Debug, Arbitrary)]
pub enum Event {
    /// `Attached` on the current stream.
    Attached {
        /// The count: the one asked for, or any other.
        count: Count,
        /// The index the stream starts at.
        next_index: Index,
        /// Length of the resume token (16 is valid).
        token_len: u8,
        /// Announced session TTL, any value.
        #[arbitrary(with = duration)]
        ttl: Duration,
        /// Announced interval, any value.
        #[arbitrary(with = duration)]
        interval: Duration,
        /// Announced `ack_every`, any value.
        ack_every: u32,
    },
    /// A `Number` on the current stream.
    Number {
        /// Its index.
        index: Index,
        /// Whether its value is the sequence's (else an arbitrary one).
        true_value: bool,
        /// Its checksum field.
        checksum: Checksum,
    },
    /// A `Paused` on the current stream.
    Paused {
        /// The index it names.
        next_index: Index,
    },
    /// The stream ends with a status.
    Status {
        /// gRPC code number, taken modulo 17.
        code: u8,
        /// Index into [`Reason::ALL`]; out of range means no reason.
        reason: u8,
        /// Pushback, any value.
        #[arbitrary(with = optional_duration)]
        retry_after: Option<Duration>,
    },
    /// The stream ends with OK (too early: the client has not finished).
    EndOk,
    /// The connection breaks.
    Transport,
    /// The server's bytes break the protocol below the message level (an
    /// undecodable or oversized message).
    Protocol,
    /// Time jumps by this much, then the timer is checked.
    Wait(#[arbitrary(with = duration)] Duration),
    /// Time jumps to exactly the client's next deadline, which fires.
    Timeout,
}

/// The count in an `Attached`.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum Count {
    /// The count the client asked for.
    Asked,
    /// Any other.
    Other(u32),
}

/// An index in a server message.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum Index {
    /// The one the client expects next.
    Expected,
    /// The expected one plus this (wrapping): behind, ahead, anywhere.
    Offset(i32),
    /// Exactly this.
    Exactly(u32),
}

/// The checksum field of a number.
#[derive(Clone, Copy, Debug, Arbitrary)]
pub enum Checksum {
    /// The right checksum if the number is the last, none otherwise: as a
    /// correct server sends it.
    Proper,
    /// None, even on the last number.
    Missing,
    /// The sequence's real checksum, on whatever number this is.
    Real,
    /// This value, on whatever number this is.
    Value(u32),
}

/// A duration as (seconds, nanoseconds): any value a decoded
/// `google.protobuf.Duration` can become.
fn duration(u: &mut Unstructured<'_>) -> arbitrary::Result<Duration> {
    let (secs, nanos) = <(u64, u32)>::arbitrary(u)?;
    Ok(Duration::new(secs, nanos % 1_000_000_000))
}

/// [`duration`], or none.
fn optional_duration(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<Duration>> {
    Ok(if bool::arbitrary(u)? {
        Some(duration(u)?)
    } else {
        None
    })
}

/// The settings the client runs with: the defaults, so the checks speak of
/// the configuration users get.
fn config() -> Config {
    Config::default()
}

/// Feeds `events` to a new client asking for `count` numbers and checks
/// every output. Returns a description of the first broken rule. Panics
/// only if the client does.
pub fn run(count: u32, events: &[Event]) -> Result<(), String> {
    let t0 = Instant::now();
    let mut now = t0;
    let id = ClientId::from_random_bytes([3; 16]);
    let Ok(mut client) = Client::new(t0, config(), id, count, 7) else {
        // An invalid count is refused up front; nothing more to check.
        return if (1..=sequence::MAX_COUNT).contains(&count) {
            Err(format!("count {count} refused"))
        } else {
            Ok(())
        };
    };
    let mut check = Checker::new(count);
    let mut budget = RetryBudget::new();
    budget.join();
    check.drain(&mut client, now)?;
    for event in events {
        match event.clone() {
            Event::Attached {
                count: c,
                next_index,
                token_len,
                ttl,
                interval,
                ack_every,
            } => {
                let token = vec![TOKEN; usize::from(token_len)];
                let a = Attached {
                    count: match c {
                        Count::Asked => count,
                        Count::Other(n) => n,
                    },
                    next_index: next_index.resolve(client.received()),
                    token: &token,
                    ttl,
                    interval,
                    ack_every,
                };
                client.handle_attached(now, a);
            }
            Event::Number {
                index,
                true_value,
                checksum,
            } => {
                let index = index.resolve(client.received());
                let value = if true_value {
                    sequence::value(SEED, index)
                } else {
                    sequence::value(SEED ^ 1, index)
                };
                let checksum = match checksum {
                    Checksum::Proper => (index.checked_add(1) == Some(count))
                        .then(|| sequence::checksum(SEED, count)),
                    Checksum::Missing => None,
                    Checksum::Real => Some(sequence::checksum(SEED, count)),
                    Checksum::Value(v) => Some(v),
                };
                let before = client.received();
                client.handle_number(
                    now,
                    Number {
                        index,
                        value,
                        checksum,
                    },
                );
                check.number(before, client.received(), index, value)?;
            }
            Event::Paused { next_index } => {
                let next_index = next_index.resolve(client.received());
                let before = client.received();
                client.handle_paused(now, next_index);
                if client.received() != before {
                    return Err(format!(
                        "a Paused changed what is held: {before} → {}",
                        client.received()
                    ));
                }
            }
            Event::Status {
                code,
                reason,
                retry_after,
            } => {
                let code = code_of(code % 17);
                let reason = Reason::ALL.get(usize::from(reason)).copied();
                check.final_end = Some(!reason.map_or(code.is_retryable(), Reason::is_retryable));
                check.said_expired = reason == Some(Reason::SessionExpired);
                client.handle_end(
                    now,
                    StreamEnd::Status {
                        code,
                        message: "fuzzed".into(),
                        reason,
                        retry_after,
                    },
                );
            }
            Event::EndOk => client.handle_end(now, StreamEnd::Ok),
            Event::Transport => client.handle_end(now, StreamEnd::Transport("fuzzed".into())),
            Event::Protocol => client.handle_end(now, StreamEnd::Protocol("fuzzed".into())),
            Event::Wait(d) => {
                const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
                now = now
                    .checked_add(d)
                    .or_else(|| now.checked_add(FAR))
                    .unwrap_or(now);
                client.handle_timeout(now);
            }
            Event::Timeout => {
                if let Some(at) = client.poll_timeout() {
                    if at < now {
                        return Err(format!("deadline {:?} in the past", now - at));
                    }
                    now = at;
                    client.handle_timeout(now);
                    check.fired = Some(at);
                }
            }
        }
        // The adapter's retry budget, kept as `station-net` keeps it (one
        // session's A6 bucket: it throttles after five failures, so the
        // throttled path is taken often). Throttling only ever delays.
        if let Some(attempt) = client.poll_attempt() {
            if budget.record(attempt) == Decision::Throttle {
                let before = client.poll_timeout();
                client.handle_throttled(now);
                if client.poll_timeout() < before {
                    return Err(format!(
                        "throttling brought the next attempt forward: {before:?} -> {:?}",
                        client.poll_timeout()
                    ));
                }
            }
        }
        check.drain(&mut client, now)?;
    }
    Ok(())
}

impl Index {
    fn resolve(self, expected: u32) -> u32 {
        match self {
            Index::Expected => expected,
            Index::Offset(d) => expected.wrapping_add_signed(d),
            Index::Exactly(n) => n,
        }
    }
}

fn code_of(n: u8) -> Code {
    const CODES: [Code; 17] = [
        Code::Ok,
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];
    CODES[usize::from(n) % CODES.len()]
}

/// The rules every client output stream obeys.
struct Checker {
    count: u32,
    finished: bool,
    /// What the client accepted, as we saw it.
    sum: u64,
    crc: RunningChecksum,
    accepted: u32,
    /// Whether every accepted number had its true value.
    all_true: bool,
    /// Highest ack on the current stream.
    acked: u32,
    /// Whether the last status ended the stream for good (by the table).
    final_end: Option<bool>,
    /// Whether the last status said `SESSION_EXPIRED`.
    said_expired: bool,
    /// A deadline that just fired: the client must move on from it.
    fired: Option<Instant>,
}

impl Checker {
    fn new(count: u32) -> Self {
        Checker {
            count,
            finished: false,
            sum: 0,
            crc: RunningChecksum::new(),
            accepted: 0,
            all_true: true,
            acked: 0,
            final_end: None,
            said_expired: false,
            fired: None,
        }
    }

    /// A number went in: the client took at most it, in order.
    fn number(&mut self, before: u32, after: u32, index: u32, value: u32) -> Result<(), String> {
        if !invariants::accepted_step(before, after, index, self.count)? {
            return Ok(());
        }
        self.accepted = after;
        self.sum += u64::from(value);
        self.crc.push(value);
        self.all_true &= value == sequence::value(SEED, index);
        Ok(())
    }

    fn drain(&mut self, client: &mut Client, now: Instant) -> Result<(), String> {
        let fired = self.fired.take();
        let mut any = false;
        while let Some(out) = client.poll_output() {
            any = true;
            self.output(&out)?;
        }
        if client.received() != self.accepted {
            return Err(format!(
                "holds {} numbers, accepted {}",
                client.received(),
                self.accepted
            ));
        }
        match (client.poll_timeout(), self.finished) {
            (None, false) => return Err("no deadline while running: it would hang".into()),
            (Some(at), true) => return Err(format!("deadline {at:?} after finishing")),
            (Some(at), false) if at < now => {
                return Err(format!("deadline {:?} in the past", now - at))
            }
            (Some(at), false) if fired == Some(at) && !any => {
                return Err("a deadline fired and changed nothing: a livelock".into())
            }
            _ => {}
        }
        Ok(())
    }

    fn output(&mut self, out: &Output) -> Result<(), String> {
        if self.finished {
            return Err(format!("output after Finished: {out:?}"));
        }
        match out {
            Output::Connect(request) => {
                self.acked = self.accepted;
                self.final_end = None;
                self.said_expired = false;
                match *request {
                    Request::Open { count, .. } if count != self.count => {
                        return Err(format!("Open for {count}, asked {}", self.count))
                    }
                    Request::Open { .. } => {}
                    Request::Resume {
                        token, next_index, ..
                    } => {
                        if token != Secret([TOKEN; 16]) {
                            return Err(format!("Resume with a token never attached: {token:?}"));
                        }
                        if next_index != self.accepted {
                            return Err(format!(
                                "Resume at {next_index}, holding {}",
                                self.accepted
                            ));
                        }
                    }
                }
            }
            Output::Ack(n) => {
                if *n > self.accepted || *n < self.acked {
                    return Err(format!(
                        "Ack({n}) holding {} after Ack({})",
                        self.accepted, self.acked
                    ));
                }
                self.acked = *n;
            }
            Output::Disconnect => {}
            Output::Finished(o) => {
                self.finished = true;
                if (o.sum, o.client_checksum, o.received)
                    != (self.sum, self.crc.value(), self.accepted)
                {
                    return Err(format!("outcome is not what it accepted: {o:?}"));
                }
                let complete = o.received == self.count && o.server_checksum.is_some();
                match &o.verdict {
                    Verdict::Verified if !invariants::verified(self.count, o, None) => {
                        return Err(format!("verified without the sequence: {o:?}"));
                    }
                    // Wrong values that give the right CRC would be a flaw of
                    // this generator, not of the client: report it anyway.
                    Verdict::Verified if !self.all_true => {
                        return Err(format!("verified wrong values: {o:?}"));
                    }
                    Verdict::ChecksumMismatch
                        if !complete || o.server_checksum == Some(o.client_checksum) =>
                    {
                        return Err(format!("mismatch without a mismatch: {o:?}"));
                    }
                    Verdict::Verified | Verdict::ChecksumMismatch => {}
                    other if complete => {
                        return Err(format!("holds everything but says {other:?}"));
                    }
                    // A rejection only ever follows a status the retry
                    // table calls final.
                    Verdict::Rejected { .. } if self.final_end != Some(true) => {
                        return Err(format!("rejected without a final status: {o:?}"));
                    }
                    // Only a server may say the session expired.
                    Verdict::Expired(_) if !self.said_expired => {
                        return Err(format!("expired, but no server said so: {o:?}"));
                    }
                    // Expired (a server's SESSION_EXPIRED), LikelyExpired and
                    // Unreachable (out of time), ProtocolError.
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(ttl: Duration, interval: Duration) -> Event {
        Event::Attached {
            count: Count::Asked,
            next_index: Index::Expected,
            token_len: 16,
            ttl,
            interval,
            ack_every: 1,
        }
    }

    fn number() -> Event {
        Event::Number {
            index: Index::Expected,
            true_value: true,
            checksum: Checksum::Proper,
        }
    }

    #[test]
    fn a_plain_session_passes_the_checks() {
        let sec = Duration::from_secs(1);
        let mut events = vec![attached(sec * 30, sec)];
        events.extend((0..5).map(|_| number()));
        assert_eq!(run(5, &events), Ok(()));
    }

    /// Reproduces a client panic (now fixed): durations of
    /// 2^62 s in `Attached`.
    #[test]
    fn huge_announced_durations_are_survived() {
        let huge = Duration::from_secs(1 << 62);
        let sec = Duration::from_secs(1);
        for (ttl, interval) in [(huge, sec), (sec, huge), (huge, huge)] {
            let events = [
                attached(ttl, interval),
                number(),
                Event::Transport,
                Event::Timeout,
                Event::Wait(huge),
                Event::Timeout,
            ];
            assert_eq!(run(3, &events), Ok(()));
        }
    }

    #[test]
    fn wrong_values_are_a_checksum_mismatch() {
        // Were they verified, the checker would say so.
        let events = [
            attached(Duration::from_secs(30), Duration::from_secs(1)),
            Event::Number {
                index: Index::Expected,
                true_value: false,
                checksum: Checksum::Proper,
            },
        ];
        assert_eq!(run(1, &events), Ok(()));
    }
}

//! The final number or the final acknowledgement is lost. The client still
//! completes; the session is deleted on the acknowledgement, or (if that
//! was lost) expires.

use std::ops::Range;
use std::time::Duration;

use sim::{sweep, test_path, Action, Expect, Fault, RecordFate, Scenario, SimRng, When};

use crate::common::{clients, secs, SEC};

/// What the network drops at the end of a session.
#[derive(Clone, Copy, Debug)]
pub enum Lost {
    /// The server hands the final number to the network, and the network
    /// drops it: the client asks again, so the session ends with the
    /// acknowledgement of the number resent.
    FinalNumber,
    /// The client receives the final number and acknowledges it; the
    /// network drops the acknowledgement: the server never learns the
    /// session is done and leaves it to expire.
    FinalAck,
}

impl Lost {
    fn scenario_name(self) -> &'static str {
        match self {
            Lost::FinalNumber => "final message lost",
            Lost::FinalAck => "final ack lost",
        }
    }

    /// The moment the link of `client` is cut: as its number `index` is
    /// sent, or as it is received.
    fn when(self, client: usize, index: u32) -> When {
        let delay = Duration::ZERO;
        match self {
            Lost::FinalNumber => When::Sent {
                client,
                index,
                delay,
            },
            Lost::FinalAck => When::Received {
                client,
                index,
                delay,
            },
        }
    }

    /// How long the cut lasts (the ranges the two scenarios always drew
    /// from; changing them would change every seed's scenario).
    fn heal_after(self) -> Range<Duration> {
        match self {
            Lost::FinalNumber => SEC..secs(20),
            Lost::FinalAck => SEC..secs(10),
        }
    }

    /// What becomes of the session of a client cut off at the end.
    fn record_fate(self) -> RecordFate {
        match self {
            Lost::FinalNumber => RecordFate::DeletedOnAck,
            Lost::FinalAck => RecordFate::LeftToExpire,
        }
    }

    /// What becomes of the session of a client left alone. The two
    /// scenarios were written with different expectations here (`Any`
    /// for a lost number, `DeletedOnAck` for a lost acknowledgement);
    /// both are kept as they were so the checks stay exactly the same.
    fn untouched(self) -> RecordFate {
        match self {
            Lost::FinalNumber => RecordFate::Any,
            Lost::FinalAck => RecordFate::DeletedOnAck,
        }
    }
}

/// Up to three clients; client 0, and each other one with even odds, has
/// its link cut as `lost` is on the wire, healed one to 20 (or 10) seconds
/// later. The draws from `seed` come in the same order for both kinds, as
/// they did when these were two builders, so a seed gives the same
/// scenario (and trace) as before.
pub fn final_lost(lost: Lost, seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let n = 1 + rng.below(3);
    let mut s = Scenario::new(
        lost.scenario_name(),
        clients(
            &mut rng,
            n,
            2..20,
            Duration::ZERO..secs(3),
            Expect::Complete,
        ),
    );
    for c in 0..n {
        if c == 0 || rng.chance(0.5) {
            let last = s.clients[c].count - 1;
            let when = lost.when(c, last);
            cut(&mut s, c, when, rng.millis(lost.heal_after()));
            s.clients[c].record_fate = lost.record_fate();
        } else {
            s.clients[c].record_fate = lost.untouched();
        }
    }
    s
}

/// Cuts `client` off when `when` fires and heals it `heal_after` later.
fn cut(s: &mut Scenario, client: usize, when: When, heal_after: Duration) {
    let fault = s.faults.len();
    s.faults.push(Fault {
        when,
        action: Action::Cut {
            client,
            servers: vec![0],
        },
    });
    s.faults.push(Fault {
        when: When::After {
            fault,
            delay: heal_after,
        },
        action: Action::Heal {
            client,
            servers: vec![0],
        },
    });
}

/// [`final_lost`] with the final number lost (a builder for sweeps and
/// the broken-variant tests).
pub fn final_message_lost(seed: u64) -> Scenario {
    final_lost(Lost::FinalNumber, seed)
}

/// [`final_lost`] with the final acknowledgement lost.
pub fn final_ack_lost(seed: u64) -> Scenario {
    final_lost(Lost::FinalAck, seed)
}

#[test]
fn final_message_lost_still_completes_and_deletes_on_ack() {
    sweep(
        &test_path!("final_message_lost_still_completes_and_deletes_on_ack"),
        100,
        final_message_lost,
    );
}

#[test]
fn final_ack_lost_still_completes_and_the_session_expires() {
    sweep(
        &test_path!("final_ack_lost_still_completes_and_the_session_expires"),
        100,
        final_ack_lost,
    );
}

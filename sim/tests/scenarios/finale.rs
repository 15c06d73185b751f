//! The final number or the final acknowledgement is lost. The client still
//! completes; the session is deleted on the acknowledgement, or (if that
//! was lost) expires.

use std::time::Duration;

use sim::{sweep, test_path, Action, Expect, Fault, Finale, Scenario, SimRng, When};

use crate::common::{clients, secs, SEC};

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

pub fn final_message_lost(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let n = 1 + rng.below(3);
    let mut s = Scenario::new(
        "final message lost",
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
            // The server hands the final number to the network, and the
            // network drops it.
            let last = s.clients[c].count - 1;
            let when = When::Sent {
                client: c,
                index: last,
                delay: Duration::ZERO,
            };
            cut(&mut s, c, when, rng.millis(SEC..secs(20)));
            s.clients[c].finale = Finale::DeletedOnAck;
        }
    }
    s
}

pub fn final_ack_lost(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let n = 1 + rng.below(3);
    let mut s = Scenario::new(
        "final ack lost",
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
            // The client receives the final number and acknowledges it; the
            // network drops the acknowledgement.
            let last = s.clients[c].count - 1;
            let when = When::Received {
                client: c,
                index: last,
                delay: Duration::ZERO,
            };
            cut(&mut s, c, when, rng.millis(SEC..secs(10)));
            s.clients[c].finale = Finale::LeftToExpire;
        } else {
            s.clients[c].finale = Finale::DeletedOnAck;
        }
    }
    s
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

//! Partitions and repairs between clients and the server, every outage
//! well under the TTL: every client completes with the exact sequence.
//!
//! Outages are full cuts, one-way cuts (acknowledgements or numbers lost)
//! and stalls (everything held, then delivered late), up to three per
//! client, at random times.

use std::time::Duration;

use sim::{sweep, test_path, Expect, Scenario, SimRng};

use crate::common::{clients, secs, Outages, MIN_GAP, SEC};

/// Longest outage: the TTL less what the client may lose on either side
/// of it — one interval before the cut (the server counts from the first
/// number it sent without hearing back), and up to 5 s after the repair
/// (the backoff cap, or the attach timeout of a resume sent on a
/// half-dead connection) plus a connection setup — with a second to
/// spare. Longer cut-offs may legitimately expire (see `expiry`).
pub const MAX_SHORT_OUTAGE: Duration = Duration::from_secs(30 - 1 - 5 - 2);

pub fn short_outages(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    let n = 2 + rng.below(3);
    let mut s = Scenario::new(
        "short outages",
        clients(
            &mut rng,
            n,
            20..60,
            Duration::ZERO..secs(3),
            Expect::Complete,
        ),
    );
    for c in 0..n {
        add_short_outages(&mut rng, &mut s, c, 3);
    }
    s
}

/// Appends up to `max` outages of client `c`'s link to server 0, each
/// shorter than [`MAX_SHORT_OUTAGE`], at least [`MIN_GAP`] apart, while it
/// streams (from a second after its start until its last number is due).
/// Also the clients that are not cut off for good in `expiry`.
pub fn add_short_outages(rng: &mut SimRng, s: &mut Scenario, c: usize, max: usize) {
    let (start, count) = (s.clients[c].start, s.clients[c].count);
    let outages = Outages {
        max,
        length: SEC..MAX_SHORT_OUTAGE,
        gap: MIN_GAP..MIN_GAP + secs(12),
    };
    outages.add(
        rng,
        &mut s.faults,
        c,
        &[0],
        start + SEC..start + SEC * count,
    );
}

#[test]
fn short_outages_complete() {
    sweep(&test_path!("short_outages_complete"), 150, short_outages);
}

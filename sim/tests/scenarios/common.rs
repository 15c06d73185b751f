//! Helpers shared by the scenario builders.

use std::time::Duration;

use sim::{Action, ClientPlan, Expect, Fault, SimRng, When};

pub const SEC: Duration = Duration::from_secs(1);

/// Shortest time between two outages of one client, so that it surely has
/// a working stream again in between. turmoil's TCP does not retransmit:
/// after any drop a connection is dead for good, even once the link is
/// repaired, and the client must notice and reconnect. The worst case is
/// a one-way cut of the acknowledgements: the server gives up on the
/// stream 5 s after the first unacknowledged number (its silence
/// timeout), the client's resume on the same half-dead connection waits 5 s
/// for `Attached` (attach timeout), then a new connection is made — about
/// 11 s after the cut began.
pub const MIN_GAP: Duration = Duration::from_secs(12);

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `n` clients with counts in `counts` starting within `start`.
pub fn clients(
    rng: &mut SimRng,
    n: usize,
    counts: std::ops::Range<u32>,
    start: std::ops::Range<Duration>,
    expect: Expect,
) -> Vec<ClientPlan> {
    (0..n)
        .map(|_| {
            ClientPlan::new(
                rng.range_u32(counts.clone()),
                rng.millis(start.clone()),
                expect,
            )
        })
        .collect()
}

/// How a link fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outage {
    /// Both directions drop everything.
    Cut,
    /// Only one direction drops (acknowledgements, or numbers).
    Oneway { upstream: bool },
    /// Everything is held and delivered late.
    Stall,
}

impl Outage {
    /// Mostly cuts, sometimes one-way cuts or stalls.
    pub fn random(rng: &mut SimRng) -> Self {
        match rng.below(8) {
            0 | 1 => Outage::Stall,
            2 => Outage::Oneway { upstream: true },
            3 => Outage::Oneway { upstream: false },
            _ => Outage::Cut,
        }
    }
}

/// Appends an outage of `client`'s links to `servers` from `at` for
/// `length`.
pub fn outage(
    faults: &mut Vec<Fault>,
    client: usize,
    servers: Vec<usize>,
    at: Duration,
    length: Duration,
    kind: Outage,
) {
    let (down, up) = match kind {
        Outage::Stall => (
            Action::Hold {
                client,
                servers: servers.clone(),
            },
            Action::Release { client, servers },
        ),
        Outage::Oneway { upstream } => (
            Action::CutOneway {
                client,
                servers: servers.clone(),
                upstream,
            },
            Action::HealOneway {
                client,
                servers,
                upstream,
            },
        ),
        Outage::Cut => (
            Action::Cut {
                client,
                servers: servers.clone(),
            },
            Action::Heal { client, servers },
        ),
    };
    faults.push(Fault {
        when: When::At(at),
        action: down,
    });
    faults.push(Fault {
        when: When::At(at + length),
        action: up,
    });
}

/// A pattern of random outages.
pub struct Outages {
    /// At most this many per client.
    pub max: usize,
    /// Each this long.
    pub length: std::ops::Range<Duration>,
    /// Separated by this much (at least [`MIN_GAP`]).
    pub gap: std::ops::Range<Duration>,
}

impl Outages {
    /// Appends random outages of `client`'s links to `servers` during
    /// `[from, to)`.
    pub fn add(
        &self,
        rng: &mut SimRng,
        faults: &mut Vec<Fault>,
        client: usize,
        servers: &[usize],
        during: std::ops::Range<Duration>,
    ) {
        let mut at = during.start + rng.millis(Duration::ZERO..self.gap.end);
        for _ in 0..rng.below(self.max + 1) {
            if at >= during.end {
                break;
            }
            let len = rng.millis(self.length.clone());
            let kind = Outage::random(rng);
            outage(faults, client, servers.to_vec(), at, len, kind);
            at += len + rng.millis(self.gap.clone());
        }
    }
}

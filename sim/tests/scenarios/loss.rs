//! Packet loss and latency spikes on long sequences.
//!
//! turmoil's `fail_rate` breaks a link at a random message (dropping what
//! is in flight) until a later message repairs it; its TCP does not
//! retransmit, so every break kills the connections across the link and
//! the client must notice and resume. Latency spikes and short stalls
//! (hold/release) slow messages without losing them.

use std::time::Duration;

use sim::{sweep, test_path, Action, Expect, Fault, NetPlan, Scenario, SimRng, When};
use station_core::server::Config as SessionConfig;

use crate::common::{clients, outage, secs, Outage, SEC};

pub fn lossy(seed: u64) -> Scenario {
    let mut rng = SimRng::new(seed);
    // Production pacing, and faster ones (acknowledged in batches below
    // 50 ms) for longer sequences in the same simulated time.
    let interval = [1000, 250, 50, 20][rng.below(4)];
    let interval = Duration::from_millis(interval);
    let length = rng.millis(secs(60)..secs(150));
    let count = ((length.as_millis() / interval.as_millis()) as u32).min(65_535);
    let n = 2 + rng.below(3);
    let mut s = Scenario::new(
        "loss and latency",
        clients(
            &mut rng,
            n,
            count * 4 / 5..count,
            Duration::ZERO..secs(2),
            Expect::Complete,
        ),
    );
    s.session = SessionConfig::new(interval, secs(30));
    s.net = NetPlan {
        min_latency: Duration::from_millis(1),
        max_latency: rng.millis(Duration::from_millis(20)..Duration::from_millis(80)),
        fail_rate: [0.0005, 0.001, 0.002, 0.004][rng.below(4)],
        repair_rate: [0.2, 0.5, 0.9][rng.below(3)],
    };
    // Latency spikes on every link.
    let mut at = rng.millis(secs(2)..secs(20));
    for _ in 0..rng.below(4) {
        let spike = rng.millis(Duration::from_millis(300)..secs(3));
        let lasts = rng.millis(secs(2)..secs(10));
        s.faults.push(Fault {
            when: When::At(at),
            action: Action::MaxLatency(spike),
        });
        s.faults.push(Fault {
            when: When::At(at + lasts),
            action: Action::MaxLatency(s.net.max_latency),
        });
        at += lasts + rng.millis(secs(5)..secs(30));
    }
    // Short stalls of single clients.
    for c in 0..n {
        if rng.chance(0.5) {
            let at = rng.millis(SEC..length);
            outage(
                &mut s.faults,
                c,
                vec![0],
                at,
                rng.millis(SEC..secs(8)),
                Outage::Stall,
            );
        }
    }
    s
}

#[test]
fn packet_loss_and_latency_spikes_on_long_sequences() {
    sweep(
        &test_path!("packet_loss_and_latency_spikes_on_long_sequences"),
        50,
        lossy,
    );
}

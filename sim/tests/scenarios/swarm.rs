//! Swarm testing with the store as a host of its own: each seed draws
//! which fault kinds are on, and at what rates (see `sim::swarm`).

use sim::{sweep, test_path};

#[test]
fn swarm_with_a_faulty_store_host() {
    sweep(
        &test_path!("swarm_with_a_faulty_store_host"),
        400,
        sim::swarm::swarm,
    );
}

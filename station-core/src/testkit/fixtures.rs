//! Fixtures shared by the core's tests, benches and testkit: one client id,
//! one session's secrets and record, and the helpers every machine test
//! writes (`ms`, `drain`).

use std::time::Duration;

use crate::server::{Fresh, Record};
use crate::{client, server, ClientId, Secret};

/// The client id of the fixtures (a valid UUID, as a client sends it).
pub const ID: &str = "67e55044-10b1-426f-9247-bb680e5fe0c8";
/// The fixture session's seed.
pub const SEED: u64 = 0x5eed;
/// The fixture session's resume token.
pub const TOKEN: Secret = Secret([7; 16]);
/// The fixture session's open nonce.
pub const NONCE: [u8; 16] = [3; 16];
/// The fixture session's incarnation.
pub const INCARNATION: u64 = 0x1_2c42;
/// The holder of the fixture stream.
pub const HOLDER: u64 = 0x401d;

/// [`ID`], parsed.
pub fn id() -> ClientId {
    ClientId::parse(ID).expect("a valid id")
}

/// The randomness a server stream draws for the fixture session.
pub fn fresh() -> Fresh {
    Fresh {
        seed: SEED,
        token: TOKEN,
        incarnation: INCARNATION,
        holder: HOLDER,
    }
}

/// The fixture session's record: `count` numbers, none acknowledged, at
/// `generation`, written by the fixture stream.
pub fn record(count: u32, generation: u64) -> Record {
    Record {
        client_id: id(),
        token: TOKEN,
        nonce: Secret(NONCE),
        seed: SEED,
        count,
        acked: 0,
        generation,
        incarnation: INCARNATION,
        holder: HOLDER,
    }
}

/// The fixture session's record of 10 numbers, written by stream `holder`
/// of `incarnation` at `generation`: for the store and fencing tests, where
/// only those three fields matter.
pub fn fenced(incarnation: u64, generation: u64, holder: u64) -> Record {
    Record {
        incarnation,
        holder,
        ..record(10, generation)
    }
}

/// `n` milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A machine driven by draining its outputs (ARCHITECTURE.md §4).
pub trait Machine {
    /// What it emits.
    type Output;
    /// Its next output, if any.
    fn poll_output(&mut self) -> Option<Self::Output>;
}

impl Machine for server::Stream {
    type Output = server::Output;
    fn poll_output(&mut self) -> Option<server::Output> {
        server::Stream::poll_output(self)
    }
}

impl Machine for client::Client {
    type Output = client::Output;
    fn poll_output(&mut self) -> Option<client::Output> {
        client::Client::poll_output(self)
    }
}

/// Every output `machine` has now, in order.
pub fn drain<M: Machine>(machine: &mut M) -> Vec<M::Output> {
    std::iter::from_fn(|| machine.poll_output()).collect()
}

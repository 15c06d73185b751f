//! Sans-IO state machines for Numbers Station.
//!
//! Nothing in this crate performs I/O, reads a clock or draws OS randomness:
//! time arrives as `now: Instant` arguments and randomness as seeds, so the
//! same inputs always produce the same outputs and a simulation replays
//! exactly. `station-net` drives these machines over real sockets (or
//! turmoil's simulated ones) and a session store.
//!
//! # Layout
//!
//! - [`sequence`]: the seekable PRNG (value at any index in O(1) from a 64-bit
//!   seed) and the CRC-32 checksum.
//! - [`server`]: [`server::Stream`], the server's side of one stream
//!   (`server/mod.rs`: its state, inputs and `poll_*`), split by path:
//!   attaching by open, resume and takeover (`attach.rs`), the store's
//!   answers (`reply.rs`), lease renewals and the final delete
//!   (`lease.rs`), pacing and `Paused` (`send.rs`), ending and the release
//!   (`release.rs`); the stored [`server::Record`] and [`server::Fresh`]
//!   (`record.rs`); [`server::Config`] and its validation (`config.rs`); what
//!   a stream receives and emits (`messages.rs`); tests by concern in
//!   `server/tests/`.
//! - [`store`]: the store contract: [`store::StoreOp`], [`store::Lookup`],
//!   [`store::StoreReply`] (also re-exported from [`server`]),
//!   [`store::decide`], and [`store::step`], the same with expiry.
//! - [`client`]: [`client::Client`], the client's side of a whole session
//!   across reconnections (`client/mod.rs`: its state, time and `poll_*`);
//!   each stream's `Open` or `Resume` and `Attached` (`attach.rs`); numbers,
//!   acknowledgements and the verdict (`progress.rs`); how a stream ends,
//!   and the glue to the retry budget and open throttle (`end.rs`);
//!   backoff, pushback and giving up (`backoff.rs`); the retry budget
//!   (`budget.rs`) and the open throttle (`throttle.rs`); [`client::Config`]
//!   and its validation (`config.rs`); what it receives and emits
//!   (`messages.rs`); tests in `client/tests/`.
//! - [`admission`]: [`admission::StoreGate`], whether a server may admit a
//!   new session given how its store is coping (operations in flight
//!   against an adaptive limit, latency, recent failures).
//! - [`Reject`]: every reason a server refuses or ends a stream.
//! - `testkit` (behind the non-default `testkit` feature, so production
//!   builds carry no clock-reading test code): drives a server stream or a
//!   client from arbitrary events and checks their outputs (for the fuzz
//!   targets and property tests); `testkit::invariants`, the rules of
//!   ARCHITECTURE.md §6 shared by the harness and the simulations;
//!   `testkit::fixtures`, what the core's tests and bench share.
//! - `harness` (tests only): a client and its server streams end to end over
//!   a modelled network and store, with faults, checked against the
//!   invariants of ARCHITECTURE.md §6 (`testkit::invariants`).
//!
//! # Server sessions
//!
//! A session is a small [`server::Record`] (88 bytes: id, token, nonce,
//! seed, count, acknowledged index, generation, incarnation, holder) in a
//! store; [`store`] says how a store answers each operation. Its life:
//!
//! 1. **Open** creates the record (generation 1, a random incarnation) and
//!    attaches the stream.
//! 2. **Attached**: one number per interval, the first at once; every
//!    lease (5 s) the stream renews its hold on the record, with a
//!    compare-and-set on the generation, without holding numbers up.
//! 3. **Detached**: the stream broke; its last write (the release) set the
//!    record to expire `ttl` after the stream was last known to work
//!    (everything sent was acknowledged). The record stays until then.
//! 4. **Resumed** by a `Resume` with the right token: the generation goes up
//!    (a takeover), numbers continue from the client's `next_index`. A stream
//!    still attached elsewhere fails its next renewal and ends (`ABORTED`),
//!    sending no number later than two leases after the takeover.
//!    **Expired** if the resume comes after the expiry (`NOT_FOUND`).
//! 5. **Deleted** when the final acknowledgement arrives.
//!
//! # Run loop
//!
//! Every machine here is driven the same way (after str0m and quinn-proto):
//!
//! 1. Feed one input: a `handle_*` method with the current time.
//! 2. Drain `poll_output()` until it returns `None`, performing each output
//!    (send a message, run a store operation and feed its answer back).
//! 3. Sleep until `poll_timeout()`, or until the next input, whichever is
//!    first; on waking by time, call `handle_timeout(now)`.
//!
//! ```no_run
//! use std::time::Instant;
//! use station_core::server::{Config, Fresh, Open, Output, Stream, StoreReply};
//! use station_core::Secret;
//!
//! let now = Instant::now(); // the adapter's clock, not the core's
//! let mut stream = Stream::new(Config::default(), now);
//! let open = Open { client_id: "67e55044-10b1-426f-9247-bb680e5fe0c8", count: 3, nonce: &[] };
//! let fresh = Fresh { seed: 7, token: Secret([9; 16]), incarnation: 3, holder: 4 };
//! stream.handle_open(now, open, fresh);
//! while let Some(output) = stream.poll_output() {
//!     match output {
//!         Output::Store(_op) => stream.handle_store(now, StoreReply::Done),
//!         Output::Attached(_a) => { /* send Attached */ }
//!         Output::Send(_n) => { /* send Number */ }
//!         Output::Paused { .. } => { /* send Paused */ }
//!         Output::End(_end) => { /* end the stream */ }
//!     }
//! }
//! let _wake_at = stream.poll_timeout();
//! ```

pub mod admission;
pub mod client;
mod error;
mod ids;
mod reason;
pub mod sequence;
pub mod server;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

#[cfg(test)]
mod harness;

pub use error::{Busy, Reject};
pub use ids::{ClientId, Secret};
pub use reason::{Reason, DOMAIN};

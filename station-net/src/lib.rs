//! Numbers Station over gRPC: the adapter that runs `station-core`'s state
//! machines over real (or simulated) sockets.
//!
//! # Layout
//!
//! - [`server`]: [`Station`], the tonic service, and [`serve`], which runs it
//!   with health checking, reflection and graceful shutdown.
//! - `config`: [`ServerConfig`], what a server can be told (re-exported by
//!   [`server`]).
//! - `state`: `ServerState`, what every stream of one server shares, and
//!   [`StreamEvent`]s. Below `driver`, which is below `server`: no cycle.
//! - `driver`: each stream's response body drives a core `server::Stream` on
//!   hyper's task for the stream (no task or channel of its own); its
//!   `inbound` feeds the client's messages in, its `store` runs and
//!   settles store operations.
//! - `stall`: drives the streams whose clients stopped reading, so that
//!   their clocks do not wait for HTTP/2 flow control.
//! - [`client`]: [`client::run`], driving a core `Client` across streams and
//!   endpoints, with the process's retry budget and open throttle.
//! - [`admission`]: the store's side of admission: an adaptive limit on
//!   store operations in flight, and their latency and failures.
//! - [`overload`]: the server's own signs that it is past capacity (its
//!   timers' lateness, its acknowledgements' round trip, its processors'
//!   share) and the limit it learns on streams held.
//! - [`coalesce`]: write coalescing under HTTP/2 connections.
//! - [`codec`]: the protobuf codec for our services, with small buffers (a
//!   hundred thousand streams cannot each hold tonic's 16 KiB).
//! - `clock`: the one place the adapter reads the clock (tokio's, so a
//!   simulation's paused time is obeyed).
//! - [`incoming`]: accepted TCP connections, with an accept loop that backs
//!   off when file descriptors run out.
//! - [`metrics`]: counters for the `Stats` RPC and Prometheus.
//! - [`otel`]: traces: a span per stream and store operation, and the W3C
//!   trace context a client sends on every stream of a session.
//! - [`status`]: the one mapping between core errors and gRPC statuses.
//! - [`store`]: the [`SessionStore`](store::SessionStore) trait,
//!   [`MemoryStore`](store::MemoryStore) and [`RedisStore`](store::RedisStore).
//! - `testkit` (feature `testkit`, off in production builds): fixtures for
//!   tests (private `redis-server` processes).
//! - `log_limit`: warnings every stream can raise at once, at most one a
//!   second per call site.
//! - `build_paths` (tests only): the build script's `build/paths.rs`, where
//!   it finds the `.proto` files, compiled here so its test runs.
//!
//! The adapter owns sockets, timers and store I/O, and makes no protocol
//! decision: those are the core's.

pub mod admission;
pub mod client;
mod clock;
pub mod coalesce;
pub mod codec;
mod config;
mod driver;
pub mod incoming;
mod log_limit;
pub mod metrics;
pub mod otel;
pub mod overload;
pub mod server;
mod stall;
mod state;
pub mod status;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;

pub mod proto {
    //! Generated from `proto/numbersstation/v1/station.proto`.
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("numbersstation.v1");
    /// Encoded descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("numbersstation_descriptor");
}

pub use server::{serve, serve_tcp, Observer, ServeError, ServerConfig, Station, StreamEvent};

// The build script's path logic, compiled here too so that its tests run
// with the crate's.
#[cfg(test)]
#[path = "../build/paths.rs"]
mod build_paths;

//! The store as a host of its own ([`StoreKind::Host`]): a small
//! request/response protocol over turmoil's TCP between the servers
//! ([`NetStore`], behind the same `SessionStore` trait as every store) and
//! the `store` host ([`serve`]), which applies each operation to the real
//! `MemoryStore` on the simulation's clock.
//!
//! Being on the network gives the store the faults a real one has: latency,
//! a partition from one server but not from its clients, a reply lost after
//! the write was applied (the host drops the reply and the connection, at
//! [`StoreNet::reply_loss`]), and crashes that keep or lose its data.
//!
//! With [`StoreNet::service`] (or once [`Action::StoreService`] sets one)
//! the host is also a store of limited speed: one worker executes every
//! operation in the order they arrived, each taking the service time, so
//! operations queue and latency grows with the load, as on a
//! single-threaded store whose CPU is the limit. Without it, operations
//! execute as they arrive, as before the queue existed.
//!
//! [`Action::StoreService`]: crate::Action::StoreService
//! [`StoreKind::Host`]: crate::StoreKind::Host
//! [`StoreNet::reply_loss`]: crate::StoreNet::reply_loss
//! [`StoreNet::service`]: crate::StoreNet::service
//!
//! # Layout
//!
//! - [`wire`]: the frames and how each operation and reply is encoded.
//! - `host`: the store host ([`StoreHost`], [`serve`]) and its queue.
//! - `client`: the servers' side ([`NetStore`] and its [`Connection`]).

mod client;
mod host;
pub mod wire;

pub use client::{Connection, NetStore};
pub use host::{serve, StoreHost};
pub use wire::{decode_op, decode_reply, encode_op, encode_reply};

/// The store host's name.
pub const HOST: &str = "store";
/// The port it listens on.
pub const PORT: u16 = 6379;

/// Aborts a task when dropped.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

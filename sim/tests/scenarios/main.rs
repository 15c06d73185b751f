//! Every scenario of ARCHITECTURE.md §6 as its own test, each swept over many seeds
//! (see the `sim` crate docs for running, sweeping and replaying), plus
//! replay and broken-variant tests.

mod broken;
mod common;
mod counters;
mod crash;
mod expiry;
mod failover;
mod finale;
mod loss;
mod overload;
mod partitions;
mod rare;
mod replay;
mod reuse;
mod swarm;
mod timeline;

//! The bottom layer: what every other module may use, importing nothing
//! of the crate's own, so the modules above it form no import cycle.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, through a poisoned lock too: a panicking host is reported
/// (as a broken run), and the runner must still read what it recorded.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

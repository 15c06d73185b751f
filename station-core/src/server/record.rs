//! What the server keeps about a session: [`Record`] and its fixed byte
//! encoding, and the randomness ([`Fresh`]) a stream draws for it.

use crate::ids::{ClientId, Secret};
use crate::sequence::MAX_COUNT;

/// Everything the server keeps about a session: O(1), never the numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Whose session this is.
    pub client_id: ClientId,
    /// Secret required to resume.
    pub token: Secret,
    /// The client's open nonce ([`Secret::ZERO`] if none): lets a client
    /// whose `Attached` was lost repeat its `Open`.
    pub nonce: Secret,
    /// Seed of the session's sequence ([`sequence::value`](crate::sequence::value)).
    pub seed: u64,
    /// Numbers in the session.
    pub count: u32,
    /// The client holds every number below this index.
    pub acked: u32,
    /// Bumped by every takeover; every write is a compare-and-set on it
    /// and on `incarnation`.
    pub generation: u64,
    /// Random, drawn when the session was opened and kept across
    /// takeovers: tells this session from a later one with the same client
    /// id (reused after expiry), which starts again at generation 1.
    pub incarnation: u64,
    /// Random, drawn by the stream that wrote this generation: lets a write
    /// re-sent after a lost reply recognise that it was applied, where two
    /// rival takeovers to the same generation differ.
    pub holder: u64,
}

impl Record {
    /// Length of [`Record::to_bytes`].
    pub const ENCODED_LEN: usize = 88;

    /// A fixed big-endian layout for stores that keep bytes (Redis).
    pub fn to_bytes(&self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        b[0..16].copy_from_slice(self.client_id.0.as_bytes());
        b[16..32].copy_from_slice(self.token.as_bytes());
        b[32..48].copy_from_slice(self.nonce.as_bytes());
        b[48..56].copy_from_slice(&self.seed.to_be_bytes());
        b[56..60].copy_from_slice(&self.count.to_be_bytes());
        b[60..64].copy_from_slice(&self.acked.to_be_bytes());
        b[64..72].copy_from_slice(&self.generation.to_be_bytes());
        b[72..80].copy_from_slice(&self.incarnation.to_be_bytes());
        b[80..88].copy_from_slice(&self.holder.to_be_bytes());
        b
    }

    /// Parses [`Record::to_bytes`]; `None` if the bytes are not a record.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        let b: &[u8; Self::ENCODED_LEN] = b.try_into().ok()?;
        let arr16 =
            |r: std::ops::Range<usize>| -> [u8; 16] { b[r].try_into().expect("range is 16 bytes") };
        let u64_at = |at: usize| u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let record = Record {
            client_id: ClientId(uuid::Uuid::from_bytes(arr16(0..16))),
            token: Secret(arr16(16..32)),
            nonce: Secret(arr16(32..48)),
            seed: u64_at(48),
            count: u32::from_be_bytes(b[56..60].try_into().expect("4 bytes")),
            acked: u32::from_be_bytes(b[60..64].try_into().expect("4 bytes")),
            generation: u64_at(64),
            incarnation: u64_at(72),
            holder: u64_at(80),
        };
        (1..=MAX_COUNT).contains(&record.count).then_some(record)
    }
}

/// Fresh randomness for a stream, drawn by the caller for each `Open` and
/// `Resume`.
#[derive(Clone, Copy, Debug)]
pub struct Fresh {
    /// Seed of the new session's sequence (`Open` only).
    pub seed: u64,
    /// The new session's resume token (`Open` only).
    pub token: Secret,
    /// The new session's [`Record::incarnation`] (`Open` only).
    pub incarnation: u64,
    /// This stream's [`Record::holder`].
    pub holder: u64,
}

//! Identifiers and secrets.

use std::fmt;

use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::Reject;

/// A client's identity: the UUID it sends in `Open`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub Uuid);

impl ClientId {
    /// Parses the canonical text form sent on the wire.
    pub fn parse(text: &str) -> Result<Self, Reject> {
        // `Uuid::try_parse` also takes braced, URN and simple forms; the wire
        // format is the hyphenated one, so insist on its length first.
        if text.len() != 36 {
            return Err(Reject::bad_client_id(text));
        }
        Uuid::try_parse(text)
            .map(ClientId)
            .map_err(|_| Reject::bad_client_id(text))
    }

    /// A version 4 UUID made from 16 random bytes supplied by the caller.
    pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
        ClientId(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// 16 secret random bytes: a resume token or an open nonce.
///
/// Equality is constant-time so that comparing a guess leaks nothing about
/// how many leading bytes were right. `Debug` does not print the bytes.
#[derive(Clone, Copy, Default)]
pub struct Secret(pub [u8; 16]);

impl Secret {
    /// Length on the wire.
    pub const LEN: usize = 16;

    /// The all-zero secret, used for "no nonce".
    pub const ZERO: Secret = Secret([0; 16]);

    /// Parses wire bytes; `None` unless exactly 16 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Secret)
    }

    /// Whether this is the all-zero secret.
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_id_accepts_only_hyphenated_uuids() {
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        assert_eq!(ClientId::parse(id).unwrap().to_string(), id);
        for bad in [
            "",
            "not-a-uuid",
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c8}",
            "67e55044-10b1-426f-9247-bb680e5fe0cz",
        ] {
            assert!(
                matches!(ClientId::parse(bad), Err(Reject::BadClientId(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_client_id_echo_is_truncated() {
        let long = "x".repeat(10_000);
        let msg = ClientId::parse(&long).unwrap_err().to_string();
        assert!(msg.len() < 200, "{msg}");
    }

    #[test]
    fn random_client_ids_are_version_4() {
        let id = ClientId::from_random_bytes([7; 16]);
        assert_eq!(id.0.get_version_num(), 4);
    }

    #[test]
    fn secret_debug_hides_bytes() {
        assert_eq!(format!("{:?}", Secret([1; 16])), "Secret(..)");
        assert_eq!(Secret::from_slice(&[1; 15]), None);
        assert_eq!(Secret::from_slice(&[1; 16]), Some(Secret([1; 16])));
    }
}

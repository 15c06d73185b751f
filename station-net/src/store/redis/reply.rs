//! Reading the scripts' replies: each is a tag (`done`, `conflict`,
//! `live`, …) and its fields; a stored record is checked against its key
//! and its `generation` field before the session sees it.

use station_core::server::{Record, StoreReply};
use station_core::ClientId;

use super::error::RedisStoreError;

/// Splits a script reply into its tag and the rest, turning `corrupt` into
/// an error.
pub(super) fn split<'a>(
    id: &ClientId,
    reply: &'a [Vec<u8>],
) -> Result<(&'a str, &'a [Vec<u8>]), RedisStoreError> {
    let Some((tag, rest)) = reply.split_first() else {
        return Err(RedisStoreError::EmptyReply);
    };
    let tag = std::str::from_utf8(tag).unwrap_or("?");
    if tag == "corrupt" {
        let reason = rest
            .first()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .unwrap_or_default();
        return Err(RedisStoreError::Unreadable { id: *id, reason });
    }
    Ok((tag, rest))
}

/// The reply of a script that writes.
pub(super) fn write_reply(
    what: &'static str,
    id: &ClientId,
    reply: &[Vec<u8>],
) -> Result<StoreReply, RedisStoreError> {
    match split(id, reply)? {
        ("done", []) => Ok(StoreReply::Done),
        ("conflict", []) => Ok(StoreReply::Conflict),
        ("expired", []) => Ok(StoreReply::ExpiredOrReplaced),
        ("missing", []) => Ok(StoreReply::Vanished),
        _ => Err(RedisStoreError::unexpected(what, reply)),
    }
}

/// Decodes a stored record, checking it against its key and its
/// `generation` field.
pub(super) fn decode(
    id: &ClientId,
    bytes: &[u8],
    generation: &[u8],
) -> Result<Record, RedisStoreError> {
    let id = *id;
    let record = Record::from_bytes(bytes).ok_or_else(|| {
        if bytes.len() == Record::ENCODED_LEN {
            RedisStoreError::InvalidRecord { id }
        } else {
            RedisStoreError::RecordLength {
                id,
                len: bytes.len(),
                expected: Record::ENCODED_LEN,
            }
        }
    })?;
    if record.client_id != id {
        return Err(RedisStoreError::WrongOwner {
            id,
            owner: record.client_id,
        });
    }
    if record.generation.to_string().as_bytes() != generation {
        return Err(RedisStoreError::GenerationMismatch {
            id,
            field: String::from_utf8_lossy(generation).into_owned(),
            record: record.generation,
        });
    }
    Ok(record)
}

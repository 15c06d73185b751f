//! The record's byte encoding, pinned.

use super::*;

#[test]
fn record_round_trips_through_a_pinned_encoding() {
    // The encoding is shared by every server of a Redis deployment and
    // outlives upgrades: its size and layout are pinned.
    assert_eq!(std::mem::size_of::<Record>(), 88);
    const { assert!(Record::ENCODED_LEN <= 128) };
    let r = Record {
        client_id: id(),
        token: Secret([0xa5; 16]),
        nonce: Secret([0x5a; 16]),
        seed: 0x0123_4567_89ab_cdef,
        count: MAX_COUNT,
        acked: 1234,
        generation: u64::MAX - 1,
        incarnation: 0x1122_3344_5566_7788,
        holder: 0x99aa_bbcc_ddee_ff00,
    };
    let bytes = r.to_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let golden = [
        "67e5504410b1426f9247bb680e5fe0c8", // client id
        "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5", // token
        "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a", // nonce
        "0123456789abcdef",                 // seed
        "0000ffff",                         // count
        "000004d2",                         // acked
        "fffffffffffffffe",                 // generation
        "1122334455667788",                 // incarnation
        "99aabbccddeeff00",                 // holder
    ]
    .concat();
    assert_eq!(hex, golden);
    assert_eq!(bytes.len(), Record::ENCODED_LEN);
    assert_eq!(Record::from_bytes(&bytes), Some(r));
    assert_eq!(Record::from_bytes(&bytes[..87]), None);
    assert_eq!(Record::from_bytes(&[0; 89]), None);
    // The layout before incarnations (72 bytes) is not a record.
    assert_eq!(Record::from_bytes(&bytes[..72]), None);
    // A count of zero is not a record.
    assert_eq!(Record::from_bytes(&[0; 88]), None);
}

//! Snapshots: a new process continues a session where the last one stopped.

use super::*;

#[test]
fn snapshot_and_restore_continue_the_same_sums() {
    let t0 = Instant::now();
    let count = 50;
    // One client receives everything in one go.
    let mut whole = new_client(t0, count);
    whole.handle_attached(t0, attached(count, 0, 1));
    let expected = finished(&feed(&mut whole, t0, 0..count, count));
    // Another stops after 17, is snapshotted and restored elsewhere.
    let mut first = new_client(t0, count);
    first.handle_attached(t0, attached(count, 0, 1));
    feed(&mut first, t0, 0..17, count);
    let snap = first.snapshot();
    assert_eq!(snap.next_index, 17);
    assert_eq!(snap.sum, sum(0..17));
    assert_eq!(snap.token, Some(Secret(TOKEN)));
    let t1 = t0 + Duration::from_secs(5);
    let mut second = Client::restore(t1, Config::default(), snap, 2).unwrap();
    assert_eq!(drain(&mut second), [resume(17)]);
    assert_eq!(second.snapshot(), snap);
    second.handle_attached(t1, attached(count, 17, 1));
    let got = finished(&feed(&mut second, t1, 17..count, count));
    assert_eq!(got.verdict, Verdict::Verified);
    assert_eq!(
        (
            got.sum,
            got.client_checksum,
            got.server_checksum,
            got.received
        ),
        (
            expected.sum,
            expected.client_checksum,
            expected.server_checksum,
            count
        )
    );
    // A snapshot taken before attaching opens again with the same nonce.
    let fresh = new_client(t0, 9);
    let snap = fresh.snapshot();
    let mut again = Client::restore(t1, Config::default(), snap, 3).unwrap();
    assert_eq!(
        drain(&mut again),
        [Output::Connect(Request::Open {
            client_id: id(),
            count: 9,
            nonce: snap.nonce
        })]
    );
}

fn complete_snapshot(count: u32) -> Snapshot {
    let t0 = Instant::now();
    let mut c = new_client(t0, count);
    c.handle_attached(t0, attached(count, 0, 1));
    feed(&mut c, t0, 0..count, count);
    c.snapshot()
}

#[test]
fn restore_of_a_complete_session_acknowledges_it() {
    let t0 = Instant::now();
    let snap = complete_snapshot(5);
    let mut c = Client::restore(t0, Config::default(), snap, 1).unwrap();
    assert_eq!(drain(&mut c), [resume(5)]);
    c.handle_attached(t0, attached(5, 5, 1));
    let out = drain(&mut c);
    assert_eq!(out[0], Output::Ack(5));
    let o = finished(&out);
    assert_eq!(o.verdict, Verdict::Verified);
    assert_eq!(o.sum, sum(0..5));
}

#[test]
fn restore_of_a_complete_session_is_verified_even_if_it_is_gone() {
    let t0 = Instant::now();
    let snap = complete_snapshot(5);
    for end in [
        StreamEnd::rejected(&Reject::Expired(id())),
        StreamEnd::rejected(&Reject::Unknown(id())),
        StreamEnd::code_only(Code::NotFound, "no session"),
    ] {
        let mut c = Client::restore(t0, Config::default(), snap, 1).unwrap();
        drain(&mut c);
        c.handle_end(t0, end);
        let o = finished(&drain(&mut c));
        assert_eq!(o.verdict, Verdict::Verified);
    }
    // And when no server can be reached at all.
    let mut c = Client::restore(t0, Config::default(), snap, 1).unwrap();
    drain(&mut c);
    let mut now = t0;
    let o = loop {
        c.handle_end(now, transport());
        if let Some(Output::Finished(o)) = drain(&mut c).pop() {
            break o;
        }
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
        drain(&mut c);
    };
    assert_eq!(o.verdict, Verdict::Verified);
}

#[test]
fn restore_validates_the_snapshot() {
    let t0 = Instant::now();
    let snap = complete_snapshot(5);
    let cfg = Config::default;
    let bad = [
        Snapshot { count: 0, ..snap },
        Snapshot {
            next_index: 6,
            ..snap
        },
        Snapshot {
            server_checksum: None,
            ..snap
        },
    ];
    for s in bad {
        assert!(Client::restore(t0, cfg(), s, 1).is_err(), "{s:?}");
    }
}

//! A stale resume that wins the store race against a newer one must not
//! end the client (ARCHITECTURE.md §2, takeover).

use super::*;

/// Two `Resume`s of one client race in the store: a stale one (the
/// client gave up on its stream while the server was still loading)
/// and the current one. Both load generation 1; the stale one's
/// takeover lands first, so the current stream's takeover conflicts
/// and ends with ABORTED. The client must resume again (and win), not
/// give up: a takeover can only come from a holder of its token.
#[test]
fn a_stale_resume_winning_the_store_race_does_not_end_the_client() {
    let t0 = Instant::now();
    let cfg = server::Config::default();
    let ttl = cfg.ttl;
    let mut store = ModelStore::default();
    let id = ClientId::from_random_bytes([2; 16]);
    let token = Secret([5; 16]);
    let live = Record {
        client_id: id,
        token,
        nonce: Secret::ZERO,
        seed: 99,
        count: 10,
        acked: 4,
        generation: 1,
        incarnation: 7,
        holder: 1,
    };
    let create = StoreOp::Create {
        record: live,
        expires_in: ttl,
    };
    assert_eq!(store.apply(t0, create), StoreReply::Done);
    let snapshot = client::Snapshot {
        client_id: id,
        count: 10,
        nonce: Secret::ZERO,
        token: Some(token),
        next_index: 4,
        sum: (0..4).map(|i| u64::from(sequence::value(99, i))).sum(),
        crc: {
            let mut crc = RunningChecksum::new();
            (0..4).for_each(|i| crc.push(sequence::value(99, i)));
            crc.value()
        },
        server_checksum: None,
    };
    let mut c = Client::restore(t0, client::Config::default(), snapshot, 1).unwrap();
    let id_text = id.to_string();
    // Each stream draws its own holder.
    let fresh = |holder| Fresh {
        seed: 0,
        token: Secret::ZERO,
        incarnation: 0,
        holder,
    };
    let resume = |s: &mut server::Stream, holder| {
        let r = server::Resume {
            client_id: &id_text,
            token: token.as_bytes(),
            next_index: 4,
        };
        s.handle_resume(t0, r, fresh(holder));
    };
    // The stale stream and the current one both load generation 1.
    let mut stale = server::Stream::new(cfg.clone(), t0);
    let mut current = server::Stream::new(cfg, t0);
    resume(&mut stale, 2);
    resume(&mut current, 3);
    for s in [&mut stale, &mut current] {
        let Some(Output::Store(op)) = s.poll_output() else {
            panic!()
        };
        let reply = store.apply(t0, op);
        assert_eq!(reply, StoreReply::Loaded(Lookup::Live(live)));
        s.handle_store(t0, reply);
    }
    // The stale takeover lands first.
    let Some(Output::Store(op)) = stale.poll_output() else {
        panic!()
    };
    stale.handle_store(t0, store.apply(t0, op));
    assert!(matches!(stale.poll_output(), Some(Output::Attached(_))));
    let Some(Output::Store(op)) = current.poll_output() else {
        panic!()
    };
    let reply = store.apply(t0, op);
    assert_eq!(reply, StoreReply::Conflict);
    current.handle_store(t0, reply);
    let Some(Output::End(End::Rejected(reject))) = current.poll_output() else {
        panic!()
    };
    assert_eq!(reject, Reject::TakenOver(id));
    // The client hears ABORTED on its current stream and resumes.
    while c.poll_output().is_some() {}
    let end = StreamEnd::rejected(&reject);
    c.handle_end(t0, end);
    assert_eq!(c.poll_output(), None);
    let at = c.poll_timeout().expect("retrying");
    c.handle_timeout(at);
    assert!(matches!(
        c.poll_output(),
        Some(client::Output::Connect(Request::Resume {
            next_index: 4,
            ..
        }))
    ));
    // That resume takes the session back; the stale stream's renewal, due
    // a lease after it attached, conflicts and ends it.
    let mut again = server::Stream::new(server::Config::default(), at);
    let r = server::Resume {
        client_id: &id_text,
        token: token.as_bytes(),
        next_index: 4,
    };
    again.handle_resume(at, r, fresh(4));
    while let Some(out) = again.poll_output() {
        if let Output::Store(op) = out {
            let reply = store.apply(at, op);
            again.handle_store(at, reply);
        }
    }
    assert_eq!(store.live(at, id).map(|(r, _)| r.generation), Some(3));
    while stale.poll_output().is_some() {}
    // Acknowledged (the client still read it then), so that the renewal
    // comes before the silence timeout.
    stale.handle_ack(t0 + Duration::from_secs(1), 5);
    while stale.poll_output().is_some() {}
    let renew_at = t0 + server::Config::default().lease;
    stale.handle_timeout(renew_at);
    let Some(Output::Store(op)) = stale.poll_output() else {
        panic!()
    };
    stale.handle_store(renew_at, store.apply(at, op));
    assert_eq!(
        stale.poll_output(),
        Some(Output::End(End::Rejected(Reject::TakenOver(id))))
    );
}

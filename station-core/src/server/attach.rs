//! How a stream attaches: the client's `Open` (a `Create`) or `Resume`
//! (a `Load`), then the takeover write that bumps the generation, then
//! `Attached` and the first lease.

use std::time::Instant;

use super::{Attached, Attachment, Fresh, Open, Output, Pending, Phase, Record, Resume, Stream};
use crate::ids::{ClientId, Secret};
use crate::sequence::MAX_COUNT;
use crate::store::StoreOp;
use crate::Reject;

impl Stream {
    /// Handles the client's `Open`. `fresh` is used only if the session is
    /// new. Outputs a `Create`, or ends the stream if the request is invalid.
    pub fn handle_open(&mut self, now: Instant, open: Open<'_>, fresh: Fresh) {
        if self.phase != Phase::Idle {
            return self.unexpected(now, "Open after the stream's first message");
        }
        let checked = (|| {
            let client_id = ClientId::parse(open.client_id)?;
            if !(1..=MAX_COUNT).contains(&open.count) {
                return Err(Reject::BadCount(open.count));
            }
            let nonce = match open.nonce.len() {
                0 => Secret::ZERO,
                _ => Secret::from_slice(open.nonce).ok_or(Reject::BadNonce(open.nonce.len()))?,
            };
            Ok(Record {
                client_id,
                token: fresh.token,
                nonce,
                seed: fresh.seed,
                count: open.count,
                acked: 0,
                generation: 1,
                incarnation: fresh.incarnation,
                holder: fresh.holder,
            })
        })();
        match checked {
            Ok(record) => {
                self.heard(now);
                self.holder = fresh.holder;
                self.phase = Phase::Attaching;
                self.client_id = Some(record.client_id);
                self.record = Some(record);
                self.pending = Some(Pending::Create { asked: now });
                self.out.push_back(Output::Store(StoreOp::Create {
                    record,
                    expires_in: self.leased_expiry(),
                }));
            }
            Err(reject) => self.fail(now, reject),
        }
    }

    /// Handles the client's `Resume`. Outputs a `Load`, or ends the stream
    /// if the request is malformed. Of `fresh`, only the holder is used.
    pub fn handle_resume(&mut self, now: Instant, resume: Resume<'_>, fresh: Fresh) {
        if self.phase != Phase::Idle {
            return self.unexpected(now, "Resume after the stream's first message");
        }
        let checked = ClientId::parse(resume.client_id).and_then(|id| {
            let token = Secret::from_slice(resume.token)
                .ok_or(Reject::MalformedToken(resume.token.len()))?;
            Ok((id, token))
        });
        match checked {
            Ok((client_id, token)) => {
                self.heard(now);
                self.holder = fresh.holder;
                self.phase = Phase::Attaching;
                self.client_id = Some(client_id);
                self.pending = Some(Pending::Load {
                    next_index: resume.next_index,
                    token,
                });
                self.out.push_back(Output::Store(StoreOp::Load(client_id)));
            }
            Err(reject) => self.fail(now, reject),
        }
    }

    pub(super) fn take_over(
        &mut self,
        now: Instant,
        live: Record,
        next_index: u32,
        how: Attachment,
    ) {
        let Some(generation) = live.generation.checked_add(1) else {
            return self.fail_by_store(Reject::StoreUnavailable(
                "stored generation cannot go higher".into(),
            ));
        };
        let record = Record {
            acked: next_index,
            generation,
            holder: self.holder,
            ..live
        };
        self.record = Some(record);
        self.pending = Some(Pending::TakeOver {
            next_index,
            asked: now,
            how,
        });
        self.out.push_back(Output::Store(StoreOp::Update {
            record,
            expect_generation: live.generation,
            expires_in: self.leased_expiry(),
        }));
    }

    pub(super) fn attach(
        &mut self,
        now: Instant,
        asked: Instant,
        next_index: u32,
        how: Attachment,
    ) {
        let record = self
            .record
            .expect("attach follows a store answer with a record");
        self.phase = Phase::Attached;
        self.attached_once = true;
        self.sent = next_index;
        self.acked = next_index;
        self.next_tick = now;
        self.waiting_since = self.waiting_on_client().then_some(now);
        self.out.push_back(Output::Attached(Attached {
            how,
            count: record.count,
            next_index,
            token: record.token,
            ttl: self.cfg.ttl,
            interval: self.cfg.interval,
            ack_every: self.cfg.ack_every(),
        }));
        // The store just confirmed our generation: that is the first lease
        // (unless its answer came after the lease it grants ran out).
        self.leased(asked);
        self.send_leased(now);
    }
}

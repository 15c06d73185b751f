//! The store host's wire format.
//!
//! Frames are a big-endian `u32` length and then that many bytes (tokio's
//! `LengthDelimitedCodec` with its defaults, [`MAX_FRAME`] at most): a
//! `u64` request id, a tag byte and the fields.
//!
//! | request | tag | fields |
//! |---|---|---|
//! | `Load` | 0 | client id (36 bytes of text) |
//! | `Create` | 1 | record (`Record::to_bytes`), expiry (`u64` ns) |
//! | `Update` | 2 | record, expected generation (`u64`), expiry (`u64` ns) |
//! | `Delete` | 3 | client id, incarnation (`u64`), generation (`u64`) |
//!
//! | reply | tag | fields |
//! |---|---|---|
//! | `Loaded(Live)` | 0 | record |
//! | `Loaded(Expired)` | 1 | |
//! | `Loaded(Missing)` | 2 | |
//! | `Done` | 3 | |
//! | `Exists` | 4 | record |
//! | `Conflict` | 5 | |
//! | `ExpiredOrReplaced` | 6 | |
//! | `Vanished` | 7 | |
//! | `Unavailable` | 8 | message (UTF-8) |

use std::io;
use std::time::Duration;

use station_core::server::{Lookup, Record, StoreOp, StoreReply};
use station_core::ClientId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_stream::StreamExt;
use tokio_util::bytes::{Bytes, BytesMut};
use tokio_util::codec::{Encoder, FramedRead, LengthDelimitedCodec};

/// Largest frame body either side accepts.
pub const MAX_FRAME: usize = 1024;

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn put_id(out: &mut Vec<u8>, id: &ClientId) {
    out.extend_from_slice(id.to_string().as_bytes());
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_nanos(out: &mut Vec<u8>, d: Duration) {
    put_u64(out, u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
}

/// A cursor over a frame's fields.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> io::Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(bad("frame too short"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> io::Result<u64> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn id(&mut self) -> io::Result<ClientId> {
        let text = std::str::from_utf8(self.take(36)?).map_err(|_| bad("client id"))?;
        ClientId::parse(text).map_err(|_| bad("client id"))
    }

    fn record(&mut self) -> io::Result<Record> {
        Record::from_bytes(self.take(Record::ENCODED_LEN)?).ok_or_else(|| bad("record"))
    }

    fn nanos(&mut self) -> io::Result<Duration> {
        Ok(Duration::from_nanos(self.u64()?))
    }

    fn end(&self) -> io::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(bad("trailing bytes"))
        }
    }
}

/// A request frame's body (the codec adds the length).
pub fn encode_op(id: u64, op: &StoreOp) -> Vec<u8> {
    let mut out = Vec::new();
    put_u64(&mut out, id);
    match op {
        StoreOp::Load(client) => {
            out.push(0);
            put_id(&mut out, client);
        }
        StoreOp::Create { record, expires_in } => {
            out.push(1);
            out.extend_from_slice(&record.to_bytes());
            put_nanos(&mut out, *expires_in);
        }
        StoreOp::Update {
            record,
            expect_generation,
            expires_in,
        } => {
            out.push(2);
            out.extend_from_slice(&record.to_bytes());
            put_u64(&mut out, *expect_generation);
            put_nanos(&mut out, *expires_in);
        }
        StoreOp::Delete {
            client_id,
            incarnation,
            generation,
        } => {
            out.push(3);
            put_id(&mut out, client_id);
            put_u64(&mut out, *incarnation);
            put_u64(&mut out, *generation);
        }
    }
    out
}

/// Parses a request frame's body.
pub fn decode_op(body: &[u8]) -> io::Result<(u64, StoreOp)> {
    let mut f = Fields(body);
    let id = f.u64()?;
    let op = match f.u8()? {
        0 => StoreOp::Load(f.id()?),
        1 => StoreOp::Create {
            record: f.record()?,
            expires_in: f.nanos()?,
        },
        2 => StoreOp::Update {
            record: f.record()?,
            expect_generation: f.u64()?,
            expires_in: f.nanos()?,
        },
        3 => StoreOp::Delete {
            client_id: f.id()?,
            incarnation: f.u64()?,
            generation: f.u64()?,
        },
        _ => return Err(bad("unknown request tag")),
    };
    f.end()?;
    Ok((id, op))
}

/// A reply frame's body (the codec adds the length).
pub fn encode_reply(id: u64, reply: &StoreReply) -> Vec<u8> {
    let mut out = Vec::new();
    put_u64(&mut out, id);
    match reply {
        StoreReply::Loaded(Lookup::Live(record)) => {
            out.push(0);
            out.extend_from_slice(&record.to_bytes());
        }
        StoreReply::Loaded(Lookup::Expired) => out.push(1),
        StoreReply::Loaded(Lookup::Missing) => out.push(2),
        StoreReply::Done => out.push(3),
        StoreReply::Exists(record) => {
            out.push(4);
            out.extend_from_slice(&record.to_bytes());
        }
        StoreReply::Conflict => out.push(5),
        StoreReply::ExpiredOrReplaced => out.push(6),
        StoreReply::Vanished => out.push(7),
        StoreReply::Unavailable(why) => {
            out.push(8);
            let why = why.as_bytes();
            out.extend_from_slice(&why[..why.len().min(MAX_FRAME - 16)]);
        }
    }
    out
}

/// Parses a reply frame's body.
pub fn decode_reply(body: &[u8]) -> io::Result<(u64, StoreReply)> {
    let mut f = Fields(body);
    let id = f.u64()?;
    let reply = match f.u8()? {
        0 => StoreReply::Loaded(Lookup::Live(f.record()?)),
        1 => StoreReply::Loaded(Lookup::Expired),
        2 => StoreReply::Loaded(Lookup::Missing),
        3 => StoreReply::Done,
        4 => StoreReply::Exists(f.record()?),
        5 => StoreReply::Conflict,
        6 => StoreReply::ExpiredOrReplaced,
        7 => StoreReply::Vanished,
        8 => {
            let rest = f.take(f.0.len())?;
            StoreReply::Unavailable(String::from_utf8_lossy(rest).into_owned())
        }
        _ => return Err(bad("unknown reply tag")),
    };
    f.end()?;
    Ok((id, reply))
}

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME)
        .new_codec()
}

/// The frames arriving on a connection.
pub(super) type Frames<R> = FramedRead<R, LengthDelimitedCodec>;

/// Reads `r` as frames.
pub(super) fn frames<R: AsyncRead>(r: R) -> Frames<R> {
    FramedRead::new(r, codec())
}

/// Reads one frame's body; the end of the stream is an error, as is a
/// frame longer than [`MAX_FRAME`].
pub(super) async fn read_frame(r: &mut Frames<impl AsyncRead + Unpin>) -> io::Result<BytesMut> {
    r.next()
        .await
        .unwrap_or_else(|| Err(io::ErrorKind::UnexpectedEof.into()))
}

/// Writes `body` as one frame in a single write: turmoil sends each write
/// as one segment, so splitting the length from the body would change
/// what arrives when, and with it the runs.
pub(super) async fn write_frame(
    w: &mut (impl AsyncWrite + Unpin),
    body: Vec<u8>,
) -> io::Result<()> {
    let mut frame = BytesMut::with_capacity(4 + body.len());
    codec().encode(Bytes::from(body), &mut frame)?;
    w.write_all(&frame).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use station_core::Secret;

    fn record() -> Record {
        Record {
            client_id: ClientId::from_random_bytes([9; 16]),
            token: Secret([1; 16]),
            nonce: Secret([2; 16]),
            seed: 77,
            count: 10,
            acked: 3,
            generation: 4,
            incarnation: 0xfeed,
            holder: 0xbeef,
        }
    }

    #[test]
    fn every_operation_and_reply_round_trips() {
        let r = record();
        let ops = [
            StoreOp::Load(r.client_id),
            StoreOp::Create {
                record: r,
                expires_in: Duration::from_millis(1500),
            },
            StoreOp::Update {
                record: r,
                expect_generation: 3,
                expires_in: Duration::from_secs(30),
            },
            StoreOp::Delete {
                client_id: r.client_id,
                incarnation: 5,
                generation: 6,
            },
        ];
        for (i, op) in ops.into_iter().enumerate() {
            let body = encode_op(i as u64, &op);
            assert_eq!(decode_op(&body).unwrap(), (i as u64, op));
        }
        let replies = [
            StoreReply::Loaded(Lookup::Live(r)),
            StoreReply::Loaded(Lookup::Expired),
            StoreReply::Loaded(Lookup::Missing),
            StoreReply::Done,
            StoreReply::Exists(r),
            StoreReply::Conflict,
            StoreReply::ExpiredOrReplaced,
            StoreReply::Vanished,
            StoreReply::Unavailable("down".into()),
        ];
        for (i, reply) in replies.into_iter().enumerate() {
            let body = encode_reply(i as u64, &reply);
            assert_eq!(decode_reply(&body).unwrap(), (i as u64, reply));
        }
        assert!(decode_op(&[0; 9]).is_err());
        assert!(decode_reply(&[0; 8]).is_err());
    }

    #[tokio::test]
    async fn a_frame_is_its_length_then_its_body() {
        let body = encode_op(7, &StoreOp::Load(record().client_id));
        let mut written = Vec::new();
        write_frame(&mut written, body.clone()).await.unwrap();
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        assert_eq!(written, [&len[..], &body].concat());

        let (mut w, r) = tokio::io::duplex(4 * MAX_FRAME);
        let mut r = frames(r);
        w.write_all(&written).await.unwrap();
        assert_eq!(&read_frame(&mut r).await.unwrap()[..], &body[..]);
        // A length past the limit is refused before its body is read.
        let too_long = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes();
        w.write_all(&too_long).await.unwrap();
        assert!(read_frame(&mut r).await.is_err());
    }
}

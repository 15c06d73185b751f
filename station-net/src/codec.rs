//! The protobuf codec for our services, with small buffers.
//!
//! Every message here is a few bytes, but tonic's default codec gives each
//! stream an 8 KiB encode and an 8 KiB decode buffer up front. With a
//! hundred thousand streams that is most of the server's memory, so our
//! streams start at [`BUFFER`] bytes; a buffer still grows when a message
//! needs it (up to the decode limit).

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Initial encode and decode buffer per stream, bytes.
pub const BUFFER: usize = 256;

/// Flush to the transport once this much is encoded (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// `tonic_prost::ProstCodec` with [`BUFFER`]-byte buffers. Named in
/// `build.rs` (`codec_path`) so the generated client and server use it.
#[derive(Debug, Clone, Copy)]
pub struct SmallCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallCodec<T, U> {
    fn default() -> Self {
        SmallCodec(PhantomData)
    }
}

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER, YIELD_THRESHOLD)
}

impl<T, U> Codec for SmallCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}

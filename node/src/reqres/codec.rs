//! The framing every Waku request/response protocol uses: one stream per request, one
//! unsigned-varint length-prefixed protobuf each way (waku.md §1).
//!
//! The codec moves raw bytes, bounded per protocol; decoding happens in the protocol's own
//! module after the throttle has had its say, so an over-quota request costs no decoding.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{request_response, StreamProtocol};
use prometheus_client::metrics::counter::Counter;

/// Byte limits for one protocol's frames.
#[derive(Debug, Clone)]
pub struct LpCodec {
    pub max_request_bytes: usize,
    pub max_response_bytes: usize,
    /// One-way protocols (filter push): the sender does not wait for an answer, and the
    /// receiver's empty "response" is written as nothing at all (it just closes the stream).
    pub one_way: bool,
    /// Counts inbound requests that could not be read (over the limit, truncated): libp2p
    /// drops those streams without telling the behaviour, so this is the only place to see them.
    unreadable_requests: Option<Counter>,
}

impl LpCodec {
    pub fn new(max_request_bytes: usize, max_response_bytes: usize) -> Self {
        LpCodec {
            max_request_bytes,
            max_response_bytes,
            one_way: false,
            unreadable_requests: None,
        }
    }

    /// A codec for a protocol whose requests get no response: the sender counts a request
    /// delivered once written; the receiver answers with an empty response, which only closes
    /// the stream.
    pub fn one_way(max_request_bytes: usize) -> Self {
        LpCodec {
            max_request_bytes,
            max_response_bytes: 0,
            one_way: true,
            unreadable_requests: None,
        }
    }

    /// Counts unreadable inbound requests in `counter`.
    pub fn counting_unreadable_requests(mut self, counter: Counter) -> Self {
        self.unreadable_requests = Some(counter);
        self
    }
}

/// Reads an unsigned LEB128 varint of at most 10 bytes. `Ok(None)` on a clean EOF before the
/// first byte, so callers can tell "peer sent nothing" from "peer sent garbage".
pub async fn read_varint<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Option<u64>> {
    let mut value: u64 = 0;
    for i in 0..10u32 {
        let mut byte = [0u8; 1];
        let n = io.read(&mut byte).await?;
        if n == 0 {
            if i == 0 {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside a length prefix",
            ));
        }
        value |= u64::from(byte[0] & 0x7f) << (7 * i);
        if byte[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "length prefix longer than 10 bytes",
    ))
}

/// Encodes `value` as an unsigned LEB128 varint.
pub fn encode_varint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Reads one length-prefixed frame of at most `max` bytes. `Ok(None)` when the stream ended
/// before the frame started.
pub async fn read_frame<T: AsyncRead + Unpin>(
    io: &mut T,
    max: usize,
) -> io::Result<Option<Vec<u8>>> {
    let Some(len) = read_varint(io).await? else {
        return Ok(None);
    };
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FrameTooLarge { len, max },
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Writes one length-prefixed frame and flushes.
pub async fn write_frame<T: AsyncWrite + Unpin>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let mut prefixed = Vec::with_capacity(bytes.len() + 10);
    encode_varint(bytes.len() as u64, &mut prefixed);
    prefixed.extend_from_slice(bytes);
    io.write_all(&prefixed).await?;
    io.flush().await
}

/// The error inside an `InvalidData` io error when a frame is over its limit; protocols map it
/// to their "too large" status.
#[derive(Debug, thiserror::Error)]
#[error("frame of {len} bytes exceeds the limit of {max} bytes")]
pub struct FrameTooLarge {
    pub len: usize,
    pub max: usize,
}

impl request_response::Codec for LpCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let read = read_frame(io, self.max_request_bytes)
            .await
            .and_then(|frame| {
                frame.ok_or_else(|| {
                    io::Error::new(io::ErrorKind::UnexpectedEof, "empty request stream")
                })
            });
        if let (Err(_), Some(counter)) = (&read, &self.unreadable_requests) {
            counter.inc();
        }
        read
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        if self.one_way {
            // Nothing comes back on a one-way protocol, and receivers differ in how they end the
            // stream (js-waku never closes its side, nwaku's sender does not wait): the request
            // is delivered once written and our side closed, as nwaku counts it.
            return Ok(Vec::new());
        }
        // A peer that closes the stream without a response is read as an empty response.
        Ok(read_frame(io, self.max_response_bytes)
            .await?
            .unwrap_or_default())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        if self.one_way && res.is_empty() {
            // request_response closes the stream after this returns: that is the answer.
            return io.flush().await;
        }
        write_frame(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            encode_varint(v, &mut buf);
            let mut cursor = futures::io::Cursor::new(buf);
            let got = futures::executor::block_on(read_varint(&mut cursor)).unwrap();
            assert_eq!(got, Some(v));
        }
    }

    #[test]
    fn frames_over_the_limit_are_refused_before_reading_them() {
        let mut buf = Vec::new();
        encode_varint(1_000_000, &mut buf);
        let mut cursor = futures::io::Cursor::new(buf);
        let err = futures::executor::block_on(read_frame(&mut cursor, 1024)).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("exceeds the limit"));
    }

    #[test]
    fn truncated_frames_are_errors_and_empty_streams_are_none() {
        let mut cursor = futures::io::Cursor::new(vec![5u8, 1, 2]);
        assert!(futures::executor::block_on(read_frame(&mut cursor, 1024)).is_err());
        let mut empty = futures::io::Cursor::new(Vec::<u8>::new());
        assert!(futures::executor::block_on(read_frame(&mut empty, 1024))
            .unwrap()
            .is_none());
        let mut overlong = futures::io::Cursor::new(vec![0xffu8; 11]);
        assert!(futures::executor::block_on(read_varint(&mut overlong)).is_err());
    }
}

//! The WebSocket wire format (RFC 6455 §5), server side.
//!
//! Server frames are unmasked, so a message is encoded once and the same
//! bytes are written to every socket. Client frames are masked, small (PING,
//! RECONNECT, pongs, a close) and decoded here without a per-socket buffer
//! unless a frame arrives split across reads.

use bytes::{BufMut, Bytes, BytesMut};

/// Largest inbound frame or message (API.md "Limits").
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// A heartbeat ping with an empty payload.
pub const PING_FRAME: &[u8] = &[FIN | PING, 0];

/// Appends one unfragmented, unmasked frame to `out`.
fn put_frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    out.put_u8(FIN | opcode);
    match payload.len() {
        n @ 0..=125 => out.put_u8(n as u8),
        n @ 126..=0xFFFF => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
}

/// Encodes text messages back to back, as one buffer to write at once.
pub fn texts<'a>(messages: impl IntoIterator<Item = &'a str>) -> Bytes {
    let mut out = BytesMut::new();
    for m in messages {
        put_frame(&mut out, TEXT, m.as_bytes());
    }
    out.freeze()
}

/// One text message.
pub fn text(message: &str) -> Bytes {
    texts([message])
}

/// A close frame; the reason is cut to fit a control frame (125 bytes).
pub fn close(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason[..end];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    let mut out = BytesMut::new();
    put_frame(&mut out, CLOSE, &payload);
    out.freeze()
}

/// A close frame without a code (the answer to a client's close that gave none).
pub fn close_empty() -> Bytes {
    Bytes::from_static(&[FIN | CLOSE, 0])
}

/// The answer to a client's ping: a pong with its payload.
pub fn pong(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    put_frame(&mut out, PONG, payload);
    out.freeze()
}

/// A complete message or control frame from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    /// The client's close, with its code if it gave one.
    Close(Option<u16>),
}

/// Why the client's bytes are not a WebSocket stream we accept: the close
/// code and reason to answer with.
#[derive(Debug, PartialEq, Eq)]
pub struct Violation(pub u16, pub &'static str);

const TOO_LARGE: Violation = Violation(1009, "frame or message over 64 KiB");

/// Reassembles client frames across reads.
#[derive(Default)]
pub struct Decoder {
    /// Bytes of an incomplete frame (empty, without an allocation, between frames).
    pending: Vec<u8>,
    /// A fragmented message being assembled: its opcode and payload so far.
    message: Option<(u8, Vec<u8>)>,
}

impl Decoder {
    /// Decodes what `data` completes; the remainder is kept for the next read.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<Inbound>) -> Result<(), Violation> {
        if self.pending.is_empty() {
            let used = self.frames(data, out)?;
            self.pending.extend_from_slice(&data[used..]);
        } else {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(data);
            let used = self.frames(&pending, out)?;
            pending.drain(..used);
            if pending.is_empty() {
                pending = Vec::new(); // give the memory back while idle
            }
            self.pending = pending;
        }
        Ok(())
    }

    /// Decodes every complete frame at the start of `data`; returns the bytes used.
    fn frames(&mut self, data: &[u8], out: &mut Vec<Inbound>) -> Result<usize, Violation> {
        let mut at = 0;
        while let Some((header, len)) = parse_header(&data[at..])? {
            let Some(masked) = data.get(at + header..at + header + len) else {
                break;
            };
            let mask = [
                data[at + header - 4],
                data[at + header - 3],
                data[at + header - 2],
                data[at + header - 1],
            ];
            let payload: Vec<u8> = masked
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            let (fin, opcode) = (data[at] & FIN != 0, data[at] & 0x0F);
            at += header + len;
            if let Some(inbound) = self.frame(fin, opcode, payload)? {
                let closed = matches!(inbound, Inbound::Close(_));
                out.push(inbound);
                if closed {
                    // Nothing after a close counts (RFC 6455 §5.5.1).
                    return Ok(data.len());
                }
            }
        }
        Ok(at)
    }

    fn frame(
        &mut self,
        fin: bool,
        opcode: u8,
        payload: Vec<u8>,
    ) -> Result<Option<Inbound>, Violation> {
        match opcode {
            PING => Ok(Some(Inbound::Ping(payload))),
            PONG => Ok(Some(Inbound::Pong)),
            CLOSE => match payload.len() {
                0 => Ok(Some(Inbound::Close(None))),
                1 => Err(Violation(1002, "close frame with a 1-byte payload")),
                _ => {
                    let code = u16::from_be_bytes([payload[0], payload[1]]);
                    if std::str::from_utf8(&payload[2..]).is_err() {
                        return Err(Violation(1007, "close reason is not UTF-8"));
                    }
                    Ok(Some(Inbound::Close(Some(code))))
                }
            },
            TEXT | BINARY if self.message.is_some() => {
                Err(Violation(1002, "new message inside a fragmented one"))
            }
            TEXT | BINARY if !fin => {
                self.message = Some((opcode, payload));
                Ok(None)
            }
            TEXT | BINARY => complete(opcode, payload).map(Some),
            CONTINUATION => {
                let Some((_, so_far)) = self.message.as_mut() else {
                    return Err(Violation(1002, "continuation without a message"));
                };
                if so_far.len() + payload.len() > MAX_MESSAGE_BYTES {
                    return Err(TOO_LARGE);
                }
                so_far.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                let (opcode, whole) = self.message.take().unwrap_or_default();
                complete(opcode, whole).map(Some)
            }
            _ => Err(Violation(1002, "unknown opcode")),
        }
    }
}

fn complete(opcode: u8, payload: Vec<u8>) -> Result<Inbound, Violation> {
    if opcode == BINARY {
        return Ok(Inbound::Binary);
    }
    String::from_utf8(payload)
        .map(Inbound::Text)
        .map_err(|_| Violation(1007, "text message is not UTF-8"))
}

/// The header's length (mask included) and the payload's, once the header
/// is complete; a frame that breaks the rules or the size limit is refused
/// before its payload is waited for.
fn parse_header(data: &[u8]) -> Result<Option<(usize, usize)>, Violation> {
    let [b0, b1, ..] = *data else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(Violation(1002, "reserved bits set"));
    }
    if b1 & 0x80 == 0 {
        return Err(Violation(1002, "client frames must be masked"));
    }
    let control = b0 & 0x08 != 0;
    let (extra, len) = match b1 & 0x7F {
        126 => match data.get(2..4) {
            Some(b) => (2, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match data.get(2..10) {
            Some(b) => (8, u64::from_be_bytes(b.try_into().unwrap_or_default())),
            None => return Ok(None),
        },
        n => (0, u64::from(n)),
    };
    if control && (len > 125 || b0 & FIN == 0) {
        return Err(Violation(
            1002,
            "control frames must be whole and at most 125 bytes",
        ));
    }
    if len > MAX_MESSAGE_BYTES as u64 {
        return Err(TOO_LARGE);
    }
    let header = 2 + extra + 4;
    if data.len() < header {
        return Ok(None);
    }
    Ok(Some((header, len as usize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client frame: masked, as a browser sends it.
    fn client(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![if fin { FIN } else { 0 } | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n @ 126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn decode(bytes: &[u8]) -> Result<Vec<Inbound>, Violation> {
        let mut out = Vec::new();
        Decoder::default().feed(bytes, &mut out).map(|()| out)
    }

    #[test]
    fn server_frames_use_the_shortest_length_form() {
        assert_eq!(&text("hi")[..], &[0x81, 2, b'h', b'i']);
        let long = "x".repeat(300);
        assert_eq!(&text(&long)[..4], &[0x81, 126, 1, 44]);
        let huge = "x".repeat(70_000);
        assert_eq!(&text(&huge)[..2], &[0x81, 127]);
        assert_eq!(text(&huge).len(), 70_000 + 10);
        assert_eq!(
            &close(1000, "bye")[..],
            &[0x88, 5, 0x03, 0xE8, b'b', b'y', b'e']
        );
        assert!(
            close(1000, &"é".repeat(100)).len() <= 127,
            "a control frame stays small"
        );
    }

    #[test]
    fn messages_split_anywhere_decode_the_same() {
        let mut stream = client(true, TEXT, br#"{"type":"PING"}"#);
        stream.extend(client(false, TEXT, b"frag"));
        stream.extend(client(true, PING, b"p"));
        stream.extend(client(true, CONTINUATION, b"mented"));
        stream.extend(client(true, CLOSE, &[0x03, 0xE8]));
        let want = vec![
            Inbound::Text(r#"{"type":"PING"}"#.into()),
            Inbound::Ping(b"p".to_vec()),
            Inbound::Text("fragmented".into()),
            Inbound::Close(Some(1000)),
        ];
        for cut in 0..stream.len() {
            let mut decoder = Decoder::default();
            let mut out = Vec::new();
            decoder.feed(&stream[..cut], &mut out).unwrap();
            decoder.feed(&stream[cut..], &mut out).unwrap();
            assert_eq!(out, want, "cut at {cut}");
        }
    }

    #[test]
    fn protocol_violations_get_their_close_codes() {
        let code = |bytes: &[u8]| decode(bytes).err().map(|v| v.0);
        let mut unmasked = client(true, TEXT, b"x");
        unmasked[1] &= 0x7F;
        assert_eq!(code(&unmasked[..3]), Some(1002));
        assert_eq!(code(&client(true, 0x3, b"")), Some(1002), "unknown opcode");
        assert_eq!(code(&client(true, CONTINUATION, b"x")), Some(1002));
        assert_eq!(
            code(&client(false, PING, b"")),
            Some(1002),
            "fragmented control"
        );
        assert_eq!(code(&client(true, PING, &[0; 126])), Some(1002));
        assert_eq!(code(&client(true, TEXT, &[0xFF])), Some(1007));
        // Too large is refused from the header alone.
        let big = client(true, TEXT, &vec![b'x'; MAX_MESSAGE_BYTES + 1]);
        assert_eq!(code(&big[..14]), Some(1009));
        let mut parts = client(false, TEXT, &vec![b'x'; MAX_MESSAGE_BYTES]);
        parts.extend(client(true, CONTINUATION, b"x"));
        assert_eq!(
            code(&parts),
            Some(1009),
            "the message counts, not the frame"
        );
        assert_eq!(
            decode(&client(true, TEXT, &vec![b'x'; MAX_MESSAGE_BYTES])).map(|m| m.len()),
            Ok(1)
        );
        assert_eq!(
            decode(&client(true, BINARY, b"\x00")),
            Ok(vec![Inbound::Binary])
        );
    }
}

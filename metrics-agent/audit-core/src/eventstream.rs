//! AWS event stream framing (`application/vnd.amazon.eventstream`: Bedrock's
//! ConverseStream and InvokeModelWithResponseStream), decoded as bytes
//! arrive. Each message is a 12-byte prelude (total length, headers length,
//! CRC32 of those 8 bytes, all big-endian), typed headers, a payload, and a
//! CRC32 of everything before it. A message whose CRC does not match is
//! skipped and counted; a prelude whose CRC does not match loses the
//! framing, so the rest of the body is ignored (and counted once).

/// Prelude plus trailing message CRC.
const OVERHEAD: usize = 16;
const PRELUDE: usize = 12;

/// One decoded message: the headers a reader needs and the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// `:message-type`: `event`, `exception` or `error`.
    pub message_type: Option<String>,
    /// `:event-type` (`contentBlockDelta`, `metadata`, `chunk`, ...).
    pub event_type: Option<String>,
    /// `:exception-type` (`throttlingException`, ...) or `:error-code`.
    pub exception_type: Option<String>,
    pub payload: Vec<u8>,
}

/// Incremental decoder of one body; memory is bounded by `max_message`.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_message: usize,
    /// Bytes of an oversized message still to skip.
    skip: usize,
    /// The framing was lost (a bad prelude): nothing more is decoded.
    lost: bool,
    /// Messages skipped: bad message CRC or headers, or longer than `max_message`.
    pub bad_messages: u64,
    /// Messages longer than `max_message` (also in `bad_messages`).
    pub oversized: u64,
    /// Preludes whose CRC or lengths were wrong (the framing was lost there).
    pub bad_preludes: u64,
}

impl Decoder {
    pub fn new(max_message: usize) -> Self {
        Self { buf: Vec::new(), max_message, skip: 0, lost: false, bad_messages: 0, oversized: 0, bad_preludes: 0 }
    }

    /// Heap held now.
    pub fn memory(&self) -> usize {
        self.buf.capacity()
    }

    /// Feeds body bytes; `on_message` gets every complete, intact message.
    pub fn feed(&mut self, mut bytes: &[u8], mut on_message: impl FnMut(Message)) {
        while !bytes.is_empty() && !self.lost {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            // Take what the current message (or prelude) still needs.
            let need = match self.total_len() {
                Some(total) => total - self.buf.len(),
                None => PRELUDE - self.buf.len(),
            };
            let n = need.min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() == PRELUDE && self.total_len().is_none() && !self.check_prelude() {
                continue;
            }
            if let Some(total) = self.total_len()
                && self.buf.len() == total
            {
                let message = std::mem::take(&mut self.buf);
                match decode(&message) {
                    Some(m) => on_message(m),
                    None => self.bad_messages += 1,
                }
            }
        }
    }

    /// The current message's total length, once its prelude is checked.
    fn total_len(&self) -> Option<usize> {
        (self.buf.len() > PRELUDE || (self.buf.len() == PRELUDE && self.prelude_ok()))
            .then(|| be32(&self.buf[0..4]) as usize)
    }

    fn prelude_ok(&self) -> bool {
        let total = be32(&self.buf[0..4]) as usize;
        let headers = be32(&self.buf[4..8]) as usize;
        crc32fast::hash(&self.buf[0..8]) == be32(&self.buf[8..12])
            && total >= OVERHEAD
            && headers <= total - OVERHEAD
            && total <= self.max_message
    }

    /// A complete prelude: keeps it when sound; otherwise skips an oversized
    /// message or gives up on a lost framing. False when it was dropped.
    fn check_prelude(&mut self) -> bool {
        if self.prelude_ok() {
            return true;
        }
        let total = be32(&self.buf[0..4]) as usize;
        let headers = be32(&self.buf[4..8]) as usize;
        let crc_ok = crc32fast::hash(&self.buf[0..8]) == be32(&self.buf[8..12]);
        if crc_ok && total >= OVERHEAD && headers <= total - OVERHEAD {
            // Sound but longer than the cap: skipped to its end.
            self.oversized += 1;
            self.bad_messages += 1;
            self.skip = total - PRELUDE;
        } else {
            self.bad_preludes += 1;
            self.lost = true;
        }
        self.buf = Vec::new();
        false
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be16(b: &[u8]) -> usize {
    u16::from_be_bytes([b[0], b[1]]) as usize
}

/// One whole message (prelude checked): None when its CRC or headers are wrong.
fn decode(m: &[u8]) -> Option<Message> {
    let total = m.len();
    let headers_len = be32(&m[4..8]) as usize;
    if crc32fast::hash(&m[..total - 4]) != be32(&m[total - 4..]) {
        return None;
    }
    let mut out = Message::default();
    let mut h = &m[PRELUDE..PRELUDE + headers_len];
    while let Some((&name_len, rest)) = h.split_first() {
        let name_len = name_len as usize;
        let name = rest.get(..name_len)?;
        let (&kind, rest) = rest.get(name_len..)?.split_first()?;
        let (value, rest): (Option<&[u8]>, &[u8]) = match kind {
            0 | 1 => (None, rest),
            2 => (None, rest.get(1..)?),
            3 => (None, rest.get(2..)?),
            4 => (None, rest.get(4..)?),
            5 | 8 => (None, rest.get(8..)?),
            9 => (None, rest.get(16..)?),
            6 | 7 => {
                let len = be16(rest.get(..2)?);
                (Some(rest.get(2..2 + len)?), &rest[2 + len..])
            }
            _ => return None,
        };
        let text = || value.map(|v| String::from_utf8_lossy(v).chars().take(128).collect::<String>());
        match name {
            b":message-type" => out.message_type = text(),
            b":event-type" => out.event_type = text(),
            b":exception-type" | b":error-code" => out.exception_type = text(),
            _ => {}
        }
        h = rest;
    }
    out.payload = m[PRELUDE + headers_len..total - 4].to_vec();
    Some(out)
}

/// Encodes one message with string headers (the unit tests, the fuzz target
/// and the e2e mock provider's Bedrock streams).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = (OVERHEAD + h.len() + payload.len()) as u32;
    let mut m = Vec::new();
    m.extend_from_slice(&total.to_be_bytes());
    m.extend_from_slice(&(h.len() as u32).to_be_bytes());
    m.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
    m.extend_from_slice(&h);
    m.extend_from_slice(payload);
    m.extend_from_slice(&crc32fast::hash(&m).to_be_bytes());
    m
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn event(kind: &str, payload: &str) -> Vec<u8> {
        encode(
            &[(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
            payload.as_bytes(),
        )
    }

    fn decoded(d: &mut Decoder, bytes: &[u8], piece: usize) -> Vec<Message> {
        let mut out = Vec::new();
        for p in bytes.chunks(piece.max(1)) {
            d.feed(p, |m| out.push(m));
        }
        out
    }

    #[test]
    fn messages_in_any_pieces() {
        let body = [event("messageStart", r#"{"role":"assistant"}"#), event("metadata", r#"{"usage":{}}"#)].concat();
        for piece in [1, 5, 12, 13, 4096] {
            let m = decoded(&mut Decoder::new(1024), &body, piece);
            assert_eq!(m.len(), 2, "pieces of {piece}");
            assert_eq!(m[0].event_type.as_deref(), Some("messageStart"));
            assert_eq!(m[1].payload, br#"{"usage":{}}"#);
            assert_eq!(m[1].message_type.as_deref(), Some("event"));
        }
    }

    #[test]
    fn a_bad_message_crc_skips_that_message_and_a_bad_prelude_stops() {
        let good = event("a", "{}");
        let mut bad = event("b", "{}");
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let mut d = Decoder::new(1024);
        let m = decoded(&mut d, &[good.clone(), bad, good.clone()].concat(), 7);
        assert_eq!((m.len(), d.bad_messages, d.bad_preludes), (2, 1, 0));
        let mut broken = good.clone();
        broken[9] ^= 1;
        let mut d = Decoder::new(1024);
        let m = decoded(&mut d, &[good.clone(), broken, good].concat(), 3);
        assert_eq!((m.len(), d.bad_preludes), (1, 1), "the framing is lost at the bad prelude");
    }

    #[test]
    fn oversized_messages_are_skipped_within_bounded_memory() {
        let big = event("chunk", &"x".repeat(5000));
        let small = event("chunk", "{}");
        let mut d = Decoder::new(1000);
        let mut seen = Vec::new();
        for p in [big, small].concat().chunks(100) {
            d.feed(p, |m| seen.push(m));
            assert!(d.memory() <= 1100);
        }
        assert_eq!((seen.len(), d.oversized), (1, 1));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_bounded(body in prop::collection::vec(any::<u8>(), 0..3000), piece in 1usize..64) {
            let mut d = Decoder::new(512);
            for p in body.chunks(piece) {
                d.feed(p, |_| {});
                prop_assert!(d.memory() <= 1024);
            }
        }

        #[test]
        fn encoded_messages_decode_to_what_was_encoded(kind in "[a-zA-Z]{1,20}", payload in prop::collection::vec(any::<u8>(), 0..300)) {
            let mut d = Decoder::new(1024);
            let m = decoded(&mut d, &encode(&[(":event-type", &kind)], &payload), 11);
            prop_assert_eq!(m.len(), 1);
            prop_assert_eq!(m[0].event_type.as_deref(), Some(kind.as_str()));
            prop_assert_eq!(&m[0].payload, &payload);
        }
    }
}

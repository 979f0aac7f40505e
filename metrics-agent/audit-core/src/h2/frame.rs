//! Incremental HTTP/2 frame reader over one direction of a connection
//! (RFC 9113 §4): the client preface is skipped, control and header frames
//! come out whole (buffered up to a bound), DATA frames come out as their
//! content arrives, with padding removed, so a body of any length needs no
//! buffer.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADER_LEN: usize = 9;
/// Largest non-DATA frame payload kept; header blocks beyond it break the
/// connection's parse (HPACK state cannot be kept), other frames are skipped.
pub const MAX_BUFFERED_FRAME: usize = 64 * 1024;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PUSH_PROMISE: u8 = 5;
pub const GOAWAY: u8 = 7;
pub const CONTINUATION: u8 = 9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

/// The 9-byte header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    fn parse(b: &[u8; HEADER_LEN]) -> Self {
        Self {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// What the reader found in the bytes fed to it.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameEvent<'a> {
    /// A whole non-DATA frame.
    Frame { header: FrameHeader, payload: &'a [u8] },
    /// Content bytes of a DATA frame (padding removed).
    Data { stream: u32, bytes: &'a [u8] },
    /// The end of a DATA frame.
    DataEnd { stream: u32, end_stream: bool },
}

#[derive(Debug)]
enum State {
    /// Bytes of the client preface seen so far.
    Preface(usize),
    Header,
    /// A non-DATA frame's payload being buffered (or skipped when too long).
    Payload {
        header: FrameHeader,
        left: usize,
        skip: bool,
    },
    /// A padded DATA frame's pad-length byte.
    PadLength {
        header: FrameHeader,
    },
    DataContent {
        header: FrameHeader,
        left: usize,
        pad: usize,
    },
    DataPadding {
        header: FrameHeader,
        left: usize,
    },
    /// A malformed stream: nothing after is parsed.
    Broken,
}

/// Reads the frames of one direction.
#[derive(Debug)]
pub struct FrameReader {
    state: State,
    header: [u8; HEADER_LEN],
    have: usize,
    payload: Vec<u8>,
}

/// A frame that cannot be parsed: the direction stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the connection did not start with the HTTP/2 client preface")]
    NoPreface,
    #[error("a {kind} frame of {len} bytes is longer than the {MAX_BUFFERED_FRAME}-byte limit")]
    TooLong { kind: u8, len: u32 },
    #[error("a padded frame's padding is longer than the frame")]
    BadPadding,
}

impl FrameReader {
    /// `preface`: the direction starts with the client preface (the
    /// client's side of the connection).
    pub fn new(preface: bool) -> Self {
        Self {
            state: if preface { State::Preface(0) } else { State::Header },
            header: [0; HEADER_LEN],
            have: 0,
            payload: Vec::new(),
        }
    }

    pub fn is_broken(&self) -> bool {
        matches!(self.state, State::Broken)
    }

    /// Heap held (a frame payload being buffered).
    pub fn memory(&self) -> usize {
        self.payload.capacity()
    }

    /// Feeds bytes; `on` sees each event in order. Stops at the first error.
    pub fn feed(&mut self, mut data: &[u8], mut on: impl FnMut(FrameEvent<'_>)) -> Result<(), FrameError> {
        while !data.is_empty() {
            let used = match self.step(data, &mut on) {
                Ok(used) => used,
                Err(e) => {
                    self.state = State::Broken;
                    self.payload = Vec::new();
                    return Err(e);
                }
            };
            data = &data[used..];
        }
        Ok(())
    }

    fn step(&mut self, data: &[u8], on: &mut impl FnMut(FrameEvent<'_>)) -> Result<usize, FrameError> {
        match self.state {
            State::Broken => Ok(data.len()),
            State::Preface(seen) => {
                let n = (PREFACE.len() - seen).min(data.len());
                if data[..n] != PREFACE[seen..seen + n] {
                    return Err(FrameError::NoPreface);
                }
                self.state = if seen + n == PREFACE.len() { State::Header } else { State::Preface(seen + n) };
                Ok(n)
            }
            State::Header => {
                let n = (HEADER_LEN - self.have).min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                if self.have == HEADER_LEN {
                    self.have = 0;
                    self.begin(FrameHeader::parse(&self.header), on);
                }
                Ok(n)
            }
            State::Payload { header, left, skip } => {
                let n = left.min(data.len());
                if !skip {
                    self.payload.extend_from_slice(&data[..n]);
                }
                if n == left {
                    self.state = State::Header;
                    if !skip {
                        on(FrameEvent::Frame { header, payload: &self.payload });
                    }
                    self.payload = Vec::new();
                } else {
                    self.state = State::Payload { header, left: left - n, skip };
                }
                Ok(n)
            }
            State::PadLength { header } => {
                let pad = data[0] as usize;
                let content = (header.len as usize - 1).checked_sub(pad).ok_or(FrameError::BadPadding)?;
                self.state = State::DataContent { header, left: content, pad };
                self.data_progress(on);
                Ok(1)
            }
            State::DataContent { header, left, pad } => {
                let n = left.min(data.len());
                on(FrameEvent::Data { stream: header.stream, bytes: &data[..n] });
                self.state = State::DataContent { header, left: left - n, pad };
                self.data_progress(on);
                Ok(n)
            }
            State::DataPadding { header, left } => {
                let n = left.min(data.len());
                self.state = State::DataPadding { header, left: left - n };
                self.data_progress(on);
                Ok(n)
            }
        }
    }

    /// A frame header was read: sets up reading its payload.
    fn begin(&mut self, header: FrameHeader, on: &mut impl FnMut(FrameEvent<'_>)) {
        let len = header.len as usize;
        if header.kind == DATA {
            self.state = if header.flags & FLAG_PADDED != 0 && len > 0 {
                State::PadLength { header }
            } else {
                State::DataContent { header, left: len, pad: 0 }
            };
            self.data_progress(on);
            return;
        }
        let skip = len > MAX_BUFFERED_FRAME;
        self.state = State::Payload { header, left: len, skip };
        if len == 0 {
            self.state = State::Header;
            on(FrameEvent::Frame { header, payload: &[] });
        } else if !skip {
            self.payload = Vec::with_capacity(len.min(16 * 1024));
        } else if matches!(header.kind, HEADERS | CONTINUATION | PUSH_PROMISE) {
            // A header block that is not decoded desynchronises HPACK.
            self.state = State::Broken;
            self.payload = Vec::new();
        }
    }

    /// Moves through the empty parts of a DATA frame; reports its end.
    fn data_progress(&mut self, on: &mut impl FnMut(FrameEvent<'_>)) {
        if let State::DataContent { header, left: 0, pad } = self.state {
            self.state = State::DataPadding { header, left: pad };
        }
        if let State::DataPadding { header, left: 0 } = self.state {
            self.state = State::Header;
            on(FrameEvent::DataEnd { stream: header.stream, end_stream: header.flags & FLAG_END_STREAM != 0 });
        }
    }
}

/// Encodes a frame header (tests and fuzz seeds).
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut out = vec![len[1], len[2], len[3], kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(reader: &mut FrameReader, bytes: &[u8], piece: usize) -> Vec<String> {
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece) {
            reader
                .feed(chunk, |e| {
                    out.push(match e {
                        FrameEvent::Frame { header, payload } => {
                            format!("F{} {} {:?}", header.kind, header.stream, payload)
                        }
                        FrameEvent::Data { stream, bytes } => format!("D{stream} {}", String::from_utf8_lossy(bytes)),
                        FrameEvent::DataEnd { stream, end_stream } => format!("E{stream} {end_stream}"),
                    })
                })
                .unwrap();
        }
        // Merge adjacent data pieces so every split gives the same result.
        let mut merged: Vec<String> = Vec::new();
        for e in out {
            match (merged.last_mut(), e.strip_prefix('D')) {
                (Some(last), Some(rest)) if last.starts_with('D') => {
                    let (_, text) = rest.split_once(' ').unwrap();
                    last.push_str(text);
                }
                _ => merged.push(e),
            }
        }
        merged
    }

    #[test]
    fn frames_come_out_whole_whatever_the_split_and_padding_is_removed() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(SETTINGS, 0, 0, &[0, 1, 0, 0, 0x10, 0]));
        bytes.extend(frame(HEADERS, FLAG_END_HEADERS, 1, &[0x82]));
        let mut padded = vec![3];
        padded.extend_from_slice(b"hello");
        padded.extend_from_slice(&[0, 0, 0]);
        bytes.extend(frame(DATA, FLAG_PADDED, 1, &padded));
        bytes.extend(frame(DATA, FLAG_END_STREAM, 1, b" world"));
        bytes.extend(frame(RST_STREAM, 0, 3, &[0, 0, 0, 8]));
        let want = vec![
            "F4 0 [0, 1, 0, 0, 16, 0]",
            "F1 1 [130]",
            "D1 hello",
            "E1 false",
            "D1  world",
            "E1 true",
            "F3 3 [0, 0, 0, 8]",
        ];
        for piece in [1, 2, 5, 9, 1000] {
            assert_eq!(collect(&mut FrameReader::new(true), &bytes, piece), want, "pieces of {piece}");
        }
    }

    #[test]
    fn bad_input_stops_the_direction_with_an_error() {
        let mut r = FrameReader::new(true);
        assert_eq!(r.feed(b"GET / HTTP/1.1\r\n", |_| {}), Err(FrameError::NoPreface));
        assert!(r.is_broken());
        let mut r = FrameReader::new(false);
        assert_eq!(r.feed(&frame(DATA, FLAG_PADDED, 1, &[9, 1, 2]), |_| {}), Err(FrameError::BadPadding));
        let mut r = FrameReader::new(false);
        let long = frame(HEADERS, 0, 1, &vec![0; MAX_BUFFERED_FRAME + 1]);
        r.feed(&long, |_| {}).unwrap();
        assert!(r.is_broken(), "a header block too long to keep stops the direction");
        let mut r = FrameReader::new(false);
        let mut events = 0;
        r.feed(&frame(6, 0, 0, &vec![0; MAX_BUFFERED_FRAME + 1]), |_| events += 1).unwrap();
        r.feed(&frame(SETTINGS, FLAG_ACK, 0, &[]), |_| events += 1).unwrap();
        assert_eq!(events, 1, "a long non-header frame is skipped");
        assert!(r.memory() < 32 * 1024);
    }
}

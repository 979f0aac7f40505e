//! A client that sends requests through a proxy and counts ground truth:
//! requests, statuses, aborts and the exact bytes it sent and received.

use std::{
    collections::BTreeMap,
    io::{self, Read, Write},
    net::TcpStream,
    os::fd::AsRawFd,
    time::Duration,
};

use crate::http1::Reader;

/// What the client saw.
#[derive(Debug, Default, Clone)]
pub struct Truth {
    pub requests: u64,
    pub by_status: BTreeMap<u16, u64>,
    /// Requests the client gave up on mid-response.
    pub aborted: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

impl Truth {
    pub fn status_class(&self, class: u16) -> u64 {
        self.by_status.iter().filter(|(s, _)| **s / 100 == class).map(|(_, n)| n).sum()
    }

    /// Requests that failed: status >= 400, or aborted.
    pub fn failed(&self) -> u64 {
        self.by_status.iter().filter(|(s, _)| **s >= 400).map(|(_, n)| n).sum::<u64>() + self.aborted
    }
}

/// One client connection to the proxy (keep-alive when reused).
pub struct Client {
    reader: Reader<TcpStream>,
    writer: TcpStream,
    pub truth: Truth,
    /// Header lines (each ending in CRLF) added to every request.
    pub extra_headers: String,
}

impl Client {
    pub fn connect(port: u16) -> io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Self {
            writer: stream.try_clone()?,
            reader: Reader::new(stream),
            truth: Truth::default(),
            extra_headers: String::new(),
        })
    }

    fn send_request(&mut self, path: &str, body_len: usize, close: bool) -> io::Result<()> {
        self.send_request_split(path, body_len, close, 0)
    }

    /// Writes the request in two writes, the first `split` bytes long
    /// (0: one write), 50 ms apart.
    fn send_request_split(&mut self, path: &str, body_len: usize, close: bool, split: usize) -> io::Result<()> {
        let body = format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
            "q".repeat(body_len.saturating_sub(70))
        );
        let conn = if close { "close" } else { "keep-alive" };
        let req = format!(
            "POST {path} HTTP/1.1\r\nhost: proxy.test\r\ncontent-type: application/json\r\nauthorization: Bearer sk-test-canary\r\n{}content-length: {}\r\nconnection: {conn}\r\n\r\n{body}",
            self.extra_headers,
            body.len()
        );
        let split = split.min(req.len());
        self.writer.write_all(&req.as_bytes()[..split])?;
        if split > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.writer.write_all(&req.as_bytes()[split..])?;
        self.truth.bytes_sent += req.len() as u64;
        self.truth.requests += 1;
        Ok(())
    }

    /// Like `request`, with the request line cut after `split` bytes.
    pub fn request_split(&mut self, path: &str, split: usize) -> io::Result<u16> {
        self.send_request_split(path, 100, false, split)?;
        let before = self.reader.bytes_read;
        let head = self.reader.read_head()?.ok_or(io::ErrorKind::UnexpectedEof)?;
        self.reader.relay_body(&head, false, |_| Ok(()))?;
        self.truth.bytes_received += self.reader.bytes_read - before;
        *self.truth.by_status.entry(head.status()).or_default() += 1;
        Ok(head.status())
    }

    /// Sends one request and reads the whole response; returns its status.
    pub fn request(&mut self, path: &str, body_len: usize, close: bool) -> io::Result<u16> {
        self.send_request(path, body_len, close)?;
        let before = self.reader.bytes_read;
        let head = self.reader.read_head()?.ok_or(io::ErrorKind::UnexpectedEof)?;
        self.reader.relay_body(&head, false, |_| Ok(()))?;
        if close {
            self.reader.read_to_close()?;
        }
        self.truth.bytes_received += self.reader.bytes_read - before;
        *self.truth.by_status.entry(head.status()).or_default() += 1;
        Ok(head.status())
    }

    /// Sends a streaming request, reads the head and the first event, then
    /// resets the connection (SO_LINGER 0) as a client that gives up.
    pub fn request_and_abort(mut self, path: &str) -> io::Result<Truth> {
        self.send_request(path, 100, false)?;
        let before = self.reader.bytes_read;
        let head = self.reader.read_head()?.ok_or(io::ErrorKind::UnexpectedEof)?;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while crate::http1::find(&seen, b"\n\n").is_none() {
            let n = self.reader.inner.read(&mut buf)?;
            if n == 0 {
                break;
            }
            self.reader.bytes_read += n as u64;
            seen.extend_from_slice(&buf[..n]);
        }
        // Read whatever else already arrived, so every byte the proxy wrote
        // before the reset is a byte we saw.
        std::thread::sleep(Duration::from_millis(30));
        self.reader.inner.set_nonblocking(true)?;
        while let Ok(n) = self.reader.inner.read(&mut buf) {
            if n == 0 {
                break;
            }
            self.reader.bytes_read += n as u64;
        }
        self.truth.bytes_received += self.reader.bytes_read - before;
        *self.truth.by_status.entry(head.status()).or_default() += 1;
        self.truth.aborted += 1;
        let linger = libc::linger { l_onoff: 1, l_linger: 0 };
        // SAFETY: setsockopt with a valid linger struct.
        unsafe {
            libc::setsockopt(
                self.writer.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                size_of::<libc::linger>() as u32,
            );
        }
        Ok(self.truth)
    }
}

impl Truth {
    pub fn add(&mut self, other: &Truth) {
        self.requests += other.requests;
        self.aborted += other.aborted;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        for (s, n) in &other.by_status {
            *self.by_status.entry(*s).or_default() += n;
        }
    }
}

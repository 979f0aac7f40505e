//! Minimal HTTP/1.1 message reading shared by the mock provider, the test
//! proxy and the client. Every function counts the raw bytes it reads.

use std::io::{self, Read, Write};

/// A parsed request or response head.
#[derive(Debug, Clone)]
pub struct Head {
    pub first_line: String,
    pub headers: Vec<(String, String)>,
    /// The raw head bytes, CRLFCRLF included.
    pub raw: Vec<u8>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Status code of a response head.
    pub fn status(&self) -> u16 {
        self.first_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
    }

    pub fn is_http10(&self) -> bool {
        self.first_line.contains("HTTP/1.0")
    }

    pub fn content_length(&self) -> Option<u64> {
        self.header("content-length").and_then(|v| v.trim().parse().ok())
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

/// A stream with a read-ahead buffer and a count of bytes read.
pub struct Reader<S> {
    pub inner: S,
    buf: Vec<u8>,
    pub bytes_read: u64,
}

impl<S: Read> Reader<S> {
    pub fn new(inner: S) -> Self {
        Self { inner, buf: Vec::new(), bytes_read: 0 }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.inner.read(&mut chunk)?;
        self.bytes_read += n as u64;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// Reads a head; `None` on a clean EOF before any byte.
    pub fn read_head(&mut self) -> io::Result<Option<Head>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                let text = String::from_utf8_lossy(&raw).to_string();
                let mut lines = text.split("\r\n");
                let first_line = lines.next().unwrap_or_default().to_string();
                let headers = lines
                    .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
                    .collect();
                return Ok(Some(Head { first_line, headers, raw }));
            }
            if self.fill()? == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
            }
        }
    }

    /// Takes exactly `n` bytes.
    pub fn read_exact_vec(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Takes one line including its CRLF.
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                return Ok(self.buf.drain(..end + 2).collect());
            }
            if self.fill()? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Takes everything until EOF.
    pub fn read_to_close(&mut self) -> io::Result<Vec<u8>> {
        while self.fill()? > 0 {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// Reads a message body framed as `head` says, passing raw bytes (chunk
    /// framing included) to `sink` as they arrive. `no_body` for HEAD requests.
    pub fn relay_body(
        &mut self,
        head: &Head,
        no_body: bool,
        mut sink: impl FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<Framing> {
        let status = head.status();
        if no_body || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(Framing::Length);
        }
        if head.is_chunked() {
            loop {
                let line = self.read_line()?;
                sink(&line)?;
                let text = String::from_utf8_lossy(&line);
                let size = u64::from_str_radix(text.trim().split(';').next().unwrap_or("").trim(), 16)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
                if size == 0 {
                    loop {
                        let trailer = self.read_line()?;
                        sink(&trailer)?;
                        if trailer == b"\r\n" {
                            return Ok(Framing::Chunked);
                        }
                    }
                }
                let data = self.read_exact_vec(size as usize + 2)?;
                sink(&data)?;
            }
        }
        if let Some(len) = head.content_length() {
            let mut left = len as usize;
            while left > 0 {
                if self.buf.is_empty() && self.fill()? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let n = left.min(self.buf.len());
                let part: Vec<u8> = self.buf.drain(..n).collect();
                sink(&part)?;
                left -= n;
            }
            return Ok(Framing::Length);
        }
        if head.first_line.starts_with("HTTP/") {
            loop {
                if !self.buf.is_empty() {
                    let part = std::mem::take(&mut self.buf);
                    sink(&part)?;
                }
                if self.fill()? == 0 {
                    return Ok(Framing::Close);
                }
            }
        }
        Ok(Framing::Length) // a request without a body
    }
}

/// How a body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length,
    Chunked,
    Close,
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Writes everything and returns the byte count.
pub fn write_all_counted(w: &mut impl Write, data: &[u8]) -> io::Result<u64> {
    w.write_all(data)?;
    Ok(data.len() as u64)
}

//! Content-Encoding decoding of captured bodies (gzip, deflate, br, zstd, and
//! chains of them), with the decoded size bounded so a compression bomb
//! cannot grow the agent's memory.

use std::io::Read;

/// Decodes `body` as `content_encoding` says (codings applied in order, so
/// decoded in reverse). Output beyond `limit` bytes is cut. `None` when a
/// coding is unknown or the data is corrupt or truncated before any output.
pub fn decode<'a>(content_encoding: Option<&str>, body: &'a [u8], limit: usize) -> Option<std::borrow::Cow<'a, [u8]>> {
    // A body without a coding is read where it lies.
    let Some(codings) = content_encoding else { return Some(body.into()) };
    let mut data = body.to_vec();
    for coding in codings.split(',').map(|c| c.trim().to_ascii_lowercase()).rev() {
        data = match coding.as_str() {
            "" | "identity" => data,
            "gzip" | "x-gzip" => read_bounded(flate2::read::MultiGzDecoder::new(&data[..]), limit)?,
            "deflate" => read_bounded(flate2::read::ZlibDecoder::new(&data[..]), limit)
                .or_else(|| read_bounded(flate2::read::DeflateDecoder::new(&data[..]), limit))?,
            "br" => read_bounded(brotli_decompressor::Decompressor::new(&data[..], 4096), limit)?,
            "zstd" => read_bounded(ruzstd::decoding::StreamingDecoder::new(&data[..]).ok()?, limit)?,
            _ => return None,
        };
    }
    Some(data.into())
}

/// Reads up to `limit` bytes; keeps what was decoded before an error (a
/// truncated capture), `None` if nothing was.
fn read_bounded(reader: impl Read, limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut reader = reader.take(limit as u64);
    let mut buf = [0u8; 8192];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => return if out.is_empty() { None } else { Some(out) },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn gzip_and_deflate_round_trip_and_bombs_are_cut() {
        let text = br#"{"usage":{"prompt_tokens":12}}"#;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(text).unwrap();
        assert_eq!(decode(Some("gzip"), &gz.finish().unwrap(), 1 << 20).unwrap().as_ref(), text);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(text).unwrap();
        assert_eq!(decode(Some("deflate"), &z.finish().unwrap(), 1 << 20).unwrap().as_ref(), text);
        let zeros = vec![0u8; 10 << 20];
        let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        bomb.write_all(&zeros).unwrap();
        assert_eq!(decode(Some("gzip"), &bomb.finish().unwrap(), 4096).unwrap().len(), 4096);
        assert_eq!(decode(Some("compress"), b"x", 10), None);
        assert_eq!(decode(None, b"plain", 10).unwrap().as_ref(), b"plain");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2000), coding in prop_oneof![Just("gzip"), Just("deflate"), Just("br"), Just("zstd"), Just("gzip, br")]) {
            let _ = decode(Some(coding), &body, 1 << 16);
        }
    }
}

//! The W3C Trace Context `traceparent` request header
//! (<https://www.w3.org/TR/trace-context/>): only its trace id, parent span
//! id and flags are kept, so an exported span can join the client's trace.
//! Nothing else of any header is kept. The parser takes untrusted network
//! bytes and never panics (property-tested, and fuzzed with the request
//! parser).

/// A valid `traceparent`: the caller's trace and span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// The caller's span: the parent of the span made for this request.
    pub parent_span_id: [u8; 8],
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

impl TraceContext {
    /// The caller recorded its span (flag `01`).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// Parses a `traceparent` value: `version-traceid-parentid-flags`, lower
    /// case hex. Version `00` is exactly 55 characters; a later version may
    /// append `-...` fields, which are ignored (as the specification asks);
    /// version `ff`, all-zero ids, upper case and any other shape are refused.
    pub fn parse(value: &str) -> Option<Self> {
        let v = value.trim_matches([' ', '\t']).as_bytes();
        if v.len() < 55 || (v.len() > 55 && v[55] != b'-') {
            return None;
        }
        let version = hex_byte(&v[0..2])?;
        if version == 0xff || (version == 0 && v.len() != 55) {
            return None;
        }
        if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, b) in trace_id.iter_mut().enumerate() {
            *b = hex_byte(&v[3 + 2 * i..5 + 2 * i])?;
        }
        let mut parent_span_id = [0u8; 8];
        for (i, b) in parent_span_id.iter_mut().enumerate() {
            *b = hex_byte(&v[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&v[53..55])?;
        if trace_id == [0; 16] || parent_span_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, parent_span_id, flags })
    }
}

/// Two lower-case hex digits.
fn hex_byte(two: &[u8]) -> Option<u8> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    match two {
        [hi, lo] => Some((digit(*hi)? << 4) | digit(*lo)?),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_specification_example_parses() {
        let t = TraceContext::parse(VALID).unwrap();
        assert_eq!(t.trace_id[..4], [0x4b, 0xf9, 0x2f, 0x35]);
        assert_eq!(t.trace_id[15], 0x36);
        assert_eq!(t.parent_span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(t.sampled());
        assert!(!TraceContext::parse(&VALID.replace("-01", "-00")).unwrap().sampled());
        assert_eq!(TraceContext::parse(&format!(" {VALID}\t")), Some(t), "optional whitespace around the value");
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "00",
            &VALID[..54],
            &format!("{VALID}-extra"),        // version 00 has no more fields
            &VALID.replace("00-4b", "ff-4b"), // version ff is invalid
            &VALID.to_uppercase(),            // upper case
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero parent id
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01é",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
        // A later version may carry more fields after a dash.
        let future = format!("{}-what-comes-next", VALID.replacen("00", "cc", 1));
        assert!(TraceContext::parse(&future).is_some());
        assert!(TraceContext::parse(&format!("{}x", VALID.replacen("00", "cc", 1))).is_none());
    }

    proptest! {
        /// Never panics, and whatever parses re-encodes to its own input.
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,80}", bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Some(t) = TraceContext::parse(&s) {
                let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
                let encoded = format!("-{}-{}-{:02x}", hex(&t.trace_id), hex(&t.parent_span_id), t.flags);
                prop_assert!(s.contains(&encoded));
            }
            let _ = TraceContext::parse(&String::from_utf8_lossy(&bytes));
        }
    }
}

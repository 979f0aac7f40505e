//! Framing tests: every response is fed split at every possible point (and
//! byte by byte) and must end exactly at its last byte.

use super::*;

/// Feeds `data` to the parser as the kernel does: header bytes one at a time,
/// body bytes in bulk. Returns the index just past the byte that ended the
/// response, or `None`. Malformed input panics unless `tolerate_malformed`.
fn feed_with(p: &mut ResponseParser, data: &[u8], tolerate_malformed: bool) -> Option<usize> {
    let mut off = 0;
    while off < data.len() {
        if p.wants_skip() {
            let (n, ev) = p.skip((data.len() - off) as u64);
            off += n as usize;
            if ev == EV_END {
                return Some(off);
            }
        } else if p.wants_bytes() {
            let ev = p.step_byte(&FRAMING_DFA, data[off]);
            off += 1;
            if ev == EV_END {
                return Some(off);
            }
            if ev == EV_MALFORMED {
                assert!(tolerate_malformed, "malformed at {off}");
                return None;
            }
        } else {
            return None;
        }
    }
    None
}

fn feed(p: &mut ResponseParser, data: &[u8]) -> Option<usize> {
    feed_with(p, data, false)
}

fn ends_exactly(resp: &[u8], no_body: bool) {
    // Whole, then split at every position into two and three pieces.
    for split in 0..=resp.len() {
        let mut p = ResponseParser::default();
        p.expect_response(no_body);
        let first = feed(&mut p, &resp[..split]);
        if split < resp.len() {
            assert_eq!(first, None, "ended early at split {split}");
            let second = feed(&mut p, &resp[split..]);
            assert_eq!(second, Some(resp.len() - split), "split {split}");
        } else {
            assert_eq!(first, Some(resp.len()));
        }
    }
    let mut p = ResponseParser::default();
    p.expect_response(no_body);
    for (i, b) in resp.iter().enumerate() {
        let r = feed(&mut p, core::slice::from_ref(b));
        if i + 1 < resp.len() {
            assert_eq!(r, None, "byte {i}");
        } else {
            assert_eq!(r, Some(1));
        }
    }
}

#[test]
fn content_length_body() {
    ends_exactly(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"a\":\"bcd\"}",
        false,
    );
}

#[test]
fn header_names_are_case_insensitive() {
    ends_exactly(b"HTTP/1.1 429 Too Many\r\ncontent-length:3\r\nX-Content-Length: 99\r\n\r\nabc", false);
    ends_exactly(b"HTTP/1.0 200 OK\r\nTRANSFER-ENCODING: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", false);
}

#[test]
fn chunked_with_extensions_and_trailers() {
    ends_exactly(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\n",
        false,
    );
}

#[test]
fn sse_stream_chunked() {
    let mut resp = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for i in 0..20 {
        let ev = format!("data: {{\"i\":{i}, \"text\":\"0\\r\\n\\r\\n\"}}\n\n");
        resp.extend_from_slice(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes());
    }
    resp.extend_from_slice(b"0\r\n\r\n");
    ends_exactly(&resp, false);
}

#[test]
fn bodyless_responses() {
    ends_exactly(b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n", false);
    ends_exactly(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false);
    ends_exactly(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true);
    ends_exactly(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false);
}

#[test]
fn interim_response_is_skipped() {
    ends_exactly(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nno", false);
}

#[test]
fn bare_lf_line_endings() {
    ends_exactly(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", false);
}

#[test]
fn close_delimited_body_never_ends_by_itself() {
    let mut p = ResponseParser::default();
    p.expect_response(false);
    assert_eq!(feed(&mut p, b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nlots of bytes"), None);
    assert_eq!(p.phase, PHASE_UNTIL_CLOSE);
    assert_eq!(p.status, 200);
}

#[test]
fn not_http_is_malformed() {
    for junk in [&b"\x16\x03\x01\x02\x00"[..], b"PRI * HTTP/2.0\r\n", b"HTTP/2 200\r\n", b"HTTP/1.1 2x0 OK\r\n"] {
        let mut p = ResponseParser::default();
        p.expect_response(false);
        let mut ev = EV_NONE;
        for &b in junk {
            ev = p.step_byte(&FRAMING_DFA, b);
            if ev != EV_NONE {
                break;
            }
        }
        assert_eq!(ev, EV_MALFORMED, "{junk:?}");
        assert_eq!(p.phase, PHASE_LOST);
    }
}

#[test]
fn status_code_is_parsed() {
    let mut p = ResponseParser::default();
    p.expect_response(false);
    feed(&mut p, b"HTTP/1.1 503 Service Unavailable\r\n");
    assert_eq!(p.status, 503);
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap deterministic fuzz: xorshift bytes, mixed with HTTP fragments.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let fragments: [&[u8]; 6] = [
        b"HTTP/1.1 200 OK\r\n",
        b"Content-Length: 99999999999999999999999",
        b"\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n",
        b"ffffffffffffffffff\r\n",
        b"0\r\n\r\n",
    ];
    for _ in 0..2000 {
        let mut p = ResponseParser::default();
        p.expect_response(x & 1 == 0);
        let mut data = Vec::new();
        for _ in 0..8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x.is_multiple_of(3) {
                data.extend_from_slice(fragments[(x >> 8) as usize % fragments.len()]);
            } else {
                data.push((x >> 16) as u8);
            }
        }
        let mut off = 0;
        while off < data.len() && (p.wants_bytes() || p.wants_skip()) {
            if p.wants_skip() {
                let (n, _) = p.skip((data.len() - off) as u64);
                off += n as usize;
            } else {
                p.step_byte(&FRAMING_DFA, data[off]);
                off += 1;
            }
        }
    }
}

#[test]
fn request_lines_split_before_the_method_ends() {
    let start = |pieces: &[&[u8]]| {
        let mut conn = ConnState::default();
        let mut last = METHOD_NONE;
        for piece in pieces {
            let mut b = [0u8; 8];
            let n = piece.len().min(8);
            b[..n].copy_from_slice(&piece[..n]);
            last = method_at_start(&mut conn, &b, n as u64);
        }
        last
    };
    assert_eq!(start(&[b"PO", b"ST /v1 HTTP/1.1"]), METHOD_OTHER);
    assert_eq!(start(&[b"H", b"E", b"A", b"D", b" / HTTP/1.1"]), METHOD_HEAD);
    assert_eq!(start(&[b"POST"]), METHOD_PENDING);
    assert_eq!(start(&[b"OPTIONS"]), METHOD_PENDING);
    assert_eq!(start(&[b"PO", b"X"]), METHOD_NONE);
    assert_eq!(start(&[b"\x16\x03"]), METHOD_NONE);
    assert_eq!(start(&[b"GET / HTTP/1.1"]), METHOD_OTHER);
}

#[test]
fn request_methods() {
    let m = |s: &[u8]| {
        let mut b = [0u8; 8];
        let n = s.len().min(8);
        b[..n].copy_from_slice(&s[..n]);
        request_method(&b, n as u64)
    };
    assert_eq!(m(b"POST /v1/chat/completions HTTP/1.1"), METHOD_OTHER);
    assert_eq!(m(b"GET / HTTP/1.1"), METHOD_OTHER);
    assert_eq!(m(b"HEAD / HTTP/1.1"), METHOD_HEAD);
    assert_eq!(m(b"OPTIONS * HTTP/1.1"), METHOD_OTHER);
    assert_eq!(m(b"GETX"), METHOD_NONE);
    assert_eq!(m(b"POS"), METHOD_NONE);
    assert_eq!(m(b"\x16\x03\x01"), METHOD_NONE);
    assert_eq!(m(b"PRI * HTTP/2.0"), METHOD_NONE);
}

mod properties {
    //! Property tests over arbitrary bytes: the framing state machine never
    //! panics, and where a response ends does not depend on how its bytes
    //! were split across calls.
    use proptest::prelude::*;

    use super::*;

    /// Feeds pieces in order; returns the absolute end offset, if any.
    fn feed_pieces(data: &[u8], cuts: &[usize], no_body: bool) -> Option<usize> {
        let mut p = ResponseParser::default();
        p.expect_response(no_body);
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        bounds.push(0);
        bounds.push(data.len());
        bounds.sort_unstable();
        bounds.dedup();
        for w in bounds.windows(2) {
            let (a, b) = (w[0], w[1]);
            if let Some(end) = feed_robust(&mut p, &data[a..b]) {
                return Some(a + end);
            }
            if !(p.wants_bytes() || p.wants_skip()) {
                return None;
            }
        }
        None
    }

    /// Like `feed`, but tolerates malformed input (the kernel marks it lost).
    fn feed_robust(p: &mut ResponseParser, data: &[u8]) -> Option<usize> {
        feed_with(p, data, true)
    }

    /// Responses built from random parts: valid framing most of the time.
    fn response() -> impl Strategy<Value = Vec<u8>> {
        (
            prop_oneof![Just(200u16), Just(204), Just(304), Just(429), Just(500), Just(100)],
            prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..12),
            any::<bool>(),
            prop::collection::vec(("[a-zA-Z-]{1,20}", "[ -~]{0,30}"), 0..4),
        )
            .prop_map(|(status, chunks, chunked, extra)| {
                let mut head = format!("HTTP/1.1 {status} X\r\n");
                for (k, v) in extra {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                let mut body = Vec::new();
                if chunked {
                    head.push_str("Transfer-Encoding: chunked\r\n\r\n");
                    for c in &chunks {
                        if c.is_empty() {
                            continue;
                        }
                        body.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                        body.extend_from_slice(c);
                        body.extend_from_slice(b"\r\n");
                    }
                    body.extend_from_slice(b"0\r\n\r\n");
                } else {
                    let all: Vec<u8> = chunks.concat();
                    head.push_str(&format!("Content-Length: {}\r\n\r\n", all.len()));
                    body = all;
                }
                let mut out = head.into_bytes();
                out.extend(body);
                out
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..600), cuts in prop::collection::vec(any::<usize>(), 0..6), no_body in any::<bool>()) {
            let _ = feed_pieces(&data, &cuts, no_body);
        }

        #[test]
        fn end_does_not_depend_on_splits(resp in response(), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
            let whole = feed_pieces(&resp, &[], false);
            let split = feed_pieces(&resp, &cuts, false);
            prop_assert_eq!(whole, split);
        }

        #[test]
        fn well_formed_responses_end_at_their_last_byte(resp in response()) {
            let status: u16 = std::str::from_utf8(&resp[9..12]).unwrap().parse().unwrap();
            // Header names drawn at random may collide with the framing headers.
            let text = String::from_utf8_lossy(&resp).to_ascii_lowercase();
            let clean = text.matches("content-length").count() + text.matches("transfer-encoding").count() <= 1;
            prop_assume!(status != 100 && clean);
            // 204 and 304 have no body whatever the headers say.
            let head_len = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            let expected = if status == 204 || status == 304 { head_len } else { resp.len() };
            prop_assert_eq!(feed_pieces(&resp, &[], false), Some(expected));
        }
    }
}

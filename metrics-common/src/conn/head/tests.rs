//! The fast head scan against the DFA: on every head it accepts, the parser
//! state and the head's length must be the DFA's, byte for byte.

use proptest::prelude::*;

use super::*;
use crate::conn::{EV_END, EV_NONE, FRAMING_DFA, PHASE_BODY_LENGTH, PHASE_IDLE, PHASE_UNTIL_CLOSE, S_CHUNK_START};

fn buffer(bytes: &[u8]) -> [u64; HEAD_WORDS] {
    let mut raw = [0xAAu8; HEAD_BYTES]; // stale bytes past the data
    raw[..bytes.len()].copy_from_slice(bytes);
    let mut words = [0u64; HEAD_WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        *w = u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap());
    }
    words
}

/// The DFA over `bytes` until it leaves the head (the blank line), as the
/// kernel's slow path does: (bytes consumed, event, parser), or `None` when
/// the head did not end (or was malformed).
fn dfa_head(bytes: &[u8], no_body: bool) -> Option<(u64, u32, ResponseParser)> {
    let mut p = ResponseParser::default();
    p.expect_response(no_body);
    for (i, &b) in bytes.iter().enumerate() {
        let ev = p.step_byte(&FRAMING_DFA, b);
        if ev != EV_NONE {
            return if ev == EV_END { Some((i as u64 + 1, ev, p)) } else { None };
        }
        // Out of the header states: the head ended here (also a 1xx head,
        // whose parser expects a status line again).
        if p.phase == S_STATUS as u32 || p.phase == S_CHUNK_START as u32 || p.phase >= PHASE_BODY_LENGTH {
            return Some((i as u64 + 1, ev, p));
        }
    }
    None
}

fn fast_head(bytes: &[u8], no_body: bool) -> Option<(u64, u32, ResponseParser)> {
    let mut p = ResponseParser::default();
    p.expect_response(no_body);
    let before = p;
    let r = scan_head(&buffer(bytes), bytes.len() as u64, &mut p);
    match r {
        Some((used, ev)) => Some((used, ev, p)),
        None => {
            assert_eq!(p, before, "a bail must leave the parser as it was");
            None
        }
    }
}

fn agree(bytes: &[u8], no_body: bool) -> Option<(u64, u32, ResponseParser)> {
    let fast = fast_head(bytes, no_body);
    if let Some(f) = fast {
        assert_eq!(
            Some(f),
            dfa_head(bytes, no_body),
            "fast scan and DFA differ on {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
    fast
}

#[test]
fn typical_heads_take_the_fast_path() {
    let cases: &[(&[u8], u32, u64, u32)] = &[
        (
            b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 17:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 300\r\nConnection: keep-alive\r\n\r\n",
            PHASE_BODY_LENGTH,
            300,
            200,
        ),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 52, 0, 200),
        (b"HTTP/1.0 200 OK\r\nX-A: b\r\n\r\nbody until close", PHASE_UNTIL_CLOSE, 0, 200),
        (b"HTTP/1.1 204 No Content\r\ncontent-length: 7\r\n\r\n", PHASE_IDLE, 7, 204),
        (b"HTTP/1.1 404 Not Found\nCONTENT-LENGTH:  12 \nX: y\n\n", PHASE_BODY_LENGTH, 12, 404),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", PHASE_IDLE, 0, 200),
    ];
    for &(head, phase, value, status) in cases {
        let (used, _, p) = agree(head, false).expect("fast path taken");
        assert_eq!((p.phase, p.value, p.status), (phase, value, status), "{:?}", String::from_utf8_lossy(head));
        let end = head.windows(2).position(|w| w == b"\n\n").or(head.windows(4).position(|w| w == b"\r\n\r\n"));
        assert!(end.is_some() && used as usize <= head.len());
    }
}

#[test]
fn head_request_and_interim_responses() {
    let (used, ev, p) = agree(b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n", true).unwrap();
    assert_eq!((used, ev, p.phase), (40, EV_END, PHASE_IDLE));
    let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n";
    let (used, ev, p) = agree(interim, false).unwrap();
    assert_eq!((used, ev, p.phase), (25, EV_NONE, 0));
}

#[test]
fn unusual_heads_are_left_to_the_dfa() {
    for head in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3"[..], // not ended in the buffer
        b"HTTP/2 200 OK\r\n\r\n\r\n",                 // not HTTP/1.x
        b"HTTP/1.1 2x0 OK\r\n\r\n",                   // malformed status
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999\r\n\r\n", // past MAX_LENGTH
        b"HTTP/1.1 200 OK\r\nContent-Length:                          3\r\n\r\n", // long value
        b"HTTP/1.1 200",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", // two lengths
    ] {
        assert_eq!(fast_head(head, false), None, "{:?}", String::from_utf8_lossy(head));
    }
}

fn header_line() -> impl Strategy<Value = Vec<u8>> {
    let names = prop::sample::select(vec![
        "Content-Length",
        "content-length",
        "CONTENT-LENGTH",
        "Content-Lengthx",
        "Content-Lengt",
        "Content-Length ",
        "Transfer-Encoding",
        "transfer-encoding",
        "Transfer-Encodin",
        "TE",
        "Connection",
        "c",
        "t",
        "\r",
        "Date",
        "\rContent-Length",
    ]);
    let values = prop::sample::select(vec!["", " 300", "300", " 12 ", " chunked", "x1y2", " 0", "  5", " abc"]);
    (names, prop::bool::ANY, values, prop::bool::ANY).prop_map(|(n, colon, v, crlf)| {
        let mut line = n.as_bytes().to_vec();
        if colon {
            line.push(b':');
        }
        line.extend_from_slice(v.as_bytes());
        line.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        line
    })
}

fn head_bytes() -> impl Strategy<Value = Vec<u8>> {
    let status = prop::sample::select(vec!["100", "103", "200", "204", "304", "404", "500", "2x0"]);
    let reason = prop::sample::select(vec![" OK", "", " Continue", " Some Reason Phrase"]);
    let version = prop::sample::select(vec!["HTTP/1.1 ", "HTTP/1.0 ", "HTTP/2.0 ", "http/1.1 ", "HTTP/1.1x"]);
    (
        version,
        status,
        reason,
        prop::bool::ANY,
        prop::collection::vec(header_line(), 0..30),
        prop::bool::ANY,
        prop::collection::vec(any::<u8>(), 0..40),
    )
        .prop_map(|(v, s, r, crlf, lines, end_crlf, tail)| {
            let mut b = format!("{v}{s}{r}").into_bytes();
            b.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            for l in lines {
                b.extend_from_slice(&l);
            }
            b.extend_from_slice(if end_crlf { b"\r\n" } else { b"\n" });
            b.extend_from_slice(&tail);
            b.truncate(HEAD_BYTES);
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn fast_scan_equals_the_dfa(head in head_bytes(), no_body in any::<bool>(), cut in 0usize..1100) {
        let head = &head[..cut.min(head.len())];
        agree(head, no_body);
    }

    #[test]
    fn fast_scan_equals_the_dfa_on_any_bytes(
        body in prop::collection::vec(prop::sample::select(b"\r\n:cCtT-0123 HTTPcontent-lengthtransfer-encoding".to_vec()), 0..400),
        no_body in any::<bool>(),
    ) {
        let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
        head.extend_from_slice(&body);
        head.truncate(HEAD_BYTES);
        agree(&head, no_body);
    }
}

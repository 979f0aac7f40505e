//! An HTTP/2 stream's decoded header fields written as the HTTP/1.1 head
//! the same message would have had, with a chunked body (each DATA frame a
//! chunk), for the HTTP/1.1 parser. Pseudo-headers become the request or
//! status line (`:authority` the Host header); framing headers are dropped;
//! a field that could break the HTTP/1.1 syntax is left out.

use std::fmt::Write;

/// Header fields kept per header block.
pub const MAX_FIELDS: usize = 96;

/// Headers that describe HTTP/1.1 framing or the connection: the
/// transcoded message sets its own.
const DROPPED: [&str; 6] = ["content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "host"];

/// The HTTP/1.1 request head of a request's header fields; `None` when the
/// fields do not make a request (no method or path).
pub fn request_head(fields: &[(String, String)]) -> Option<Vec<u8>> {
    let pseudo = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let method = pseudo(":method").filter(|m| is_token(m))?;
    let path = pseudo(":path").filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_graphic()))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if let Some(authority) = pseudo(":authority").filter(|a| is_value(a)) {
        let _ = write!(head, "host: {authority}\r\n");
    }
    regular_fields(&mut head, fields);
    Some(head.into_bytes())
}

/// The status and HTTP/1.1 response head of a response's header fields.
pub fn response_head(fields: &[(String, String)]) -> Option<(u16, Vec<u8>)> {
    let status = fields.iter().find(|(k, _)| k == ":status")?.1.as_str();
    let code: u16 = status.parse().ok().filter(|c| (100..1000).contains(c))?;
    let mut head = format!("HTTP/1.1 {code} H2\r\n");
    regular_fields(&mut head, fields);
    Some((code, head.into_bytes()))
}

fn regular_fields(head: &mut String, fields: &[(String, String)]) {
    for (name, value) in fields {
        if name.starts_with(':') || DROPPED.contains(&name.as_str()) || !is_token(name) || !is_value(value) {
            continue;
        }
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("transfer-encoding: chunked\r\n\r\n");
}

/// An HTTP token (header name, method).
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value without control characters (CR, LF, NUL...).
fn is_value(s: &str) -> bool {
    !s.chars().any(|c| c.is_control() && c != '\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn requests_and_responses_become_chunked_http1_heads() {
        let req = fields(&[
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", "api.openai.com"),
            (":path", "/v1/chat/completions"),
            ("content-type", "application/json"),
            ("content-length", "12"),
        ]);
        assert_eq!(
            String::from_utf8(request_head(&req).unwrap()).unwrap(),
            "POST /v1/chat/completions HTTP/1.1\r\nhost: api.openai.com\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\n\r\n"
        );
        let (status, head) = response_head(&fields(&[(":status", "429"), ("retry-after", "3")])).unwrap();
        assert_eq!(status, 429);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "HTTP/1.1 429 H2\r\nretry-after: 3\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn fields_that_would_break_the_syntax_are_left_out() {
        assert!(request_head(&fields(&[(":method", "PO ST"), (":path", "/")])).is_none());
        assert!(request_head(&fields(&[(":method", "GET"), (":path", "/a b")])).is_none());
        assert!(response_head(&fields(&[(":status", "2000")])).is_none());
        let head = request_head(&fields(&[
            (":method", "GET"),
            (":path", "/"),
            ("x-a", "1\r\nInjected: yes"),
            ("bad name", "v"),
        ]))
        .unwrap();
        assert_eq!(String::from_utf8(head).unwrap(), "GET / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n");
    }
}

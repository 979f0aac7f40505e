//! Server-sent events (`text/event-stream`): events from a body, per the
//! HTML living standard's parsing rules (fields `event` and `data`, lines
//! ending in LF, CR or CRLF, comments starting with `:`).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with LF.
    pub data: String,
}

/// The complete events in `body` (a trailing event without its blank line
/// is included only if `at_end`).
pub fn events(body: &[u8], at_end: bool) -> Vec<Event> {
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    let mut event = None;
    let mut data: Option<String> = None;
    let normalised = text.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalised.split('\n') {
        if line.is_empty() {
            if let Some(d) = data.take() {
                out.push(Event { event: event.take(), data: d });
            }
            event = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_string()),
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            _ => {}
        }
    }
    if at_end && let Some(d) = data {
        out.push(Event { event, data: d });
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_openai_and_anthropic_streams() {
        let body = b"data: {\"a\":1}\n\ndata: [DONE]\n\n";
        let e = events(body, true);
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].data, "[DONE]");
        let body = b"event: message_start\r\ndata: {\"x\":1}\r\n\r\n: ping\r\nevent: message_stop\r\ndata: {}\r\n\r\n";
        let e = events(body, false);
        assert_eq!(e[0].event.as_deref(), Some("message_start"));
        assert_eq!(e[1].event.as_deref(), Some("message_stop"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2000), at_end in any::<bool>()) {
            let _ = events(&body, at_end);
        }
    }
}

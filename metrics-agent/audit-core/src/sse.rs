//! Server-sent events (`text/event-stream`): events from a body, per the
//! HTML living standard's parsing rules (fields `event` and `data`, lines
//! ending in LF, CR or CRLF, comments starting with `:`).

use std::borrow::Cow;

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
    let mut out = Vec::new();
    for_each_event(body, at_end, |event, data| {
        out.push(Event { event: event.map(str::to_string), data: data.to_string() })
    });
    out
}

/// `events`, each handed to `f` as (event field, joined data) without
/// copying the body: a single `data:` line is passed where it lies.
pub fn for_each_event(body: &[u8], at_end: bool, mut f: impl FnMut(Option<&str>, &str)) {
    let text = super::message::lossy(body);
    let mut event = None;
    let mut data: Option<Cow<str>> = None;
    for line in lines(&text) {
        if line.is_empty() {
            if let Some(d) = data.take() {
                f(event.take(), &d);
            }
            event = None;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = field_and_value(line);
        match field {
            "event" => event = Some(value),
            "data" => match &mut data {
                Some(d) => {
                    let d = d.to_mut();
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(Cow::Borrowed(value)),
            },
            _ => {}
        }
    }
    if at_end && let Some(d) = data {
        f(event, &d);
    }
}

/// A non-comment line's field name and value: the value follows the first
/// colon, less one leading space; a line without a colon is a field with an
/// empty value.
fn field_and_value(line: &str) -> (&str, &str) {
    match line.split_once(':') {
        Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
        None => (line, ""),
    }
}

/// The lines of `text`, each ended by CRLF, CR or LF, and the text after
/// the last line end (possibly empty).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let r = rest?;
        // A byte search: both line-end bytes are ASCII, never inside a UTF-8 sequence.
        match r.bytes().position(|b| b == b'\r' || b == b'\n') {
            Some(i) => {
                let end = if r[i..].starts_with("\r\n") { i + 2 } else { i + 1 };
                rest = Some(&r[end..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
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

    #[test]
    fn a_field_value_follows_the_first_colon_less_one_space() {
        assert_eq!(field_and_value("data: x"), ("data", "x"));
        assert_eq!(field_and_value("data:x"), ("data", "x"));
        assert_eq!(field_and_value("data:  x"), ("data", " x"));
        assert_eq!(field_and_value("event: a: b"), ("event", "a: b"));
        assert_eq!(field_and_value("data"), ("data", ""));
        assert_eq!(field_and_value("data:"), ("data", ""));
    }

    /// The events as the former implementation found them: the body
    /// normalised to LF line ends, then split.
    fn events_by_normalising(body: &[u8], at_end: bool) -> Vec<Event> {
        let text = String::from_utf8_lossy(body).replace("\r\n", "\n").replace('\r', "\n");
        let (mut out, mut event, mut data) = (Vec::new(), None, None::<String>);
        for line in text.split('\n') {
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
            let (field, value) = field_and_value(line);
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

    proptest! {
        #[test]
        fn splitting_in_place_finds_what_normalising_found(
            parts in prop::collection::vec(prop::sample::select(vec!["data: a", "data:b", "event: e", ": c", "\r", "\n", "\r\n", "x", "data", "\u{e9}"]), 0..40),
            at_end in any::<bool>(),
        ) {
            let body = parts.concat();
            prop_assert_eq!(events(body.as_bytes(), at_end), events_by_normalising(body.as_bytes(), at_end));
        }

        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..2000), at_end in any::<bool>()) {
            let _ = events(&body, at_end);
        }
    }
}

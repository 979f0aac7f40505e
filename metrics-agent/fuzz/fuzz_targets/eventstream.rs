//! AWS event stream framing (Bedrock): arbitrary bytes in arbitrary pieces
//! never panic, memory stays bounded, and every message decoded is one whose
//! prelude and message CRCs matched.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_agent_fuzz::audit::eventstream::{Decoder, encode};

const MAX_MESSAGE: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Some((&piece, body)) = data.split_first() else { return };
    let piece = usize::from(piece).max(1);
    let mut decoder = Decoder::new(MAX_MESSAGE);
    let mut decoded = Vec::new();
    for p in body.chunks(piece) {
        decoder.feed(p, |m| decoded.push(m));
        assert!(decoder.memory() <= 2 * MAX_MESSAGE, "{}", decoder.memory());
    }
    // Whatever decoded re-encodes to a message that decodes the same.
    for m in decoded {
        let headers: Vec<(&str, &str)> = [(":event-type", &m.event_type), (":message-type", &m.message_type)]
            .into_iter()
            .filter_map(|(k, v)| v.as_deref().map(|v| (k, v)))
            .collect();
        let mut again = Vec::new();
        Decoder::new(usize::MAX).feed(&encode(&headers, &m.payload), |m| again.push(m));
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].payload, m.payload);
    }
});

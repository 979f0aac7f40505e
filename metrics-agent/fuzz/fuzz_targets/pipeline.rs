//! The whole reassembly pipeline: arbitrary capture events (connections,
//! directions, offsets, closes, data) never panic, and memory stays within
//! the budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_audit_core::pipeline::Pipeline;
use metrics_common::capture::{ChunkHeader, DIR_READ, DIR_WRITE, KIND_CLOSE, KIND_DATA};

const BUDGET: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut pipeline = Pipeline::new(16 * 1024).with_memory_budget(BUDGET);
    let mut rest = data;
    let mut offsets = [[0u64; 2]; 4];
    // Each event: 3 control bytes, then up to 255 bytes of payload.
    while let [a, b, len, tail @ ..] = rest {
        let conn = (*a & 3) as usize;
        let dir = (*a >> 2 & 1) as usize;
        let len = (*len as usize).min(tail.len());
        let (payload, after) = tail.split_at(len);
        let header = ChunkHeader {
            conn_id: conn as u64,
            // Mostly contiguous, sometimes a gap or a repeat.
            offset: offsets[conn][dir] + u64::from(*b & 0x0f) * u64::from(*b >> 7),
            ts_ns: u64::from(*b) * 1000,
            direction: if dir == 0 { DIR_READ } else { DIR_WRITE },
            side: *a >> 3 & 1,
            kind: if *a >> 4 == 0xf { KIND_CLOSE } else { KIND_DATA },
            len: len as u32,
            ..ChunkHeader::default()
        };
        offsets[conn][dir] = header.offset + len as u64;
        let _ = pipeline.on_event(&header, payload);
        assert!(pipeline.memory() <= BUDGET);
        rest = after;
    }
});

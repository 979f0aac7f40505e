//! HTTP/2 connections through the whole pipeline: after the client preface,
//! arbitrary bytes in both directions (frames, header blocks, padding) never
//! panic, and memory stays within the budget.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metrics_audit_core::{h2::frame::PREFACE, pipeline::Pipeline};
use metrics_common::{
    capture::{ChunkHeader, DIR_READ, DIR_WRITE, KIND_CLOSE, KIND_DATA},
    conn::SIDE_CLIENT,
};

const BUDGET: usize = 512 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut pipeline = Pipeline::new(16 * 1024).with_memory_budget(BUDGET);
    let mut offsets = [PREFACE.len() as u64, 0];
    let header = |dir: usize, offset: u64, len: usize, kind: u8| ChunkHeader {
        conn_id: 1,
        offset,
        ts_ns: offset,
        direction: if dir == 0 { DIR_READ } else { DIR_WRITE },
        side: SIDE_CLIENT,
        kind,
        len: len as u32,
        ..ChunkHeader::default()
    };
    let _ = pipeline.on_event(&header(0, 0, PREFACE.len(), KIND_DATA), PREFACE);
    let mut rest = data;
    // Each event: a control byte (direction, length), then its payload.
    while let [control, len, tail @ ..] = rest {
        let dir = usize::from(*control & 1);
        let len = (*len as usize).min(tail.len());
        let (payload, after) = tail.split_at(len);
        let _ = pipeline.on_event(&header(dir, offsets[dir], len, KIND_DATA), payload);
        offsets[dir] += len as u64;
        assert!(pipeline.memory() <= BUDGET);
        rest = after;
    }
    let _ = pipeline.on_event(&header(0, 0, 0, KIND_CLOSE), &[]);
    assert_eq!(pipeline.memory(), 0);
});

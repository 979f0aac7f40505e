//! Events for the agent on the `PROC_EVENTS` ring
//! (`metrics_common::events`): a target's new and exiting processes
//! (`probes/process`) and connections adopted mid-stream (`data`).

use metrics_common::{counters as c, events::ProcEvent};

use crate::maps::{COUNTERS, PROC_EVENTS, add};

/// Sends an event to the agent; counts it when the ring buffer is full.
pub fn emit(kind: u32, pid: u32, parent: u32) {
    let event = ProcEvent { kind, pid, parent, _pad: 0 };
    if PROC_EVENTS.output::<ProcEvent>(&event, 0).is_err() {
        add(&COUNTERS, c::PROC_EVENTS_DROPPED, 1);
    }
}

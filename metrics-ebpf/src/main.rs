//! Kernel programs of the agent: uprobes on the target's libc socket calls
//! that maintain per-connection HTTP/1.1 state and the exact hot-path
//! counters, and sched tracepoints that report the target's new and exiting
//! processes to the agent.
#![no_std]
#![no_main]

mod conn_lifecycle;
mod data;
mod maps;
mod process;
mod record;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

//! Kernel programs of the agent: hooks on the target's socket calls (socket
//! tracepoints, libc uprobes or syscall tracepoints: `probes/`) that feed one
//! shared core — connection state (`connections`, `data`), HTTP/1.1 framing
//! (`framing`), the exact hot-path counters (`record`) and payload capture
//! (`capture`) — plus OpenSSL uprobes for TLS plaintext and sched
//! tracepoints that report the target's new and exiting processes.
//! Hook families import the core, never the reverse, and the core's modules
//! import each other one way only (layers: docs/architecture.md, *Module
//! layers*).
//! Built for the BPF target only (by `metrics-agent/build.rs`); a host build
//! of the workspace compiles it to a stub.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod capture;
#[cfg(target_arch = "bpf")]
mod connections;
#[cfg(target_arch = "bpf")]
mod ctx;
#[cfg(target_arch = "bpf")]
mod data;
#[cfg(target_arch = "bpf")]
mod events;
#[cfg(target_arch = "bpf")]
mod framing;
#[cfg(target_arch = "bpf")]
mod framing_h2;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod probes;
#[cfg(target_arch = "bpf")]
mod record;
#[cfg(target_arch = "bpf")]
mod sampling;
#[cfg(target_arch = "bpf")]
mod scratch;
#[cfg(target_arch = "bpf")]
mod ssl_sockets;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("metrics-ebpf holds kernel programs: it is built for bpfel-unknown-none by metrics-agent's build script");
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

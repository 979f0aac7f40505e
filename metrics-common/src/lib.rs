//! Types and constants shared by the kernel programs (`metrics-ebpf`) and the
//! userspace agent (`metrics-agent`): map names and sizes, counter slots,
//! histogram layout and the structs stored in maps or sent through ring buffers.
//!
//! Everything that crosses the kernel/user boundary is `#[repr(C)]`, `Copy`,
//! has explicit padding and a compile-time size check.
#![cfg_attr(not(test), no_std)]

pub mod capture;
pub mod conn;
pub mod counters;
pub mod events;
pub mod histogram;
pub mod maps;
pub mod probes;
pub mod programs;
pub mod providers;

//! Probe kinds, used to count probe hits per kind (`PROBE_HITS`): what each
//! attach mode costs the proxy is its hits per request.

pub const HIT_READ_ENTRY: u32 = 0;
pub const HIT_WRITE_ENTRY: u32 = 1;
pub const HIT_DATA_RETURN: u32 = 2;
pub const HIT_ACCEPT_ENTRY: u32 = 3;
pub const HIT_ACCEPT_RETURN: u32 = 4;
pub const HIT_CONNECT_ENTRY: u32 = 5;
pub const HIT_CLOSE_ENTRY: u32 = 6;
/// Socket mode: one hit per send or receive (there is no entry/return pair).
pub const HIT_SOCKET_SEND: u32 = 7;
pub const HIT_SOCKET_RECV: u32 = 8;
pub const HIT_KINDS: u32 = 9;

/// Label values for `HIT_*`, in slot order.
pub const HIT_NAMES: [&str; HIT_KINDS as usize] = [
    "read_entry",
    "write_entry",
    "data_return",
    "accept_entry",
    "accept_return",
    "connect_entry",
    "close_entry",
    "socket_send",
    "socket_recv",
];

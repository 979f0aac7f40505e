//! Names of the kernel programs, by hook family: the agent loads and attaches
//! them by these names, and `metrics-ebpf` checks at compile time that each
//! program function is named exactly so (`probes/mod.rs`).

/// Libc uprobes (`--attach uprobes`).
pub mod libc {
    pub const ENTER_READ: &str = "enter_read";
    pub const ENTER_RECV: &str = "enter_recv";
    pub const ENTER_WRITE: &str = "enter_write";
    pub const ENTER_READV: &str = "enter_readv";
    pub const ENTER_WRITEV: &str = "enter_writev";
    pub const ENTER_RECVMSG: &str = "enter_recvmsg";
    pub const ENTER_SENDMSG: &str = "enter_sendmsg";
    pub const ENTER_SENDFILE: &str = "enter_sendfile";
    pub const RETURN_DATA: &str = "return_data";
    pub const CONTINUE_RESPONSE: &str = "continue_response";
    pub const CAPTURE_PAYLOAD: &str = "capture_payload";
    pub const ENTER_ACCEPT: &str = "enter_accept";
    pub const RETURN_ACCEPT: &str = "return_accept";
    pub const ENTER_CONNECT: &str = "enter_connect";
    pub const ENTER_CLOSE: &str = "enter_close";
}

/// Sched/task tracepoints (process lifecycle, every mode).
pub mod process {
    pub const ON_FORK: &str = "on_fork";
    pub const ON_EXEC: &str = "on_exec";
    pub const ON_EXIT: &str = "on_exit";
}

/// Socket tracepoints (`--attach sockets`).
pub mod sockets {
    pub const SOCK_SEND: &str = "sock_send";
    pub const SOCK_RECV: &str = "sock_recv";
    pub const SOCK_CONTINUE_RESPONSE: &str = "sock_continue_response";
    pub const SOCK_CAPTURE_PAYLOAD: &str = "sock_capture_payload";
}

/// OpenSSL uprobes (every mode).
pub mod ssl {
    pub const ENTER_SSL_READ: &str = "enter_ssl_read";
    pub const ENTER_SSL_WRITE: &str = "enter_ssl_write";
    pub const ENTER_SSL_READ_EX: &str = "enter_ssl_read_ex";
    pub const ENTER_SSL_WRITE_EX: &str = "enter_ssl_write_ex";
    pub const RETURN_SSL: &str = "return_ssl";
    pub const ENTER_SSL_HANDSHAKE: &str = "enter_ssl_handshake";
    pub const RETURN_SSL_HANDSHAKE: &str = "return_ssl_handshake";
    pub const RETURN_SSL_GET_ERROR: &str = "return_ssl_get_error";
    pub const ENTER_BIO_WRITE: &str = "enter_bio_write";
}

/// Go crypto/tls uprobes (every mode).
pub mod gotls {
    pub const ENTER_GO_TLS_READ: &str = "enter_go_tls_read";
    pub const ENTER_GO_TLS_WRITE: &str = "enter_go_tls_write";
    pub const RETURN_GO_TLS: &str = "return_go_tls";
}

/// Syscall tracepoints (`--attach syscalls`; socket mode uses the lifecycle ones).
pub mod syscalls {
    pub const SYS_ENTER_READ: &str = "sys_enter_read";
    pub const SYS_ENTER_RECV: &str = "sys_enter_recv";
    pub const SYS_ENTER_WRITE: &str = "sys_enter_write";
    pub const SYS_ENTER_READV: &str = "sys_enter_readv";
    pub const SYS_ENTER_WRITEV: &str = "sys_enter_writev";
    pub const SYS_ENTER_RECVMSG: &str = "sys_enter_recvmsg";
    pub const SYS_ENTER_SENDMSG: &str = "sys_enter_sendmsg";
    pub const SYS_ENTER_SENDFILE: &str = "sys_enter_sendfile";
    pub const SYS_EXIT_DATA: &str = "sys_exit_data";
    pub const SYS_CONTINUE_RESPONSE: &str = "sys_continue_response";
    pub const SYS_CAPTURE_PAYLOAD: &str = "sys_capture_payload";
    pub const SYS_ENTER_ACCEPT: &str = "sys_enter_accept";
    pub const SYS_EXIT_ACCEPT: &str = "sys_exit_accept";
    pub const SYS_ENTER_CONNECT: &str = "sys_enter_connect";
    pub const SYS_ENTER_CLOSE: &str = "sys_enter_close";
}

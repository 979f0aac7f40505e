//! The hook families. Each file attaches the shared logic (`data`,
//! `connections`, `framing`, `capture`) to one kind of kernel hook and
//! implements `ctx::CallArgs`/`CallReturn` for its context type; a new
//! attach method is one new file here.

pub mod gotls;
pub mod libc;
pub mod process;
pub mod sockets;
pub mod ssl;
pub mod syscalls;

/// Every program function is named as `metrics_common::programs` says.
macro_rules! check_program_names {
    ($($family:ident::$program:ident => $name:ident),* $(,)?) => {
        $(const _: () = assert!(crate::maps::same_name(
            stringify!($program),
            metrics_common::programs::$family::$name
        ));)*
        // Naming each function makes a renamed one a compile error here.
        $(const _: () = { let _ = $family::$program; };)*
    };
}

check_program_names!(
    gotls::enter_go_tls_read => ENTER_GO_TLS_READ,
    gotls::enter_go_tls_write => ENTER_GO_TLS_WRITE,
    gotls::return_go_tls => RETURN_GO_TLS,
    libc::enter_read => ENTER_READ,
    libc::enter_recv => ENTER_RECV,
    libc::enter_write => ENTER_WRITE,
    libc::enter_readv => ENTER_READV,
    libc::enter_writev => ENTER_WRITEV,
    libc::enter_recvmsg => ENTER_RECVMSG,
    libc::enter_sendmsg => ENTER_SENDMSG,
    libc::enter_sendfile => ENTER_SENDFILE,
    libc::return_data => RETURN_DATA,
    libc::continue_response => CONTINUE_RESPONSE,
    libc::capture_payload => CAPTURE_PAYLOAD,
    libc::enter_accept => ENTER_ACCEPT,
    libc::return_accept => RETURN_ACCEPT,
    libc::enter_connect => ENTER_CONNECT,
    libc::enter_close => ENTER_CLOSE,
    process::on_fork => ON_FORK,
    process::on_exec => ON_EXEC,
    process::on_exit => ON_EXIT,
    sockets::sock_send => SOCK_SEND,
    sockets::sock_recv => SOCK_RECV,
    sockets::sock_continue_response => SOCK_CONTINUE_RESPONSE,
    sockets::sock_capture_payload => SOCK_CAPTURE_PAYLOAD,
    ssl::enter_ssl_read => ENTER_SSL_READ,
    ssl::enter_ssl_write => ENTER_SSL_WRITE,
    ssl::enter_ssl_read_ex => ENTER_SSL_READ_EX,
    ssl::enter_ssl_write_ex => ENTER_SSL_WRITE_EX,
    ssl::return_ssl => RETURN_SSL,
    ssl::enter_ssl_handshake => ENTER_SSL_HANDSHAKE,
    ssl::return_ssl_handshake => RETURN_SSL_HANDSHAKE,
    ssl::return_ssl_get_error => RETURN_SSL_GET_ERROR,
    ssl::enter_bio_write => ENTER_BIO_WRITE,
    syscalls::sys_enter_read => SYS_ENTER_READ,
    syscalls::sys_enter_recv => SYS_ENTER_RECV,
    syscalls::sys_enter_write => SYS_ENTER_WRITE,
    syscalls::sys_enter_readv => SYS_ENTER_READV,
    syscalls::sys_enter_writev => SYS_ENTER_WRITEV,
    syscalls::sys_enter_recvmsg => SYS_ENTER_RECVMSG,
    syscalls::sys_enter_sendmsg => SYS_ENTER_SENDMSG,
    syscalls::sys_enter_sendfile => SYS_ENTER_SENDFILE,
    syscalls::sys_exit_data => SYS_EXIT_DATA,
    syscalls::sys_continue_response => SYS_CONTINUE_RESPONSE,
    syscalls::sys_capture_payload => SYS_CAPTURE_PAYLOAD,
    syscalls::sys_enter_accept => SYS_ENTER_ACCEPT,
    syscalls::sys_exit_accept => SYS_EXIT_ACCEPT,
    syscalls::sys_enter_connect => SYS_ENTER_CONNECT,
    syscalls::sys_enter_close => SYS_ENTER_CLOSE,
);

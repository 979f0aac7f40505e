//! Operating-system limits of the HTTP endpoint: the open-files limit its
//! connection caps need, and each connection's kernel send buffer.

/// Descriptors the agent needs besides HTTP connections and stream clients:
/// BPF maps, programs and links (one per attached uprobe and process), the
/// database, exporters, `/proc` reads.
pub const BASE_OPEN_FILES: u64 = 4096;

/// Raises the soft limit on open files to what the connection limits need
/// (`needed`: HTTP connections plus stream clients plus `BASE_OPEN_FILES`),
/// never beyond the hard limit and never lowering it.
pub fn raise_open_files_limit(needed: u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < needed {
            limit.rlim_cur = needed.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Kernel send buffer of each HTTP connection (the kernel doubles it): a
/// stream client that stops reading holds at most this much kernel memory
/// before its writes block and it starts skipping updates.
const SOCKET_SEND_BUFFER: libc::c_int = 32 * 1024;

/// Caps an accepted connection's kernel send buffer (`axum::serve::ListenerExt::tap_io`).
pub fn limit_send_buffer(stream: &mut tokio::net::TcpStream) {
    use std::os::fd::AsRawFd;
    // SAFETY: setsockopt on a connected socket with an int-sized value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&SOCKET_SEND_BUFFER as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

//! The HTTP server loop with connection limits, so that no client can take
//! the endpoint (and the file descriptors) away from Prometheus:
//! - a request head must arrive within `header_timeout` (also the longest a
//!   keep-alive connection may wait for its next request);
//! - a connection that moves no byte for `idle_timeout` while no request is
//!   being answered is closed;
//! - at most `max_connections` HTTP connections are open; a new connection
//!   beyond that closes the oldest one that is not being answered (a
//!   half-sent request, an idle keep-alive), or is refused if every one is
//!   busy. Upgraded WebSocket connections leave this count for the stream's
//!   own client limit.
//!
//! Each request carries the peer address (`ConnectInfo`) for per-client limits.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, extract::ConnectInfo};

use crate::stat_cells::{CounterByLabel, Gauge};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::{Notify, watch},
};

/// Limits of `serve` (`[api]` in the configuration file).
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// The server's own metrics: connections open, and closed by the limits by
/// reason (`export::http_server` turns them into `metrics_agent_http_*`).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub open: Gauge,
    pub closed: CounterByLabel,
}

/// An open connection's entry: whether a request is being answered, and how to close it.
struct Entry {
    busy: Arc<AtomicBool>,
    evict: Arc<Notify>,
}

/// Open connections by age (ids only grow).
struct Connections {
    max: usize,
    next_id: AtomicU64,
    table: Mutex<BTreeMap<u64, Entry>>,
}

/// A connection's place in the table, given back when it is dropped.
struct Admitted {
    id: u64,
    busy: Arc<AtomicBool>,
    evict: Arc<Notify>,
    connections: Arc<Connections>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.connections.table.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

impl Connections {
    /// A slot for a new connection: at the cap the oldest idle connection
    /// is told to close (`Ok(true)`); `Err` when every open one is busy.
    fn admit(self: &Arc<Self>) -> Result<(Admitted, bool), ()> {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let mut evicted = false;
        if table.len() >= self.max {
            let oldest_idle = table.iter().find(|(_, e)| !e.busy.load(Ordering::Relaxed)).map(|(id, _)| *id);
            let Some(id) = oldest_idle else { return Err(()) };
            if let Some(entry) = table.remove(&id) {
                entry.evict.notify_one();
                evicted = true;
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let busy = Arc::new(AtomicBool::new(false));
        let evict = Arc::new(Notify::new());
        table.insert(id, Entry { busy: busy.clone(), evict: evict.clone() });
        Ok((Admitted { id, busy, evict, connections: self.clone() }, evicted))
    }

    fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// Serves `app` on `listener` until `stop`, then lets open requests finish (up to 5 s).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    stats: Arc<ServerStats>,
    mut stop: watch::Receiver<bool>,
) {
    let connections =
        Arc::new(Connections { max: limits.max_connections, next_id: AtomicU64::new(0), table: Mutex::default() });
    let started = Instant::now();
    let mut accept_failures_logged = false;
    loop {
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: wait instead of spinning; say it once.
                    if !accept_failures_logged {
                        log::warn!("HTTP endpoint: cannot accept a connection: {e}");
                        accept_failures_logged = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let admitted = match connections.admit() {
            Ok((admitted, evicted)) => {
                if evicted {
                    stats.closed.inc("evicted");
                }
                admitted
            }
            Err(()) => {
                stats.closed.inc("refused");
                continue;
            }
        };
        super::limits::limit_send_buffer(&mut stream);
        stats.open.inc();
        let app = app.clone();
        let stats = stats.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, app, limits, &stats, admitted, started, stop).await;
            stats.open.dec();
        });
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while connections.len() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[allow(clippy::too_many_arguments)] // reason: one connection's whole context, called once
async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: ServerLimits,
    stats: &ServerStats,
    admitted: Admitted,
    started: Instant,
    mut stop: watch::Receiver<bool>,
) {
    // Idle since it was accepted, not since the server started: else a
    // connection whose request is not read by the watchdog's first tick (at
    // once) would be closed as idle once the server is `idle_timeout` old.
    let last_io = Arc::new(AtomicU64::new(started.elapsed().as_millis() as u64));
    let io = Watched { inner: stream, last_io: last_io.clone(), started };
    let busy = admitted.busy.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        let busy = busy.clone();
        async move {
            busy.store(true, Ordering::Relaxed);
            let response = tower::ServiceExt::oneshot(app, request).await;
            busy.store(false, Ordering::Relaxed);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(connection);
    let mut watchdog = tokio::time::interval(limits.idle_timeout / 4);
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result
                    && e.is_timeout()
                {
                    stats.closed.inc("header_timeout");
                }
                return;
            }
            _ = admitted.evict.notified() => return,
            _ = watchdog.tick() => {
                let idle_ms = (started.elapsed().as_millis() as u64).saturating_sub(last_io.load(Ordering::Relaxed));
                if !admitted.busy.load(Ordering::Relaxed) && Duration::from_millis(idle_ms) >= limits.idle_timeout {
                    stats.closed.inc("idle_timeout");
                    return;
                }
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

/// A socket that notes when it last moved a byte.
struct Watched {
    inner: tokio::net::TcpStream,
    last_io: Arc<AtomicU64>,
    started: Instant,
}

impl Watched {
    fn touch(&self) {
        self.last_io.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(result, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_oldest_idle_connection_makes_room() {
        let connections = Arc::new(Connections { max: 2, next_id: AtomicU64::new(0), table: Mutex::default() });
        let (a, evicted) = connections.admit().unwrap();
        assert!(!evicted);
        let (b, _) = connections.admit().unwrap();
        a.busy.store(true, Ordering::Relaxed);
        let (c, evicted) = connections.admit().unwrap();
        assert!(evicted, "b was idle and made room");
        assert!(!connections.table.lock().unwrap().contains_key(&b.id));
        c.busy.store(true, Ordering::Relaxed);
        assert!(connections.admit().is_err(), "every connection is busy: the new one is refused");
        drop(a);
        assert_eq!(connections.len(), 1);
    }

    /// The server on a free loopback port with `idle_timeout`, answering `GET /` with `ok`.
    async fn server(idle_timeout: Duration) -> (SocketAddr, Arc<ServerStats>, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let limits = ServerLimits { max_connections: 16, header_timeout: Duration::from_secs(10), idle_timeout };
        let stats = Arc::new(ServerStats::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(serve(listener, app, limits, stats.clone(), stop_rx));
        (addr, stats, stop_tx)
    }

    /// `GET /` on a new connection whose request is written `pause` after connecting.
    async fn get_after(addr: SocketAddr, pause: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(pause).await;
        let _ = s.write_all(b"GET / HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n").await;
        let mut response = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut response)).await;
        String::from_utf8_lossy(&response).into_owned()
    }

    /// The soak's missing scrapes: once the server had run for longer than
    /// `idle_timeout`, a new connection counted as idle since the server's
    /// start, and the watchdog's first tick (at once) closed it if its
    /// request had not been read yet — a client a few milliseconds slow
    /// between connect and send (a loaded machine) got no answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_connection_is_not_idle_before_its_first_request() {
        let idle_timeout = Duration::from_secs(1);
        let (addr, stats, _stop) = server(idle_timeout).await;
        tokio::time::sleep(idle_timeout + Duration::from_millis(200)).await;
        for pause in [Duration::from_millis(50), Duration::from_millis(300)] {
            let response = get_after(addr, pause).await;
            assert!(
                response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
                "request sent {pause:?} after connecting: {response:?}"
            );
            assert!(response.ends_with("ok"), "{response:?}");
        }
        assert_eq!(stats.closed.get("idle_timeout"), 0, "no connection closed as idle");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_keep_alive_connection_silent_for_the_idle_timeout_is_closed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let idle_timeout = Duration::from_secs(1);
        let (addr, stats, _stop) = server(idle_timeout).await;
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&buf[..n]));
        let silent = Instant::now();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "still open after {:?}", silent.elapsed());
        assert!(silent.elapsed() >= idle_timeout / 2, "closed after {:?}", silent.elapsed());
        assert_eq!(stats.closed.get("idle_timeout"), 1);
    }
}

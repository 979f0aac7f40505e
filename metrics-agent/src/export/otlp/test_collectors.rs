//! What the OTLP metrics and trace tests share to stand up collectors on
//! loopback: a listener as the connection stream a tonic server takes, and
//! a collector that accepts connections and never answers.

use std::net::SocketAddr;

use tokio::{net::TcpListener, task::JoinHandle};

/// The connections `listener` accepts, for `Server::serve_with_incoming`.
pub fn incoming(listener: TcpListener) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move { Some((l.accept().await.map(|(s, _)| s), l)) })
}

/// A collector on a loopback port that accepts every connection, holds it
/// open and never reads or answers; abort the task to close them.
pub async fn stuck_collector() -> (SocketAddr, JoinHandle<()>) {
    let blackhole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = blackhole.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = blackhole.accept().await {
            conns.push(c);
        }
    });
    (address, held)
}

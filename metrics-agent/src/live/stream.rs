//! `GET /api/v1/metrics/stream`: the WebSocket endpoint. Each client task
//! waits for the next snapshot on the `watch` channel and sends the messages
//! its subscription selects; it never queues more than the newest snapshot,
//! so a client that reads slowly skips updates (counted), and one that does
//! not take a message within `slow_client_timeout` is disconnected (counted).
//!
//! Subscription: query parameters `?application=A&provider=P`, or a message
//! `{"subscribe":{"application":"A","provider":"P"}}` (either field optional,
//! `{"subscribe":{}}` is everything), answered with `{"type":"subscribed",...}`.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::{
        ConnectInfo, Extension, State,
        ws::{Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Snapshot, StreamCounters};
use crate::http::query_string::percent_decode;

pub const PATH: &str = "/api/v1/metrics/stream";
/// Largest message a client may send (subscriptions are tiny).
const MAX_CLIENT_MESSAGE: usize = 4096;
/// Read buffer per client (the default 128 KiB would cost 128 MiB for 1000 clients).
const READ_BUFFER: usize = 4096;
/// Bytes a client's socket may buffer in the agent beyond the kernel's.
const MAX_WRITE_BUFFER: usize = 1 << 20;

#[derive(Clone)]
pub struct StreamState {
    pub updates: watch::Receiver<Arc<Snapshot>>,
    pub counters: Arc<StreamCounters>,
    pub max_clients: u64,
    /// Clients one IP address may hold (`per_address` counts them).
    pub max_clients_per_address: u64,
    pub per_address: Arc<Mutex<HashMap<IpAddr, u64>>>,
    pub slow_client_timeout: Duration,
    pub stop: watch::Receiver<bool>,
}

pub fn routes(state: StreamState) -> Router {
    Router::new().route(PATH, get(upgrade)).with_state(state)
}

/// What a client wants; `None` fields match everything.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub application: Option<String>,
    #[serde(default)]
    pub provider: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Subscribe {
    subscribe: Filter,
}

impl Filter {
    /// From `application=` and `provider=` query parameters (percent-decoded).
    pub fn from_query(query: Option<&str>) -> Self {
        let mut f = Self::default();
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "application" => f.application = Some(percent_decode(v)),
                "provider" => f.provider = Some(percent_decode(v)),
                _ => {}
            }
        }
        f
    }

    /// The messages of `snapshot` this filter selects, health first.
    pub fn select<'a>(&'a self, snapshot: &'a Snapshot) -> impl Iterator<Item = &'a axum::extract::ws::Utf8Bytes> {
        let apps = snapshot
            .apps
            .iter()
            .filter(|a| self.application.as_ref().is_none_or(|want| a.application_id.as_ref() == Some(want)))
            .filter_map(|a| match &self.provider {
                None => Some(&a.all),
                Some(p) => a.by_provider.iter().find(|(q, _)| q == p).map(|(_, m)| m),
            });
        std::iter::once(&snapshot.health).chain(apps)
    }
}

/// A client slot, given back when the connection ends (or never upgrades).
struct Slot(Arc<StreamCounters>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A client's share of its address's slots, given back like `Slot`.
struct AddressSlot {
    address: IpAddr,
    counts: Arc<Mutex<HashMap<IpAddr, u64>>>,
}

impl AddressSlot {
    /// The slot, or `None` when the address already holds `max` clients.
    fn take(counts: &Arc<Mutex<HashMap<IpAddr, u64>>>, address: IpAddr, max: u64) -> Option<Self> {
        let mut map = counts.lock().unwrap_or_else(|e| e.into_inner());
        let held = map.entry(address).or_insert(0);
        if *held >= max {
            return None;
        }
        *held += 1;
        Some(Self { address, counts: counts.clone() })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut map = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = map.get_mut(&self.address) {
            *held -= 1;
            if *held == 0 {
                map.remove(&self.address);
            }
        }
    }
}

/// Browsers send `Origin`; a page from another origin may not read the stream.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    origin.split_once("://").is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

async fn upgrade(
    State(state): State<StreamState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    ws: WebSocketUpgrade,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin WebSocket connections are refused\n").into_response();
    }
    // Served without peer addresses (the benchmark): no per-address share.
    let address_slot = match peer {
        Some(Extension(ConnectInfo(peer))) => {
            match AddressSlot::take(&state.per_address, peer.ip(), state.max_clients_per_address) {
                Some(slot) => Some(slot),
                None => {
                    state.counters.rejected.fetch_add(1, Ordering::Relaxed);
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "{} stream clients already connected from {} ([stream] max_clients_per_address)\n",
                            state.max_clients_per_address,
                            peer.ip()
                        ),
                    )
                        .into_response();
                }
            }
        }
        None => None,
    };
    let taken = state.counters.clients.fetch_add(1, Ordering::Relaxed);
    let slot = Slot(state.counters.clone());
    if taken >= state.max_clients {
        state.counters.rejected.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{} stream clients already connected ([stream] max_clients)\n", state.max_clients),
        )
            .into_response();
    }
    let filter = Filter::from_query(uri.query());
    ws.read_buffer_size(READ_BUFFER)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            serve(socket, state, filter).await;
            drop(slot);
            drop(address_slot);
        })
}

/// Sends one message, or gives up after the slow-client timeout.
async fn send(socket: &mut WebSocket, message: Message, state: &StreamState) -> Result<(), ()> {
    match tokio::time::timeout(state.slow_client_timeout, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(_) => {
            state.counters.dropped_slow.fetch_add(1, Ordering::Relaxed);
            Err(())
        }
    }
}

fn bump(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

async fn serve(mut socket: WebSocket, state: StreamState, mut filter: Filter) {
    let mut updates = state.updates.clone();
    // Updates start at the next tick, so a first `subscribe` applies to all of them.
    let mut last_seq = updates.borrow_and_update().seq;
    let mut stop = state.stop.clone();
    loop {
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = updates.borrow_and_update().clone();
                bump(&state.counters.updates_skipped, snapshot.seq.saturating_sub(last_seq + 1));
                last_seq = snapshot.seq;
                for text in filter.select(&snapshot) {
                    if send(&mut socket, Message::Text(text.clone()), &state).await.is_err() {
                        return;
                    }
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let reply = match serde_json::from_str::<Subscribe>(text.as_str()) {
                        Ok(s) => {
                            filter = s.subscribe;
                            serde_json::json!({"type": "subscribed", "filter": filter})
                        }
                        Err(e) => serde_json::json!({
                            "type": "error",
                            "message": format!(
                                "expected {{\"subscribe\":{{\"application\":\"...\",\"provider\":\"...\"}}}}: {e}"
                            ),
                        }),
                    };
                    if send(&mut socket, Message::Text(reply.to_string().into()), &state).await.is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = stop.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.send(Message::Close(None))).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_filters_decode() {
        let f = Filter::from_query(Some("application=chat%20app&provider=openai&x=1"));
        assert_eq!(f.application.as_deref(), Some("chat app"));
        assert_eq!(f.provider.as_deref(), Some("openai"));
        assert_eq!(Filter::from_query(None), Filter::default());
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz+%41"), "%zz A");
    }

    #[test]
    fn one_address_holds_its_share_of_the_slots() {
        let counts = Arc::default();
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = AddressSlot::take(&counts, a, 2).unwrap();
        let _second = AddressSlot::take(&counts, a, 2).unwrap();
        assert!(AddressSlot::take(&counts, a, 2).is_none(), "a third client of one address is refused");
        assert!(AddressSlot::take(&counts, b, 2).is_some(), "another address still gets a slot");
        drop(first);
        assert!(AddressSlot::take(&counts, a, 2).is_some(), "a slot given back is free again");
    }

    #[test]
    fn origin_must_match_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:9464".parse().unwrap());
        assert!(same_origin(&h), "no Origin: not a browser");
        h.insert(header::ORIGIN, "http://127.0.0.1:9464".parse().unwrap());
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
    }
}

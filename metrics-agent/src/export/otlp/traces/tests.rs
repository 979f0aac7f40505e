//! The trace exporter against test collectors: an HTTP server and the
//! official gRPC `TraceService`, both decoding the official protos, and
//! collectors that never answer (a bare TCP listener, a `TraceService` that
//! holds every call).

use std::{
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::sync::{broadcast, watch};
use tonic::codec::CompressionEncoding;

use super::*;
use crate::{
    export::{
        otlp::{
            config::{Compression, OtlpSettings, Protocol},
            test_collectors::{incoming, stuck_collector},
        },
        settings::{Delivery, Secret},
    },
    records::{RecordBuilder, RequestRecord},
};

/// Requests a collector received, with their `authorization` header and
/// their compression (`content-encoding`, `grpc-encoding`).
type Got = Arc<Mutex<Vec<(ExportTraceServiceRequest, Option<String>, Option<String>)>>>;

fn settings(protocol: Protocol, endpoint: String, timeout_ms: u64, queue: usize, batch: usize) -> TraceSettings {
    TraceSettings {
        otlp: OtlpSettings {
            protocol,
            endpoint,
            ca_pem: None,
            headers: vec![("authorization".into(), Secret("Bearer trace-token".into()))],
            compression: Compression::Gzip,
            delivery: Delivery {
                interval: Duration::from_millis(100),
                timeout: Duration::from_millis(timeout_ms),
                queue_batches: 1,
                max_retries: 0,
            },
        },
        queue_spans: queue,
        batch_spans: batch,
        parent_based: true,
    }
}

/// A paired exchange: upstream record `seq` and its client record.
fn exchange(seq: u64, input: u64) -> [RequestRecord; 2] {
    let mut up = RecordBuilder::new().side("upstream").start_ns(seq * 1_000_000 + 10).duration_ms(0.5).build();
    up.pairing.seq = seq;
    up.model_requested = Some("gpt-4o-mini".into());
    up.tokens.input = Some(input);
    let mut client = RecordBuilder::new().start_ns(seq * 1_000_000).duration_ms(0.9).build();
    client.pairing.upstream_seq = Some(seq);
    client.model_requested = Some("gpt-4o-mini".into());
    client.tokens.input = Some(input);
    [up, client]
}

/// Starts the exporter on a bus of its own; returns the bus, the stop
/// switch, the statistics and the task.
fn start(
    s: TraceSettings,
) -> (broadcast::Sender<Arc<RequestRecord>>, watch::Sender<bool>, Arc<AgentStats>, tokio::task::JoinHandle<()>) {
    let (bus, _) = broadcast::channel(1024);
    let (stop_tx, stop) = watch::channel(false);
    let stats = Arc::new(AgentStats::default());
    let feed = RecordFeed { records: bus.subscribe(), stats: stats.clone(), stop };
    let sink = Sink::new(&s.otlp).unwrap();
    let task = tokio::spawn(run(s, sink, feed));
    (bus, stop_tx, stats, task)
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(10), "waited 10 s for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every span of every request received.
fn spans(got: &Got) -> Vec<Span> {
    let got = got.lock().unwrap();
    got.iter()
        .flat_map(|(r, ..)| r.resource_spans.iter().flat_map(|rs| rs.scope_spans.iter().flat_map(|s| s.spans.clone())))
        .collect()
}

/// Checks 2 × `n` spans: each upstream span the child of the client span of
/// its exchange (told apart by input tokens), in its trace.
fn check_pairs(spans: &[Span], n: u64) {
    assert_eq!(spans.len() as u64, 2 * n);
    let input = |s: &Span| {
        s.attributes.iter().find(|a| a.key == "gen_ai.usage.input_tokens").and_then(|a| match a.value.as_ref()?.value {
            Some(opentelemetry_proto::tonic::common::v1::any_value::Value::IntValue(v)) => Some(v),
            _ => None,
        })
    };
    for seq in 1..=n as i64 {
        let of =
            |kind: i32| spans.iter().find(|s| s.kind == kind && input(s) == Some(seq)).expect("a span of each side");
        let (client, up) = (of(SpanKind::Server as i32), of(SpanKind::Client as i32));
        assert_eq!(up.parent_span_id, client.span_id);
        assert_eq!(up.trace_id, client.trace_id);
        assert!(client.parent_span_id.is_empty());
        assert_eq!(client.name, "chat gpt-4o-mini");
    }
}

#[tokio::test]
async fn spans_reach_an_http_collector() {
    let got: Got = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
            assert_eq!(headers.get("content-encoding").unwrap(), "gzip");
            assert_eq!(headers.get("content-type").unwrap(), "application/x-protobuf");
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body.as_ref()), &mut plain).unwrap();
            let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(String::from);
            let request = ExportTraceServiceRequest::decode(plain.as_slice()).unwrap();
            g.lock().unwrap().push((request, header("authorization"), header("content-encoding")));
            ExportTraceServiceResponse::default().encode_to_vec()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (bus, stop, stats, task) = start(settings(Protocol::HttpProtobuf, url, 5000, 100, 3));
    for seq in 1..=5 {
        for r in exchange(seq, seq) {
            bus.send(Arc::new(r)).unwrap();
        }
    }
    wait_for("10 spans", || load(&stats.spans_exported) == 10).await;
    check_pairs(&spans(&got), 5);
    assert!(got.lock().unwrap().iter().all(|(r, auth, _)| auth.as_deref() == Some("Bearer trace-token")
        && r.resource_spans[0].scope_spans[0].spans.len() <= 3));
    let r = got.lock().unwrap()[0].0.resource_spans[0].clone();
    assert_eq!(r.scope_spans[0].schema_url, sink::SCHEMA_URL);
    assert!(r.resource.as_ref().unwrap().attributes.iter().any(|a| a.key == "service.name"));
    stop.send(true).unwrap();
    drop(bus);
    task.await.unwrap();
    assert_eq!(load(&stats.spans_queued), 0);
    assert_eq!(load(&stats.spans_dropped_queue_full) + load(&stats.spans_dropped_send_failed), 0);
}

#[derive(Clone, Default)]
struct GrpcCollector {
    got: Got,
}

#[tonic::async_trait]
impl TraceService for GrpcCollector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let header = |k: &str| request.metadata().get(k).and_then(|v| v.to_str().ok()).map(String::from);
        let (auth, encoding) = (header("authorization"), header("grpc-encoding"));
        self.got.lock().unwrap().push((request.into_inner(), auth, encoding));
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A gRPC collector serving the official `TraceService` (gzip accepted) on
/// a loopback port: the collector and its URL.
async fn grpc_collector() -> (GrpcCollector, String) {
    let c = GrpcCollector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let service = TraceServiceServer::new(c.clone()).accept_compressed(CompressionEncoding::Gzip);
    tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming(listener)));
    (c, url)
}

#[tokio::test]
async fn spans_reach_a_grpc_collector_and_held_upstreams_are_flushed_at_stop() {
    let (c, url) = grpc_collector().await;
    let (bus, stop, stats, task) = start(settings(Protocol::Grpc, url, 5000, 100, 512));
    for seq in 1..=4 {
        for r in exchange(seq, seq) {
            bus.send(Arc::new(r)).unwrap();
        }
    }
    // An upstream record whose client never comes: held, sent alone at stop.
    bus.send(Arc::new(exchange(9, 9)[0].clone())).unwrap();
    wait_for("8 spans", || load(&stats.spans_exported) == 8).await;
    check_pairs(&spans(&c.got), 4);
    let (_, auth, encoding) = c.got.lock().unwrap()[0].clone();
    assert_eq!(auth.as_deref(), Some("Bearer trace-token"));
    assert_eq!(encoding.as_deref(), Some("gzip"), "compression = gzip applies to gRPC traces");
    stop.send(true).unwrap();
    drop(bus);
    task.await.unwrap();
    assert_eq!(load(&stats.spans_exported), 9);
    let alone = spans(&c.got).into_iter().find(|s| s.kind == SpanKind::Client as i32 && s.parent_span_id.is_empty());
    assert!(alone.is_some(), "the unpaired upstream span, a root of its own");
}

/// `compression = none` sends gRPC trace calls uncompressed (no
/// `grpc-encoding`), and the collector still gets every span.
#[tokio::test]
async fn grpc_spans_go_uncompressed_when_compression_is_none() {
    let (c, url) = grpc_collector().await;
    let mut s = settings(Protocol::Grpc, url, 5000, 100, 512);
    s.otlp.compression = Compression::None;
    let (bus, stop, stats, task) = start(s);
    for seq in 1..=2 {
        for r in exchange(seq, seq) {
            bus.send(Arc::new(r)).unwrap();
        }
    }
    wait_for("4 spans", || load(&stats.spans_exported) == 4).await;
    check_pairs(&spans(&c.got), 2);
    assert!(c.got.lock().unwrap().iter().all(|(_, _, encoding)| encoding.is_none()), "no grpc-encoding");
    stop.send(true).unwrap();
    drop(bus);
    task.await.unwrap();
}

/// A collector that accepts and never answers: the reading of records goes
/// on, the queue stays within its bound, and every span is accounted for as
/// delivered, dropped (queue full, send failed) or still queued; stopping
/// waits at most for one last attempt.
#[tokio::test]
async fn a_stuck_collector_neither_blocks_nor_grows() {
    let (address, held) = stuck_collector().await;
    let url = format!("http://{address}/v1/traces");
    neither_blocks_nor_grows(settings(Protocol::HttpProtobuf, url, 200, 4, 2)).await;
    held.abort();
}

/// The official `TraceService` that takes every call and never answers it.
#[derive(Clone, Default)]
struct SilentGrpcCollector {
    calls: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for SilentGrpcCollector {
    async fn export(
        &self,
        _: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        std::future::pending().await
    }
}

/// The same over gRPC, against a collector that completes the HTTP/2
/// handshake and takes each `Export` call but never answers: each call
/// times out (`DEADLINE_EXCEEDED` or the attempt's timeout), and the
/// exporter neither blocks nor grows.
#[tokio::test]
async fn a_stuck_grpc_collector_neither_blocks_nor_grows() {
    let c = SilentGrpcCollector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let service = TraceServiceServer::new(c.clone()).accept_compressed(CompressionEncoding::Gzip);
    let server =
        tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming(listener)));
    neither_blocks_nor_grows(settings(Protocol::Grpc, url, 200, 4, 2)).await;
    assert!(load(&c.calls) >= 2, "the collector took the calls it never answered: {}", load(&c.calls));
    server.abort();
}

/// Sends 100 exchanges (200 spans) at `s`, whose collector never answers,
/// and checks the bounds and the accounting.
async fn neither_blocks_nor_grows(s: TraceSettings) {
    let queue = s.queue_spans as u64;
    let (bus, stop, stats, task) = start(s);
    let mut max_queued = 0;
    for seq in 1..=100 {
        for r in exchange(seq, seq) {
            bus.send(Arc::new(r)).unwrap();
        }
        max_queued = max_queued.max(load(&stats.spans_queued));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(max_queued <= queue, "the queue stays within its {queue} spans: {max_queued}");
    assert!(load(&stats.spans_dropped_queue_full) > 100, "spans beyond the queue are dropped and counted");
    assert!(load(&stats.span_export_failures) >= 2, "each attempt timed out");
    assert_eq!(load(&stats.spans_dropped_lagged), 0, "records were read as fast as they came");
    let stopping = std::time::Instant::now();
    stop.send(true).unwrap();
    drop(bus);
    task.await.unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(4), "stopping did not wait on the stuck collector");
    assert_eq!(load(&stats.spans_exported), 0);
    assert_eq!(load(&stats.spans_queued), 0);
    assert_eq!(
        load(&stats.spans_dropped_queue_full) + load(&stats.spans_dropped_send_failed),
        200,
        "every span is accounted for as dropped, by reason"
    );
}

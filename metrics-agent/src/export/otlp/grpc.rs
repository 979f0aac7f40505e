//! OTLP over gRPC: each snapshot is one `MetricsService/Export` call through
//! the official client stubs (`opentelemetry-proto`) on a tonic channel,
//! gzip-compressed, with the configured headers as metadata and TLS for
//! `https://` endpoints. The channel connects lazily and reconnects by
//! itself; every call has the delivery timeout, so a stuck collector costs
//! one timed-out call per attempt and the router's bounded queue does the rest.

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use tonic::{
    Code, Request, Status,
    codec::CompressionEncoding,
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use super::{
    config::{Compression, OtlpSettings},
    encode, resource_attributes,
};
use crate::export::{ExportError, Exporter, common_settings::redact_userinfo, model::Snapshot};

pub struct GrpcExporter {
    client: MetricsServiceClient<Channel>,
    metadata: MetadataMap,
    resource: Vec<(String, String)>,
}

/// The lazily connected channel to a gRPC collector (TLS for `https://`,
/// with the extra certificate authority) and the headers as metadata.
/// Shared by metrics and traces (`traces`).
pub fn channel(settings: &OtlpSettings) -> Result<(Channel, MetadataMap), ExportError> {
    let shown = redact_userinfo(&settings.endpoint);
    let mut endpoint = Endpoint::from_shared(settings.endpoint.clone())
        .map_err(|_| ExportError::Permanent(format!("otlp: {shown} is not a valid gRPC endpoint URL")))?
        .connect_timeout(settings.delivery.timeout)
        .timeout(settings.delivery.timeout);
    if settings.endpoint.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_webpki_roots();
        if let Some(pem) = &settings.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint =
            endpoint.tls_config(tls).map_err(|e| ExportError::Permanent(format!("otlp: TLS for {shown}: {e}")))?;
    }
    let mut metadata = MetadataMap::new();
    for (k, v) in &settings.headers {
        let key = MetadataKey::from_bytes(k.as_bytes())
            .map_err(|_| ExportError::Permanent(format!("otlp header name {k:?} is not valid gRPC metadata")))?;
        let value = MetadataValue::try_from(v.0.as_str())
            .map_err(|_| ExportError::Permanent(format!("otlp header {k:?} has a value that is not valid")))?;
        metadata.insert(key, value);
    }
    Ok((endpoint.connect_lazy(), metadata))
}

impl GrpcExporter {
    /// Builds the channel (connected at the first export).
    pub fn new(settings: OtlpSettings) -> Result<Self, ExportError> {
        let (channel, metadata) = channel(&settings)?;
        let mut client = MetricsServiceClient::new(channel);
        if settings.compression == Compression::Gzip {
            client = client.send_compressed(CompressionEncoding::Gzip).accept_compressed(CompressionEncoding::Gzip);
        }
        Ok(Self { client, metadata, resource: resource_attributes(|k| std::env::var(k).ok()) })
    }
}

/// Classifies a failed call as the OTLP specification says: `UNAVAILABLE`,
/// `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`, `CANCELLED`, `ABORTED`,
/// `OUT_OF_RANGE` and `DATA_LOSS` are retried; the rest (`UNAUTHENTICATED`,
/// `PERMISSION_DENIED`, `INVALID_ARGUMENT`, `UNIMPLEMENTED`...) are not. A
/// TLS handshake that refused the collector's certificate because no
/// trusted authority signed it (rustls' `UnknownIssuer`, a transport
/// failure, `UNAVAILABLE`) says how to trust the collector's authority; an
/// expired certificate or a name mismatch is not mended that way.
pub fn classify(status: &Status) -> ExportError {
    let unknown_authority = status.code() == Code::Unavailable && status.message().contains("UnknownIssuer");
    let hint = if unknown_authority {
        " (to trust the collector's certificate authority, name its PEM file in OTEL_EXPORTER_OTLP_CERTIFICATE or [exporters.otlp] certificate)"
    } else {
        ""
    };
    let what = format!("otlp: the collector answered {:?}: {}{hint}", status.code(), status.message());
    match status.code() {
        Code::Unavailable
        | Code::ResourceExhausted
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Aborted
        | Code::OutOfRange
        | Code::DataLoss => ExportError::Retryable(what),
        _ => ExportError::Permanent(format!("{what} (check the endpoint and credentials)")),
    }
}

impl Exporter for GrpcExporter {
    async fn export(&mut self, snapshot: &Snapshot) -> Result<(), ExportError> {
        let mut request = Request::new(encode(snapshot, &self.resource));
        *request.metadata_mut() = self.metadata.clone();
        let answer = self.client.export(request).await.map_err(|s| classify(&s))?;
        if let Some(p) = answer.into_inner().partial_success
            && p.rejected_data_points > 0
        {
            log::debug!("otlp: the collector rejected {} data points: {}", p.rejected_data_points, p.error_message);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
        metrics_service_server::{MetricsService, MetricsServiceServer},
    };
    use tokio::sync::watch;

    use super::*;
    use crate::export::{
        Planned, Source,
        audit_metrics::{AuditMetrics, tests::record},
        otlp::{
            config::Protocol,
            test_certificates::private_authority_and_localhost_certificate,
            test_collectors::{incoming, stuck_collector},
        },
        settings::{Delivery, Secret},
    };

    /// A request with its `authorization` and `grpc-encoding` metadata.
    type Received = (ExportMetricsServiceRequest, Option<String>, Option<String>);

    /// A test collector: the official service definition, recording each
    /// request with its metadata; fails with `fail` while it is set.
    #[derive(Clone, Default)]
    struct Collector {
        got: Arc<Mutex<Vec<Received>>>,
        fail: Arc<Mutex<Option<Code>>>,
    }

    #[tonic::async_trait]
    impl MetricsService for Collector {
        async fn export(
            &self,
            request: Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, Status> {
            if let Some(code) = *self.fail.lock().unwrap() {
                return Err(Status::new(code, "refused by the test"));
            }
            let header = |k: &str| request.metadata().get(k).and_then(|v| v.to_str().ok()).map(String::from);
            let (auth, encoding) = (header("authorization"), header("grpc-encoding"));
            self.got.lock().unwrap().push((request.into_inner(), auth, encoding));
            Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
        }
    }

    async fn collector() -> (Collector, String) {
        let c = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let service = MetricsServiceServer::new(c.clone()).accept_compressed(CompressionEncoding::Gzip);
        tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming(listener)));
        (c, url)
    }

    fn settings(endpoint: String, timeout_ms: u64) -> OtlpSettings {
        OtlpSettings {
            protocol: Protocol::Grpc,
            endpoint,
            ca_pem: None,
            headers: vec![("authorization".into(), Secret("Bearer grpc-token".into()))],
            compression: Compression::Gzip,
            delivery: Delivery {
                interval: Duration::from_millis(100),
                timeout: Duration::from_millis(timeout_ms),
                queue_batches: 2,
                max_retries: 0,
            },
        }
    }

    fn source() -> Arc<Source> {
        let audit = Arc::new(AuditMetrics::default());
        audit.observe(&record("upstream", "gpt-4o-mini", 200, 12, 34));
        Arc::new(Source::of_audit(audit, vec![]))
    }

    /// The official service receives the snapshot, gzip-compressed, with the
    /// headers as metadata; `UNAVAILABLE` is retryable, `UNAUTHENTICATED` not.
    #[tokio::test]
    async fn a_grpc_collector_receives_the_snapshot() {
        let (c, url) = collector().await;
        let mut e = GrpcExporter::new(settings(url, 5000)).unwrap();
        e.export(&source().snapshot(false)).await.unwrap();
        let (request, auth, encoding) = c.got.lock().unwrap().pop().unwrap();
        assert_eq!(auth.as_deref(), Some("Bearer grpc-token"));
        assert_eq!(encoding.as_deref(), Some("gzip"));
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        let tokens = metrics.iter().find(|m| m.name == "llm.tokens").expect("llm.tokens");
        let Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(sum)) = &tokens.data else { panic!() };
        let values: Vec<_> = sum.data_points.iter().map(|p| p.value).collect();
        use opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt;
        assert_eq!(values, vec![Some(AsInt(12)), Some(AsInt(34))]);
        *c.fail.lock().unwrap() = Some(Code::Unavailable);
        assert!(matches!(e.export(&source().snapshot(false)).await, Err(ExportError::Retryable(_))));
        *c.fail.lock().unwrap() = Some(Code::Unauthenticated);
        assert!(matches!(e.export(&source().snapshot(false)).await, Err(ExportError::Permanent(_))));
    }

    /// `https://` is TLS: trusted with the configured certificate authority,
    /// refused (and retried) without it.
    #[tokio::test]
    async fn tls_collectors_are_verified_against_the_configured_authority() {
        let dir = std::env::temp_dir().join(format!("otlp-grpc-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let certificates = private_authority_and_localhost_certificate(&dir);
        let ca = std::fs::read(&certificates.ca_file).unwrap();
        let (cert, key) = (certificates.cert_pem, certificates.key_pem);
        let c = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://localhost:{}", listener.local_addr().unwrap().port());
        let tls = tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(cert, key));
        tokio::spawn(
            tonic::transport::Server::builder()
                .tls_config(tls)
                .unwrap()
                .add_service(MetricsServiceServer::new(c.clone()).accept_compressed(CompressionEncoding::Gzip))
                .serve_with_incoming(incoming(listener)),
        );
        let untrusted = GrpcExporter::new(settings(url.clone(), 5000)).unwrap().export(&source().snapshot(false)).await;
        let Err(ExportError::Retryable(error)) = untrusted else { panic!("{:?}", untrusted.err()) };
        assert!(error.contains("certificate") && error.contains("OTEL_EXPORTER_OTLP_CERTIFICATE"), "{error}");
        assert!(c.got.lock().unwrap().is_empty(), "nothing sent to an unverified collector");
        let trusted = OtlpSettings { ca_pem: Some(ca), ..settings(url, 5000) };
        GrpcExporter::new(trusted).unwrap().export(&source().snapshot(false)).await.unwrap();
        assert_eq!(c.got.lock().unwrap().len(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A collector that accepts connections and never answers: each call
    /// times out, the router drops what the queue cannot hold (counted), and
    /// the queue never holds more than its bound.
    #[tokio::test]
    async fn a_stuck_collector_neither_blocks_nor_grows() {
        let (address, held) = stuck_collector().await;
        let url = format!("http://{address}");
        let s = settings(url, 200);
        let planned = vec![Planned::new("otlp", s.delivery, GrpcExporter::new(s).unwrap())];
        let stats = planned[0].stats.clone();
        let (stop_tx, stop_rx) = watch::channel(false);
        let started = std::time::Instant::now();
        let router = tokio::spawn(crate::export::run(source(), planned, stop_rx));
        let mut max_queued = 0;
        while started.elapsed() < Duration::from_secs(3) {
            max_queued = max_queued.max(stats.queued.load(std::sync::atomic::Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        assert!(max_queued <= 2, "the queue stays within its 2 batches: {max_queued}");
        assert!(load(&stats.failures) >= 5, "each call timed out: {}", load(&stats.failures));
        assert!(load(&stats.dropped_queue_full) >= 5, "offers beyond the queue were dropped and counted");
        assert_eq!(load(&stats.batches), 0);
        let stopping = std::time::Instant::now();
        stop_tx.send(true).unwrap();
        router.await.unwrap();
        assert!(stopping.elapsed() < Duration::from_secs(3), "stopping did not wait on the stuck collector");
        held.abort();
    }
}

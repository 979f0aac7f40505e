//! Where span batches go: one `ExportTraceServiceRequest` (official protos)
//! POSTed to `/v1/traces` as protobuf, or sent with the gRPC
//! `TraceService/Export` call, on the same clients, headers, TLS and
//! compression as the metrics (`otlp::http_client`, `otlp::grpc::channel`).

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse, trace_service_client::TraceServiceClient,
    },
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;
use tonic::{codec::CompressionEncoding, metadata::MetadataMap, transport::Channel};

use crate::export::{
    ExportError,
    otlp::{
        agent_resource, agent_scope,
        config::{Compression, OtlpSettings, Protocol},
        grpc, http_client, post, resource_attributes,
    },
};

/// The semantic conventions the spans follow.
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.41.0";

/// One request carrying `spans`, with the agent's resource.
pub fn request(spans: Vec<Span>, resource: &[(String, String)]) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(agent_resource(resource)),
            scope_spans: vec![ScopeSpans { scope: Some(agent_scope()), spans, schema_url: SCHEMA_URL.into() }],
            schema_url: SCHEMA_URL.into(),
        }],
    }
}

/// A collector reached over HTTP or gRPC.
pub enum Sink {
    Http { client: reqwest::Client, headers: reqwest::header::HeaderMap, settings: OtlpSettings },
    Grpc { client: TraceServiceClient<Channel>, metadata: MetadataMap },
}

impl Sink {
    pub fn new(settings: &OtlpSettings) -> Result<Self, ExportError> {
        Ok(match settings.protocol {
            Protocol::HttpProtobuf => {
                let (client, headers) = http_client(settings)?;
                Self::Http { client, headers, settings: settings.clone() }
            }
            Protocol::Grpc => {
                let (channel, metadata) = grpc::channel(settings)?;
                let mut client = TraceServiceClient::new(channel);
                if settings.compression == Compression::Gzip {
                    client =
                        client.send_compressed(CompressionEncoding::Gzip).accept_compressed(CompressionEncoding::Gzip);
                }
                Self::Grpc { client, metadata }
            }
        })
    }

    /// Sends one request; the spans the collector said it rejected are
    /// logged at debug level (they were delivered as far as the agent goes).
    pub async fn send(&mut self, request: &ExportTraceServiceRequest) -> Result<(), ExportError> {
        let answer = match self {
            Self::Http { client, headers, settings } => {
                let body = post(client, settings, headers, request.encode_to_vec()).await?;
                ExportTraceServiceResponse::decode(body.as_slice()).ok()
            }
            Self::Grpc { client, metadata } => {
                let mut call = tonic::Request::new(request.clone());
                *call.metadata_mut() = metadata.clone();
                Some(client.export(call).await.map_err(|s| grpc::classify(&s))?.into_inner())
            }
        };
        if let Some(p) = answer.and_then(|a| a.partial_success)
            && p.rejected_spans > 0
        {
            log::debug!("otlp traces: the collector rejected {} spans: {}", p.rejected_spans, p.error_message);
        }
        Ok(())
    }
}

/// The resource of every request (service, host, `OTEL_RESOURCE_ATTRIBUTES`).
pub fn resource() -> Vec<(String, String)> {
    resource_attributes(|k| std::env::var(k).ok())
}

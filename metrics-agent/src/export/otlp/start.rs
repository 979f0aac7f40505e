//! How the configured OTLP exporter starts: over HTTP/protobuf
//! (`OtlpExporter`) or gRPC (`GrpcExporter`), as `protocol` says. Apart from
//! `config.rs` so that the configuration imports neither transport.

use super::{
    NAME, OtlpExporter,
    config::{OtlpSettings, Protocol},
    grpc::GrpcExporter,
};
use crate::export::{
    ExportError, Planned,
    backends::{Resolved, Start},
};

impl Resolved for OtlpSettings {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self) -> Result<Start, ExportError> {
        Ok(Start::Push(match self.protocol {
            Protocol::HttpProtobuf => Planned::new(NAME, self.delivery, OtlpExporter::new(self.clone())?),
            Protocol::Grpc => Planned::new(NAME, self.delivery, GrpcExporter::new(self.clone())?),
        }))
    }
}

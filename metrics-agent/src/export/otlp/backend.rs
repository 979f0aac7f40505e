//! The OTLP exporter's place in the exporter list (`export/settings.rs`):
//! resolves `[exporters.otlp]` into the metrics exporter (`config.rs`) and,
//! when traces are on, the trace exporter (`traces/config.rs`). Apart from
//! both so that neither configuration imports the other both ways.

use std::sync::Arc;

use super::{config, config::OtlpFile, traces};
use crate::export::{
    backends::{Backend, Env, Resolved},
    common_settings::{REDACTED, SettingsError, redact_userinfo},
};

/// The OTLP exporter's place in the exporter list (`settings.rs`).
pub struct Otlp;

impl Backend for Otlp {
    type File = OtlpFile;

    fn resolve(file: Option<&OtlpFile>, env: Env) -> Result<Vec<Arc<dyn Resolved>>, SettingsError> {
        let mut out: Vec<Arc<dyn Resolved>> = Vec::new();
        if let Some(f) = file.filter(|f| f.enabled != Some(false)) {
            out.push(Arc::new(config::settings(f, env)?));
        }
        if let Some(t) = traces::config::settings(file, env)? {
            out.push(Arc::new(t));
        }
        Ok(out)
    }

    fn redact(file: &mut OtlpFile) {
        for v in file.headers.values_mut() {
            *v = REDACTED.into();
        }
        file.endpoint = file.endpoint.as_deref().map(redact_userinfo);
        file.traces_endpoint = file.traces_endpoint.as_deref().map(redact_userinfo);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::settings::tests::parse;

    #[test]
    fn redaction_hides_headers_and_userinfo() {
        let mut f = parse("[exporters.otlp]\nendpoint = \"https://u:p4ss@otel.example\"\nheaders = { authorization = \"Bearer x\" }\n")
            .otlp
            .unwrap();
        Otlp::redact(&mut f);
        let text = toml::to_string(&f).unwrap();
        assert!(!text.contains("Bearer x") && !text.contains("p4ss") && text.contains(REDACTED), "{text}");
    }
}

//! What a request record carries for pairing the client and upstream sides
//! of a proxy (filled by the pipeline, used by `correlate`).

use serde::Serialize;

/// How a client record was tied to its upstream record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Confidence {
    /// The same provider response id or request body, on one candidate only.
    Certain,
    /// Model, streaming flag, status and usage single it out.
    Content,
    /// Only time and process: the latest-starting candidate.
    Time,
}

/// What a record carries for pairing the two sides of a proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pairing {
    /// The provider's id of the response (body `id`, else a `x-request-id`
    /// or `request-id` header), bounded.
    pub request_id: Option<String>,
    /// Client records: how the upstream record was found; null when none was.
    pub confidence: Option<Confidence>,
    /// Client records: the paired upstream record's `request_id`.
    pub upstream_request_id: Option<String>,
    /// Digest of the request body (complete bodies only).
    #[serde(skip)]
    pub request_digest: Option<u64>,
    /// Upstream records: their number in the correlator's order (from 1),
    /// unique per agent run; 0 until correlated.
    #[serde(skip)]
    pub seq: u64,
    /// Client records: the paired upstream record's `seq` (spans make the
    /// upstream span a child of the client span with it).
    #[serde(skip)]
    pub upstream_seq: Option<u64>,
}

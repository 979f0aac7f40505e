//! Building blocks of the end-to-end tests and the demo: HTTP/1.1 helpers,
//! a mock LLM provider and a client that both count ground truth, and a
//! harness that runs real proxies and the agent.

// One copy of the openssl steps for the agent's unit tests and these (see its docs).
#[path = "../../metrics-agent/src/export/otlp/test_certificates.rs"]
pub mod certificates;
pub mod client;
pub mod go;
pub mod h2_client;
pub mod harness;
pub mod http1;
pub mod metrics;
pub mod mock;
pub mod modes;
pub mod paced;
pub mod postgres;
pub mod records;
pub mod webdriver;

//! Building blocks of the end-to-end tests and the demo: HTTP/1.1 helpers,
//! a mock LLM provider and a client that both count ground truth, and a
//! harness that runs real proxies and the agent.

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

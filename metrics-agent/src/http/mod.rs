//! The agent's HTTP endpoint, shared by every route: the server loop with
//! connection limits (`server`, `limits`), bearer-token authentication
//! (`auth`), the Host/Origin and write guards (`guard`), and the routes of
//! its own: `/metrics` and `/readyz` (`metrics`), and the answer while the
//! agent starts (`starting`). The routes of storage
//! (`store::api`) and of the live stream (`live`) are merged in by `run`.

pub mod auth;
pub mod guard;
pub mod limits;
pub mod metrics;
pub mod query_string;
pub mod server;
pub mod starting;

pub use metrics::{openmetrics_to_prometheus, readiness, router};

//! The audit path's parsers, compiled from the agent's own source files so
//! that the fuzz targets exercise exactly the code the agent runs (the agent
//! is a binary crate; these modules depend only on each other).
#![allow(dead_code, reason = "the agent uses parts of these modules the fuzz targets do not")]

pub mod audit;
#[path = "../../src/secrets.rs"]
pub mod secrets;

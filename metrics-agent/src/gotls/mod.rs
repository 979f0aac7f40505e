//! Go's crypto/tls (issue 12, item 3; in progress): finding the functions
//! to hook in a Go executable, stripped or not (`pclntab`). Not attached to
//! any probe yet.
#![allow(dead_code, reason = "the uprobes on crypto/tls that use it are the next step")]

pub mod pclntab;

//! A private certificate authority and a `localhost` certificate it signed,
//! made with `openssl` (Debian package openssl, installed by `cargo xtask
//! setup`), for tests of TLS collectors. One copy for two crates: the
//! agent's unit tests compile it as `export::otlp::test_certificates`, and
//! the end-to-end tests' library (`llm-proxy-e2e`, which the agent's unit
//! tests cannot depend on) includes this same file with `#[path]` as
//! `llm_proxy_e2e::certificates`. So it uses the standard library only.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// What `private_authority_and_localhost_certificate` made.
pub struct Certificates {
    /// The authority's certificate: the PEM file an agent is told to trust
    /// (`OTEL_EXPORTER_OTLP_CERTIFICATE`, `[exporters.otlp] certificate`).
    pub ca_file: PathBuf,
    /// The `localhost` certificate (`subjectAltName=DNS:localhost`), PEM.
    pub cert_pem: Vec<u8>,
    /// Its private key, PEM.
    pub key_pem: Vec<u8>,
}

/// Runs `openssl`; panics with its error output when it fails.
fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().expect("openssl (Debian package openssl) must be installed");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Makes, in `dir`, a certificate authority (valid 2 days) and a
/// certificate for `localhost` it signed.
pub fn private_authority_and_localhost_certificate(dir: &Path) -> Certificates {
    let p = |f: &str| dir.join(f).display().to_string();
    let key = ["-newkey", "rsa:2048", "-nodes", "-days", "2"];
    openssl(
        &[&["req", "-x509"][..], &key, &["-subj", "/CN=test CA", "-keyout", &p("ca.key"), "-out", &p("ca.pem")]]
            .concat(),
    );
    openssl(
        &[&["req"][..], &key[..3], &["-subj", "/CN=localhost", "-keyout", &p("key.pem"), "-out", &p("req.pem")]]
            .concat(),
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p("req.pem"),
        "-CA",
        &p("ca.pem"),
        "-CAkey",
        &p("ca.key"),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &p("ext.cnf"),
        "-out",
        &p("cert.pem"),
    ]);
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    Certificates { ca_file: dir.join("ca.pem"), cert_pem: read("cert.pem"), key_pem: read("key.pem") }
}

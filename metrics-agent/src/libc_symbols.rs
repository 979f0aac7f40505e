//! Finds the C library a process has mapped and the file offsets of the
//! functions we hook in it. Aliases (`read`, `__read`, `__libc_read`) share
//! one address, so offsets are deduplicated: a call is never counted twice.

use std::{collections::HashMap, fs, path::PathBuf};

use anyhow::{Context, Result, bail};
use object::{Object, ObjectSection, ObjectSymbol};

/// The C library mapped by a process, as a path usable from our mount namespace.
pub fn libc_of(pid: u32) -> Result<PathBuf> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("process {pid} vanished or cannot be inspected"))?;
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else { continue };
        let name = path.rsplit('/').next().unwrap_or(path);
        let glibc = name == "libc.so.6" || (name.starts_with("libc-") && name.ends_with(".so"));
        let musl = name.starts_with("libc.musl") || name.starts_with("ld-musl-");
        if glibc || musl {
            // Through the process's root, so containers resolve to their own libc.
            return Ok(PathBuf::from(format!("/proc/{pid}/root{path}")));
        }
    }
    bail!(
        "libc not found in process {pid} ({}): it is statically linked or does its own \
         syscalls (e.g. Go), which libc uprobes cannot see; use --attach syscalls",
        crate::target::comm(pid)
    )
}

/// A shared library mapped by a process whose file name starts with
/// `prefix` (e.g. `libssl.so`), as a path usable from our mount namespace.
pub fn library_of(pid: u32, prefix: &str) -> Option<PathBuf> {
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
    maps.lines().find_map(|line| {
        let path = line.split_whitespace().nth(5)?;
        let name = path.rsplit('/').next().unwrap_or(path);
        name.starts_with(prefix).then(|| PathBuf::from(format!("/proc/{pid}/root{path}")))
    })
}

/// File offsets of the wanted symbols in an ELF shared object, keyed by name.
pub fn symbol_offsets(path: &PathBuf, wanted: &[&str]) -> Result<HashMap<String, u64>> {
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = object::File::parse(&*data).with_context(|| format!("{} is not a valid ELF file", path.display()))?;
    let mut out = HashMap::new();
    for sym in file.dynamic_symbols().chain(file.symbols()) {
        let Ok(name) = sym.name() else { continue };
        let name = name.split('@').next().unwrap_or(name);
        if !wanted.contains(&name) || out.contains_key(name) || !sym.is_definition() {
            continue;
        }
        let Some(index) = sym.section_index() else { continue };
        let Ok(section) = file.section_by_index(index) else { continue };
        let Some((file_start, _)) = section.file_range() else { continue };
        let offset = sym.address() - section.address() + file_start;
        out.insert(name.to_string(), offset);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_libc_and_aliases_share_offsets() {
        let libc = libc_of(std::process::id()).unwrap();
        let offsets = symbol_offsets(&libc, &["read", "__read", "write", "close", "connect"]).unwrap();
        assert!(offsets.contains_key("read") && offsets.contains_key("write"));
        if let Some(alias) = offsets.get("__read") {
            assert_eq!(Some(alias), offsets.get("read"));
        }
        assert_ne!(offsets["read"], offsets["write"]);
    }
}

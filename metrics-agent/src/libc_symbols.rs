//! Finds the C library a process has mapped and the file offsets of the
//! functions we hook in it. Aliases (`read`, `__read`, `__libc_read`) share
//! one address, so offsets are deduplicated: a call is never counted twice.
//!
//! The files come from a target's `/proc/PID/maps`, which its user controls:
//! they are read with bounds (`MAX_MAPS_BYTES`, `MAX_LIBRARY_BYTES`), only
//! when they are regular files, and opened without blocking (a FIFO named
//! there cannot stall the agent).

use std::{
    collections::HashMap,
    fs,
    io::Read,
    os::unix::fs::{FileTypeExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use object::{Object, ObjectSection, ObjectSymbol};

/// Bytes of a `/proc/PID/maps` read at most (a process with a million mappings).
const MAX_MAPS_BYTES: u64 = 16 << 20;
/// Bytes of a library or executable read at most to find symbols.
const MAX_LIBRARY_BYTES: u64 = 256 << 20;

/// At most `limit` bytes of a regular file, opened without blocking; a
/// longer file, a FIFO or a device is an error.
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let kind = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?.file_type();
    // /proc files are regular files of size 0.
    if !kind.is_file() || kind.is_fifo() {
        bail!("{} is not a regular file", path.display());
    }
    let mut data = Vec::new();
    file.take(limit + 1).read_to_end(&mut data).with_context(|| format!("cannot read {}", path.display()))?;
    if data.len() as u64 > limit {
        bail!("{} is larger than {limit} bytes: not read", path.display());
    }
    Ok(data)
}

/// A process's memory map as text (bounded).
fn maps_of(pid: u32) -> Result<String> {
    let data = read_bounded(Path::new(&format!("/proc/{pid}/maps")), MAX_MAPS_BYTES)?;
    Ok(String::from_utf8_lossy(&data).into_owned())
}

/// The C library mapped by a process, as a path usable from our mount namespace.
pub fn libc_of(pid: u32) -> Result<PathBuf> {
    let maps = maps_of(pid).with_context(|| format!("process {pid} vanished or cannot be inspected"))?;
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
    let maps = maps_of(pid).ok()?;
    maps.lines().find_map(|line| {
        let path = line.split_whitespace().nth(5)?;
        let name = path.rsplit('/').next().unwrap_or(path);
        name.starts_with(prefix).then(|| PathBuf::from(format!("/proc/{pid}/root{path}")))
    })
}

/// File offsets of the wanted symbols in an ELF shared object, keyed by name.
pub fn symbol_offsets(path: &Path, wanted: &[&str]) -> Result<HashMap<String, u64>> {
    let data = read_bounded(path, MAX_LIBRARY_BYTES)?;
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

    #[test]
    fn only_bounded_regular_files_are_read() {
        assert!(read_bounded(Path::new("/dev/zero"), 1 << 20).unwrap_err().to_string().contains("not a regular file"));
        let dir = std::env::temp_dir().join(format!("ma-bounded-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(read_bounded(&fifo, 1 << 20).is_err(), "a FIFO neither blocks nor is read");
        let big = dir.join("big");
        fs::write(&big, vec![0u8; 4097]).unwrap();
        assert!(read_bounded(&big, 4096).unwrap_err().to_string().contains("larger than 4096"));
        assert_eq!(read_bounded(&big, 4097).unwrap().len(), 4097);
        fs::remove_dir_all(dir).unwrap();
    }
}

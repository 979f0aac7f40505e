//! Finds functions in a Go executable by Go's own function table
//! (`.gopclntab`), which stripped binaries (`-ldflags=-s -w`) keep, or by
//! `.symtab` when present: their address, the file offset a uprobe needs,
//! and their size (up to the next function, for decoding the body); and
//! the Go version from the build info (`go_version`).
//!
//! Layout of the Go 1.18 and later table (`runtime/symtab.go`, `pcHeader`):
//! magic (0xfffffff0 for 1.18-1.19, 0xfffffff1 for 1.20 and later), two zero
//! bytes, instruction size quantum, pointer size, then pointer-sized
//! `nfunc`, `nfiles`, `textStart`, and the offsets of the function-name,
//! compilation-unit, file, pc and function tables. The function table is
//! `nfunc + 1` pairs of u32 (entry offset from `textStart`, offset of the
//! function's `_func`); a `_func` starts with its entry offset (u32) and the
//! offset of its name in the name table (i32). Go 1.26 and later leave
//! `textStart` zero (it needed a relocation): the entries are then relative
//! to the `runtime.text` symbol when `.symtab` has it, else to the start of
//! `.text` if Go's linker laid it out (`go_linked_text`).

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

/// A function found in the executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoFunction {
    /// Virtual address of its first instruction.
    pub address: u64,
    /// Where that instruction is in the file (what a uprobe attaches to).
    pub file_offset: u64,
    /// Bytes up to the next function.
    pub size: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PclntabError {
    #[error("not an ELF executable: {reason}")]
    NotElf { reason: String },
    #[error("no .gopclntab section and no .symtab entry: not a Go executable, or built without a function table")]
    NoTable,
    #[error("unsupported Go function table (magic {magic:#x}): Go 1.18 or later is needed")]
    UnsupportedVersion { magic: u32 },
    #[error("no .go.buildinfo section: not a Go executable")]
    NoBuildInfo,
    #[error("malformed Go function table: {what}")]
    Malformed { what: &'static str },
}

const MAGIC_GO_1_18: u32 = 0xffff_fff0;
const MAGIC_GO_1_20: u32 = 0xffff_fff1;

/// Finds each of `names` (full Go symbol names, e.g.
/// `crypto/tls.(*Conn).Read`): `None` for a name the binary does not have.
pub fn find_functions(elf: &[u8], names: &[&str]) -> Result<Vec<Option<GoFunction>>, PclntabError> {
    let file = object::File::parse(elf).map_err(|e| PclntabError::NotElf { reason: e.to_string() })?;
    let mut found: Vec<Option<(u64, u64)>> = vec![None; names.len()];
    if let Some(section) = file.section_by_name(".gopclntab") {
        let table = section.data().map_err(|_| PclntabError::Malformed { what: "unreadable section" })?;
        let runtime_text = file.symbols().find(|s| s.name() == Ok("runtime.text")).map(|s| s.address());
        let text = runtime_text.or_else(|| go_linked_text(&file, table));
        for_each_function(table, text, |name, address, size| {
            if let Some(i) = names.iter().position(|n| n.as_bytes() == name) {
                found[i] = Some((address, size));
            }
        })?;
    } else {
        let mut any = false;
        for symbol in file.symbols() {
            let Ok(name) = symbol.name() else { continue };
            if let Some(i) = names.iter().position(|n| *n == name) {
                found[i] = Some((symbol.address(), symbol.size()));
                any = true;
            }
        }
        if !any {
            return Err(PclntabError::NoTable);
        }
    }
    Ok(found
        .into_iter()
        .map(|f| {
            let (address, size) = f?;
            let file_offset = file_offset_of(&file, address)?;
            Some(GoFunction { address, file_offset, size })
        })
        .collect())
}

/// The start of `.text`, for a table without `textStart` (Go 1.26 and
/// later) in an executable without the `runtime.text` symbol (stripped),
/// when Go's own linker laid it out: it puts `runtime.text` first in
/// `.text` and makes `_rt0_amd64_linux` the entry point, so counting from
/// `.text` must put that function at the ELF entry. Linked by the system
/// linker (cgo's external linking), C code comes first and the base is
/// unknown: `None`, and that executable's TLS stays opaque.
fn go_linked_text(file: &object::File<'_>, table: &[u8]) -> Option<u64> {
    let text = file.section_by_name(".text")?.address();
    let mut go_entry = None;
    for_each_function(table, Some(text), |name, address, _| {
        if name == b"_rt0_amd64_linux" {
            go_entry = Some(address);
        }
    })
    .ok()?;
    (go_entry == Some(file.entry())).then_some(text)
}

/// The file offset of a virtual address, through the loadable segment that
/// maps it.
fn file_offset_of(file: &object::File<'_>, address: u64) -> Option<u64> {
    file.segments().find_map(|s| {
        let (offset, size) = s.file_range();
        (address >= s.address() && address - s.address() < size).then(|| offset + (address - s.address()))
    })
}

/// Calls `f(name, address, size)` for every function in the table;
/// `text` is where the entries count from when the header's `textStart`
/// is zero (Go 1.26 and later).
fn for_each_function(t: &[u8], text: Option<u64>, mut f: impl FnMut(&[u8], u64, u64)) -> Result<(), PclntabError> {
    let malformed = |what| PclntabError::Malformed { what };
    let u32_at =
        |at: usize| -> Option<u32> { Some(u32::from_le_bytes(t.get(at..at.checked_add(4)?)?.try_into().ok()?)) };
    let magic = u32_at(0).ok_or(malformed("shorter than its header"))?;
    if magic != MAGIC_GO_1_18 && magic != MAGIC_GO_1_20 {
        return Err(PclntabError::UnsupportedVersion { magic });
    }
    let ptr_size = *t.get(7).ok_or(malformed("shorter than its header"))? as usize;
    if ptr_size != 8 && ptr_size != 4 {
        return Err(malformed("pointer size is neither 4 nor 8"));
    }
    let word = |i: usize| -> Option<u64> {
        let at = 8 + i * ptr_size;
        let b = t.get(at..at + ptr_size)?;
        Some(if ptr_size == 8 {
            u64::from_le_bytes(b.try_into().ok()?)
        } else {
            u32::from_le_bytes(b.try_into().ok()?) as u64
        })
    };
    let header = |i| word(i).ok_or(malformed("shorter than its header"));
    let (nfunc, text_start, names_at, functab_at) = (header(0)?, header(2)?, header(3)?, header(7)?);
    let text_start = match text_start {
        0 => text.ok_or(malformed(
            "no textStart in the header, no runtime.text symbol, and .text not laid out by Go's linker",
        ))?,
        start => start,
    };
    let to_index = |v: u64| usize::try_from(v).map_err(|_| malformed("offset beyond memory"));
    let (nfunc, names_at, functab_at) = (to_index(nfunc)?, to_index(names_at)?, to_index(functab_at)?);
    if nfunc.checked_mul(8).is_none_or(|n| functab_at.saturating_add(n) > t.len()) {
        return Err(malformed("function table beyond the section"));
    }
    let entry = |i: usize| u32_at(functab_at + i * 8).map(u64::from);
    for i in 0..nfunc {
        let (Some(start), Some(func_off)) = (entry(i), u32_at(functab_at + i * 8 + 4)) else {
            return Err(malformed("function table beyond the section"));
        };
        // The next entry (the table has nfunc + 1) bounds the size.
        let end = entry(i + 1).unwrap_or(start);
        let func = functab_at + func_off as usize;
        let name_off = u32_at(func + 4).ok_or(malformed("function record beyond the section"))? as usize;
        let name = t.get(names_at.saturating_add(name_off)..).ok_or(malformed("name beyond the section"))?;
        let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
        f(name, text_start + start, end.saturating_sub(start));
    }
    Ok(())
}

/// The Go version an executable was built with (`go1.24.4`), from its
/// `.go.buildinfo` section (Go 1.18 and later write it inline: a 16-byte
/// header `\xff Go buildinf:`, pointer size, flags with bit 1 set, padding
/// to 32 bytes, then the version as a varint-length-prefixed string).
pub fn go_version(elf: &[u8]) -> Result<String, PclntabError> {
    let file = object::File::parse(elf).map_err(|e| PclntabError::NotElf { reason: e.to_string() })?;
    let section = file.section_by_name(".go.buildinfo").ok_or(PclntabError::NoBuildInfo)?;
    let data = section.data().map_err(|_| PclntabError::Malformed { what: "unreadable build info" })?;
    if data.get(..14) != Some(b"\xff Go buildinf:".as_slice()) {
        return Err(PclntabError::Malformed { what: "build info without its magic" });
    }
    if data.get(15).is_none_or(|flags| flags & 2 == 0) {
        return Err(PclntabError::UnsupportedVersion { magic: 0 });
    }
    let (mut len, mut at, mut shift) = (0usize, 32usize, 0);
    loop {
        let b = *data.get(at).ok_or(PclntabError::Malformed { what: "build info cut short" })?;
        len |= usize::from(b & 0x7f) << shift;
        at += 1;
        shift += 7;
        if b & 0x80 == 0 || shift > 28 {
            break;
        }
    }
    let version =
        data.get(at..at.saturating_add(len)).ok_or(PclntabError::Malformed { what: "build info cut short" })?;
    Ok(String::from_utf8_lossy(version).into_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::{
        path::{Path, PathBuf},
        process::Command,
    };

    use super::*;

    const PROGRAM: &str = r#"package main

import (
	"crypto/tls"
	"fmt"
	"os"
)

func main() {
	conn, err := tls.Dial("tcp", os.Args[1], &tls.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	buf := make([]byte, 16)
	conn.Write(buf)
	conn.Read(buf)
}
"#;

    const WANTED: [&str; 3] = ["crypto/tls.(*Conn).Read", "crypto/tls.(*Conn).Write", "main.main"];

    mod upstream {
        include!("../../../tests/src/go_upstream.rs");
    }

    /// The Go toolchains the tests check against: Debian 12's (`go` on the
    /// PATH, backports' 1.22 and 1.23) and the upstream ones
    /// (`tests/src/go_upstream.rs`), all installed by `cargo xtask setup`.
    pub(crate) fn toolchains() -> Vec<PathBuf> {
        let mut all = vec![PathBuf::from("go")];
        all.extend(["/usr/lib/go-1.22/bin/go", "/usr/lib/go-1.23/bin/go"].map(PathBuf::from));
        all.extend(upstream::UPSTREAM_GO.map(upstream::upstream_go));
        for go in &all[1..] {
            assert!(go.exists(), "{} is missing: run `cargo xtask setup`", go.display());
        }
        all
    }

    /// `go build` of `PROGRAM` with `go` into `dir/name`, with `ldflags`,
    /// offline; the build cache is the e2e tests' (`target/debug/go-cache`),
    /// so the standard library is compiled once per toolchain.
    pub(crate) fn build(go: &Path, dir: &Path, name: &str, ldflags: &str) -> Vec<u8> {
        std::fs::write(dir.join("main.go"), PROGRAM).unwrap();
        let out = dir.join(name);
        let exe = std::env::current_exe().unwrap();
        let cache = exe.parent().and_then(Path::parent).unwrap().join("go-cache/build");
        let status = Command::new(go)
            .current_dir(dir)
            .env("GO111MODULE", "off")
            .env("GOTOOLCHAIN", "local")
            // cgo only where the system linker is asked for (it needs it).
            .env("CGO_ENABLED", if ldflags.contains("-linkmode=external") { "1" } else { "0" })
            .env("GOCACHE", cache)
            .env("GOFLAGS", "")
            .args(["build", "-trimpath", "-ldflags", ldflags, "-o"])
            .arg(&out)
            .arg("main.go")
            .status()
            .expect("go (Debian package golang) must be installed: cargo xtask setup");
        assert!(status.success(), "go build with {} failed", go.display());
        std::fs::read(out).unwrap()
    }

    /// Addresses and sizes by `go tool nm -size` (the ground truth).
    fn nm(go: &Path, dir: &Path, name: &str) -> Vec<(u64, u64)> {
        let out = Command::new(go).args(["tool", "nm", "-size"]).arg(dir.join(name)).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        WANTED
            .iter()
            .map(|want| {
                // ` T ` (global); ` t ` in an executable the system linker made.
                let global_or_local =
                    |l: &&str| [" T ", " t "].iter().any(|kind| l.ends_with(&format!("{kind}{want}")));
                let line = text.lines().find(global_or_local).expect(want);
                let f: Vec<&str> = line.split_whitespace().collect();
                (u64::from_str_radix(f[0], 16).unwrap(), f[1].parse().unwrap())
            })
            .collect()
    }

    /// Linked by the system linker (cgo's external linking), `.text` opens
    /// with C code. Go 1.26 and later leave `textStart` zero: unstripped,
    /// `runtime.text` gives the base; stripped, no base is known and the
    /// table is refused (that executable's TLS stays opaque), never read at
    /// wrong addresses.
    #[test]
    fn externally_linked_go_binaries_are_read_through_runtime_text_or_refused() {
        let dir = std::env::temp_dir().join(format!("pclntab-external-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let go = upstream::upstream_go(upstream::UPSTREAM_GO[upstream::UPSTREAM_GO.len() - 1]);
        let plain = build(&go, &dir, "plain", "-linkmode=external");
        let stripped = build(&go, &dir, "stripped", "-s -w -linkmode=external");
        let truth = nm(&go, &dir, "plain");
        let found = find_functions(&plain, &WANTED).unwrap();
        let addresses: Vec<u64> = found.iter().map(|f| f.unwrap().address).collect();
        assert_eq!(addresses, truth.iter().map(|(address, _)| *address).collect::<Vec<_>>());
        assert!(
            matches!(find_functions(&stripped, &WANTED), Err(PclntabError::Malformed { .. })),
            "{}: a stripped, externally linked executable must be refused",
            go.display()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn functions_are_found_in_stripped_and_unstripped_go_binaries() {
        let dir = std::env::temp_dir().join(format!("pclntab-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for go in toolchains() {
            let plain = build(&go, &dir, "plain", "");
            let stripped = build(&go, &dir, "stripped", "-s -w");
            let truth = nm(&go, &dir, "plain");
            let out = Command::new(&go).arg("version").env("GOTOOLCHAIN", "local").output().unwrap();
            let toolchain = String::from_utf8(out.stdout).unwrap().split_whitespace().nth(2).unwrap().to_string();
            for (what, elf) in [("unstripped", &plain), ("stripped", &stripped)] {
                let what = format!("{toolchain} {what}");
                let found = find_functions(elf, &WANTED).unwrap();
                for ((f, (address, size)), name) in found.iter().zip(&truth).zip(WANTED) {
                    let f = f.unwrap_or_else(|| panic!("{what}: {name} not found"));
                    assert_eq!(f.address, *address, "{what}: {name}");
                    // nm's size excludes the padding up to the next function.
                    assert!(f.size >= *size && f.size < size + 64, "{what}: {name} {} vs {size}", f.size);
                    // The file offset holds the function's first bytes.
                    let segment_bytes = &elf[f.file_offset as usize..f.file_offset as usize + 4];
                    let plain_offset = find_functions(&plain, &[name]).unwrap()[0].unwrap().file_offset as usize;
                    assert_eq!(segment_bytes, &plain[plain_offset..plain_offset + 4], "{what}: {name}");
                }
                // The build's Go version, as `go version` says it.
                assert_eq!(go_version(elf).unwrap(), toolchain, "{what}");
            }
            assert_eq!(find_functions(&stripped, &["no/such.Function"]).unwrap(), vec![None]);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_tables_are_errors_not_panics() {
        assert!(matches!(find_functions(b"not an elf", &["x"]), Err(PclntabError::NotElf { .. })));
        assert!(matches!(go_version(b"not an elf"), Err(PclntabError::NotElf { .. })));
        let mut table = vec![0u8; 64];
        table[..4].copy_from_slice(&0xffff_fffau32.to_le_bytes());
        assert_eq!(
            for_each_function(&table, Some(0x1000), |_, _, _| {}),
            Err(PclntabError::UnsupportedVersion { magic: 0xffff_fffa })
        );
        table[..4].copy_from_slice(&MAGIC_GO_1_20.to_le_bytes());
        table[7] = 8;
        table[8] = 200; // nfunc beyond the table
        assert!(matches!(for_each_function(&table, Some(0x1000), |_, _, _| {}), Err(PclntabError::Malformed { .. })));
        // No textStart (Go 1.26 and later) and nothing else to count from.
        table[8] = 0;
        assert!(matches!(for_each_function(&table, None, |_, _, _| {}), Err(PclntabError::Malformed { .. })));
        for len in 0..64 {
            let _ = for_each_function(&table[..len], None, |_, _, _| {});
        }
    }
}

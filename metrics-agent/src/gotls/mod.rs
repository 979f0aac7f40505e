//! Go's crypto/tls (issue 12): where to put the uprobes that see the
//! plaintext of a Go executable's TLS connections (`metrics-ebpf/src/probes/gotls.rs`):
//! the entry and the `RET` instructions of `crypto/tls.(*Conn).Read`, and
//! the first instruction after `Write`'s stack check (its plaintext is taken
//! there, before it reaches the socket), found through Go's function table
//! (`pclntab`) and by decoding the bodies (`returns`).

pub mod pclntab;
pub mod returns;

use pclntab::GoFunction;

pub const READ: &str = "crypto/tls.(*Conn).Read";
pub const WRITE: &str = "crypto/tls.(*Conn).Write";

/// The oldest Go with the register ABI and the function table `pclntab` reads.
const OLDEST_MINOR: u32 = 18;

/// Where the probes of one Go executable go, as file offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTlsProbes {
    /// `go1.19.8`.
    pub go_version: String,
    pub read_entry: u64,
    /// After `Write`'s stack check (`returns::after_stack_check`).
    pub write_checked: u64,
    /// Every `RET` of `Read`.
    pub returns: Vec<u64>,
}

/// Why a Go executable's TLS plaintext cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum GoTlsError {
    #[error("{version} is older than Go 1.{OLDEST_MINOR} (no register ABI): its TLS stays opaque")]
    TooOld { version: String },
    #[error("{what} executable: Go TLS plaintext is followed on x86-64 only, its TLS stays opaque")]
    Architecture { what: String },
    #[error("{0}: its TLS stays opaque")]
    Table(#[from] pclntab::PclntabError),
    #[error("{function}: {error}: its TLS stays opaque")]
    Body { function: &'static str, error: returns::ReturnsError },
}

/// The probes for `elf`: `Ok(None)` when it is not a Go executable or does
/// not use crypto/tls, an error when it is one the probes cannot follow.
/// Whether `elf` is a Go executable (it has Go's build information).
pub fn is_go(elf: &[u8]) -> bool {
    use object::Object;
    object::File::parse(elf).is_ok_and(|file| file.section_by_name(".go.buildinfo").is_some())
}

/// Why `--attach uprobes` cannot see a Go executable, and what to use: Go
/// makes its socket calls itself, not through libc (even when it links
/// libc, for cgo), so the libc uprobes see none of its connections, and
/// its crypto/tls probes follow plaintext only on connections the socket
/// calls made known.
pub fn uprobes_warning(exe: &std::path::Path) -> String {
    format!(
        "{}: a Go executable makes its socket calls without libc, so --attach uprobes sees none of its traffic \
         (nor, without them, its crypto/tls plaintext): use --attach sockets (or --attach syscalls)",
        exe.display()
    )
}

pub fn plan(elf: &[u8]) -> Result<Option<GoTlsProbes>, GoTlsError> {
    use object::Object;
    let Ok(file) = object::File::parse(elf) else { return Ok(None) };
    if file.section_by_name(".go.buildinfo").is_none() {
        return Ok(None);
    }
    let go_version = pclntab::go_version(elf)?;
    if minor_version(&go_version).is_some_and(|minor| minor < OLDEST_MINOR) {
        return Err(GoTlsError::TooOld { version: go_version });
    }
    let found = pclntab::find_functions(elf, &[READ, WRITE])?;
    let (Some(read), Some(write)) = (found[0], found[1]) else { return Ok(None) };
    if file.architecture() != object::Architecture::X86_64 || !cfg!(target_arch = "x86_64") {
        return Err(GoTlsError::Architecture { what: format!("{:?}", file.architecture()) });
    }
    let body = |function, error| GoTlsError::Body { function, error };
    // Both functions must open with Go's stack check before any probe is
    // placed: entries counted from a wrong base (Go 1.26 and later leave
    // the table's `textStart` zero, and a stripped executable linked with
    // the system linker has C code ahead of Go's at the start of `.text`)
    // land elsewhere, and fail here instead of probing mid-instruction.
    returns::after_stack_check(body_of(elf, &read), read.address).map_err(|e| body(READ, e))?;
    let returns = returns::return_addresses(body_of(elf, &read), read.address)
        .map_err(|e| body(READ, e))?
        .into_iter()
        .map(|a| a - read.address + read.file_offset)
        .collect();
    let checked = returns::after_stack_check(body_of(elf, &write), write.address).map_err(|e| body(WRITE, e))?;
    let write_checked = checked - write.address + write.file_offset;
    Ok(Some(GoTlsProbes { go_version, read_entry: read.file_offset, write_checked, returns }))
}

/// The bytes of `f` in the file (cut at the file's end).
fn body_of<'a>(elf: &'a [u8], f: &GoFunction) -> &'a [u8] {
    let start = (f.file_offset as usize).min(elf.len());
    let end = start.saturating_add(f.size as usize).min(elf.len());
    &elf[start..end]
}

/// `19` of `go1.19.8`; `None` for a development build (`devel ...`).
fn minor_version(version: &str) -> Option<u32> {
    let rest = version.strip_prefix("go1.")?;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    #[test]
    fn only_go_executables_are_go() {
        assert!(!is_go(&std::fs::read("/proc/self/exe").unwrap()), "a Rust test binary");
        assert!(!is_go(b"not an ELF"));
        let w = uprobes_warning(std::path::Path::new("/usr/bin/caddy"));
        assert!(w.starts_with("/usr/bin/caddy: a Go executable") && w.contains("--attach sockets"), "{w}");
    }

    #[test]
    fn minor_versions() {
        assert_eq!(minor_version("go1.19.8"), Some(19));
        assert_eq!(minor_version("go1.25rc1"), Some(25));
        assert_eq!(minor_version("devel go1.26-abc"), None);
    }

    /// `function`'s instructions by `go tool objdump` (the ground truth):
    /// address and the words of its assembly (`JBE 0x584093`).
    fn objdump(go: &std::path::Path, binary: &std::path::Path, function: &str) -> Vec<(u64, Vec<String>)> {
        let pattern =
            format!("^{}$", function.replace('(', r"\(").replace(')', r"\)").replace('*', r"\*").replace('.', r"\."));
        let out = Command::new(go).args(["tool", "objdump", "-s", &pattern]).arg(binary).output().unwrap();
        assert!(out.status.success(), "go tool objdump: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .filter(|l| !l.starts_with("TEXT"))
            .map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                let address = u64::from_str_radix(words[1].trim_start_matches("0x"), 16).unwrap();
                (address, words[3..].iter().map(|w| w.to_string()).collect())
            })
            .collect()
    }

    /// `RET` addresses of `function`.
    fn objdump_returns(go: &std::path::Path, binary: &std::path::Path, function: &str) -> Vec<u64> {
        objdump(go, binary, function).into_iter().filter(|(_, asm)| asm[0] == "RET").map(|(a, _)| a).collect()
    }

    /// The address after the stack check of `function`: the instruction
    /// after the first `JBE`, which goes to the `CALL runtime.morestack...`.
    fn objdump_after_stack_check(go: &std::path::Path, binary: &std::path::Path, function: &str) -> u64 {
        let code = objdump(go, binary, function);
        let jbe = code.iter().position(|(_, asm)| asm[0] == "JBE").expect("a JBE");
        assert!(jbe <= 2, "{function}: the stack check opens the function: {:?}", &code[..4]);
        assert!(code[jbe - 1].1.join(" ").contains("0x10(R14)"), "{function}: {:?}", &code[..4]);
        let target = u64::from_str_radix(code[jbe].1[1].trim_start_matches("0x"), 16).unwrap();
        let morestack = code.iter().position(|(a, _)| *a == target).expect("the JBE's target");
        assert!(code[morestack..].iter().take(8).any(|(_, asm)| asm.join(" ").contains("runtime.morestack")));
        code[jbe + 1].0
    }

    #[test]
    fn read_returns_and_write_after_its_stack_check_match_go_objdump_in_stripped_and_unstripped_binaries() {
        let dir = std::env::temp_dir().join(format!("gotls-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for go in pclntab::tests::toolchains() {
            let plain = pclntab::tests::build(&go, &dir, "plain", "");
            let stripped = pclntab::tests::build(&go, &dir, "stripped", "-s -w");
            assert!(is_go(&plain) && is_go(&stripped), "{}", go.display());
            let rets = objdump_returns(&go, &dir.join("plain"), READ);
            assert!(!rets.is_empty(), "{READ}: objdump shows no RET");
            let read = pclntab::find_functions(&plain, &[READ]).unwrap()[0].unwrap();
            let truth: Vec<u64> = rets.iter().map(|a| a - read.address + read.file_offset).collect();
            let write = pclntab::find_functions(&plain, &[WRITE]).unwrap()[0].unwrap();
            let checked = objdump_after_stack_check(&go, &dir.join("plain"), WRITE) - write.address + write.file_offset;
            for (what, elf) in [("unstripped", &plain), ("stripped", &stripped)] {
                let probes = plan(elf).unwrap().unwrap_or_else(|| panic!("{}: {what}: no probes", go.display()));
                let what = format!("{} {what}", probes.go_version);
                assert_eq!(probes.returns, truth, "{what}");
                assert_eq!(probes.write_checked, checked, "{what}");
                for at in &probes.returns {
                    assert_eq!(elf[*at as usize], 0xc3, "{what}: a RET at {at:#x}");
                }
                assert!(probes.go_version.starts_with("go1."), "{what}");
            }
        }
        // A non-Go executable has none; a Go one without crypto/tls neither.
        assert!(plan(&std::fs::read("/proc/self/exe").unwrap()).unwrap().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

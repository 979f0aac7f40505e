//! How full a BPF ring buffer is, read without consuming it: its consumer
//! and producer position pages are mapped read-only from a duplicate of the
//! map's fd, and their difference is the data not yet consumed.

use std::{
    os::fd::{AsFd, OwnedFd},
    sync::atomic::{AtomicU64, Ordering},
};

/// Read-only view of one ring buffer's positions.
#[derive(Debug)]
pub struct RingFill {
    pub name: &'static str,
    pub size_bytes: u64,
    consumer: *const AtomicU64,
    producer: *const AtomicU64,
    page: usize,
    _fd: OwnedFd,
}

// SAFETY: the pointers refer to read-only shared mappings owned by this value
// and are only read atomically.
unsafe impl Send for RingFill {}
// SAFETY: as above; reads are atomic.
unsafe impl Sync for RingFill {}

impl RingFill {
    /// Maps the position pages of the ring buffer behind `map`.
    pub fn new(name: &'static str, map: impl AsFd, size_bytes: u64) -> std::io::Result<Self> {
        let fd = map.as_fd().try_clone_to_owned()?;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let map_page = |offset: usize| -> std::io::Result<*const AtomicU64> {
            use std::os::fd::AsRawFd;
            // SAFETY: a fresh read-only shared mapping of one page of a ring
            // buffer map, at the offsets the kernel defines (consumer page at
            // 0, producer page at one page).
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd.as_raw_fd(),
                    offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED { Err(std::io::Error::last_os_error()) } else { Ok(p as *const AtomicU64) }
        };
        let consumer = map_page(0)?;
        let producer = match map_page(page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: unmapping the page mapped just above.
                unsafe { libc::munmap(consumer as *mut libc::c_void, page) };
                return Err(e);
            }
        };
        Ok(Self { name, size_bytes, consumer, producer, page, _fd: fd })
    }

    /// Maps each `(name, map, size)`; one that cannot be mapped is left out (logged).
    pub fn open_all(rings: &[(&'static str, std::os::fd::BorrowedFd<'_>, u64)]) -> Vec<Self> {
        rings
            .iter()
            .filter_map(|(name, fd, size)| match Self::new(name, fd, *size) {
                Ok(r) => Some(r),
                Err(e) => {
                    log::warn!("ring buffer {name}: cannot read its fill level: {e}");
                    None
                }
            })
            .collect()
    }

    /// Bytes produced and not yet consumed (record headers included).
    pub fn used_bytes(&self) -> u64 {
        // SAFETY: both pointers are valid for the lifetime of `self`.
        let (c, p) = unsafe { ((*self.consumer).load(Ordering::Acquire), (*self.producer).load(Ordering::Acquire)) };
        p.saturating_sub(c).min(self.size_bytes)
    }
}

impl Drop for RingFill {
    fn drop(&mut self) {
        // SAFETY: both pages were mapped in `new` with this size.
        unsafe {
            libc::munmap(self.consumer as *mut libc::c_void, self.page);
            libc::munmap(self.producer as *mut libc::c_void, self.page);
        }
    }
}

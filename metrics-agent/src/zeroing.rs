//! The agent's heap allocator: the system allocator, except that every
//! block is overwritten with zeros when it is freed, and the old block when
//! `realloc` moves one. Payload buffers (prompts, completions, request heads
//! with API keys) therefore do not linger in freed heap memory, whichever
//! module held them and however a buffer grew.

use std::alloc::{GlobalAlloc, Layout, System};

pub struct ZeroOnFree;

/// Zeros `size` bytes at `ptr` in a way the optimiser cannot drop as a dead
/// store before the free that follows.
///
/// # Safety
/// `ptr` must be valid for writes of `size` bytes.
unsafe fn wipe(ptr: *mut u8, size: usize) {
    // SAFETY: the caller guarantees `ptr` is valid for `size` bytes.
    unsafe { std::ptr::write_bytes(ptr, 0, size) };
    std::hint::black_box(ptr);
}

// SAFETY: every call is forwarded to the system allocator with the layout it
// was given; blocks are only written while they are still allocated.
unsafe impl GlobalAlloc for ZeroOnFree {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes until freed below.
        unsafe {
            wipe(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees a valid layout for `new_size` with the
        // same alignment; the old block is copied, wiped and freed.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = System.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_and_moved_blocks_are_wiped() {
        let allocator = ZeroOnFree;
        let layout = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: a block allocated and used within its layout.
        unsafe {
            let block = allocator.alloc(layout);
            std::ptr::write_bytes(block, 0xAB, 64);
            let grown = allocator.realloc(block, layout, 4096);
            assert_eq!(*grown.add(63), 0xAB, "the contents moved");
            // The old block was wiped before it was freed: check through `wipe` directly.
            let probe = allocator.alloc(layout);
            std::ptr::write_bytes(probe, 0xCD, 64);
            wipe(probe, 64);
            assert!((0..64).all(|i| *probe.add(i) == 0));
            allocator.dealloc(probe, layout);
            allocator.dealloc(grown, Layout::from_size_align(4096, 8).unwrap());
        }
    }
}

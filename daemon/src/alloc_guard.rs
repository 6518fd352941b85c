//! A global allocator that keeps a lying length on the wire from killing the
//! process. The Kafka codec (kafka-protocol 0.18) reserves `Vec` capacity
//! from array counts read off the wire before reading the elements: a
//! 14-byte request claiming 2^31 topics asks for ~150 GB, the system
//! allocator refuses, and Rust aborts. Here, any single allocation of at
//! least `HUGE_ALLOCATION_BYTES` is served by an anonymous `MAP_NORESERVE`
//! mapping instead: address space, not memory, until pages are touched. The
//! decoder then fails on the missing elements and the mapping is returned.
//! Nothing in Sluice legitimately allocates that much in one piece: request
//! frames are capped at `socket_request_max_bytes` (100 MiB by default).

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are mapped lazily.
pub const HUGE_ALLOCATION_BYTES: usize = 1 << 30;
const PAGE_BYTES: usize = 4096;

pub struct GuardedAllocator;

fn is_huge(layout: &Layout) -> bool {
    layout.size() >= HUGE_ALLOCATION_BYTES && layout.align() <= PAGE_BYTES
}

unsafe fn map_lazily(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no fixed address has no
    // preconditions; failure is reported as MAP_FAILED.
    let address = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if address == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        address.cast()
    }
}

// SAFETY: every block is returned by the same path that produced it, chosen
// by the layout, which callers must pass unchanged to `dealloc`/`realloc`.
unsafe impl GlobalAlloc for GuardedAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // SAFETY: see map_lazily.
            return unsafe { map_lazily(layout.size()) };
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(&layout) {
            // SAFETY: anonymous mappings are zero-filled.
            return unsafe { map_lazily(layout.size()) };
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(&layout) {
            // SAFETY: `ptr` came from map_lazily with this size.
            unsafe { libc::munmap(ptr.cast(), layout.size()) };
            return;
        }
        // SAFETY: `ptr` came from System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the new layout keeps the alignment of a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !is_huge(&layout) && !is_huge(&new_layout) {
            // SAFETY: forwarded with the caller's layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a fresh block of the new layout, filled from the old one.
        unsafe {
            let new_ptr = self.alloc(new_layout);
            if !new_ptr.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new_ptr
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_allocation_is_address_space_not_memory() {
        let allocator = GuardedAllocator;
        let layout = Layout::from_size_align(150 << 30, 8).unwrap();
        // SAFETY: allocate, touch one byte, free with the same layout.
        unsafe {
            let ptr = allocator.alloc(layout);
            assert!(!ptr.is_null(), "150 GiB of address space must map");
            *ptr = 7;
            assert_eq!(*ptr, 7);
            allocator.dealloc(ptr, layout);
        }
    }

    #[test]
    fn growing_across_the_threshold_keeps_the_contents() {
        let allocator = GuardedAllocator;
        let small = Layout::from_size_align(64, 8).unwrap();
        // SAFETY: allocate, grow to huge and back, free with matching layouts.
        unsafe {
            let ptr = allocator.alloc(small);
            std::ptr::write_bytes(ptr, 0xAB, 64);
            let grown = allocator.realloc(ptr, small, HUGE_ALLOCATION_BYTES);
            assert_eq!(*grown.add(63), 0xAB);
            let huge = Layout::from_size_align(HUGE_ALLOCATION_BYTES, 8).unwrap();
            let shrunk = allocator.realloc(grown, huge, 32);
            assert_eq!(*shrunk.add(31), 0xAB);
            allocator.dealloc(shrunk, Layout::from_size_align(32, 8).unwrap());
        }
    }
}

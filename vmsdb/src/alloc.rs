//! The global allocator of the `vmsdb` and `bench-harness` binaries: mimalloc for every block
//! below [`LARGE_BYTES`], the system allocator for the large ones.
//!
//! mimalloc's thread-local free lists keep the runtime's many small per-epoch blocks (accesses,
//! emitted events, reply batches, a handler's rows) cheap and close together: the marketplace
//! ran 14–20 % faster than on glibc's allocator alone, with its p99 no worse, in alternating
//! pairs (`docs/benchmarks.md`, "Session 19"). But mimalloc grows a block by allocating,
//! copying and freeing it, where glibc grows a block it mapped (one above its `mmap`
//! threshold, which starts at 128 KiB and rises up to 32 MiB as mapped blocks are freed) with
//! `mremap` and copies nothing, and the runtime's vectors (a table's dense rows and index, the
//! dirty lists) grow by doubling. Under
//! mimalloc alone the marketplace's slowest turns became 90–150 ms commits and its p99 doubled
//! (26 → 50–65 ms); with only blocks of 64 MiB and more left to glibc it was still so. Leaving
//! every block from 1 MiB up to glibc keeps the p99, at the price of what mimalloc alone gained
//! on transfer and YCSB-T (15–24 % and 13 %, from blocks of 1 MiB and more; not from `mmap`
//! churn, which is rare: 105 `mmap` and 76 `munmap` calls in a 10 s transfer run; the cause is
//! not known yet). Peak memory rose: 2,046 → 2,271 MB for 10 M accounts.
//!
//! Which allocator owns a block follows from its size alone, which `dealloc` and `realloc` are
//! given with the block (`Layout`), so no block is ever freed by the allocator that did not
//! make it. A `realloc` across [`LARGE_BYTES`] moves the block to the other allocator.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of at least this many bytes go to the system allocator (glibc maps those above its
/// `mmap` threshold and grows them with `mremap`; the rest come from its heap).
pub const LARGE_BYTES: usize = 1 << 20;

/// See the module documentation. Install it with
/// `#[global_allocator] static GLOBAL: vmsdb::alloc::Allocator = vmsdb::alloc::Allocator;`.
pub struct Allocator;

fn large(size: usize) -> bool {
    size >= LARGE_BYTES
}

// SAFETY: every block is made and freed by the same allocator, chosen by its size, which the
// caller passes unchanged to `dealloc` and `realloc` (the `GlobalAlloc` contract); a `realloc`
// that changes the owner allocates in the new one, copies the smaller of the two sizes and
// frees the old block in the old one.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if large(layout.size()) {
            unsafe { System.alloc(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if large(layout.size()) {
            unsafe { System.alloc_zeroed(layout) }
        } else {
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if large(layout.size()) {
            unsafe { System.dealloc(ptr, layout) }
        } else {
            unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (large(layout.size()), large(new_size)) {
            (true, true) => unsafe { System.realloc(ptr, layout, new_size) },
            (false, false) => unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) },
            _ => {
                // SAFETY (of the layout): `new_size`, rounded up to the alignment, does not
                // overflow `isize` (the `realloc` contract).
                let new_layout =
                    unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: the boundary is where the docs say.
    #[test]
    fn blocks_from_large_bytes_up_are_large() {
        assert!(!large(LARGE_BYTES - 1));
        assert!(large(LARGE_BYTES));
    }

    // Goal: blocks on either side of the boundary, and moved across it both ways, at an
    // ordinary and a page alignment, keep their bytes and their alignment. (Which allocator
    // owns a block is not observable here: a block freed by the wrong one may crash, or may
    // not.)
    #[test]
    fn blocks_keep_their_bytes_across_the_boundary() {
        let a = Allocator;
        for (from, to) in [
            (64, 128),
            (LARGE_BYTES / 2, LARGE_BYTES * 2),
            (LARGE_BYTES * 2, LARGE_BYTES / 2),
            (LARGE_BYTES, LARGE_BYTES * 4),
            (LARGE_BYTES - 1, LARGE_BYTES),
        ] {
            for align in [16, 4096] {
                let layout = Layout::from_size_align(from, align).unwrap();
                #[allow(unsafe_code)]
                // SAFETY: the block is used only within its size and freed once, with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    for i in 0..from {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let q = a.realloc(p, layout, to);
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "{from} -> {to}, aligned {align}");
                    for i in 0..from.min(to) {
                        assert_eq!(*q.add(i), (i % 251) as u8, "{from} -> {to} at {i}");
                    }
                    a.dealloc(q, Layout::from_size_align(to, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert!(!z.is_null());
                    assert_eq!(z as usize % align, 0);
                    assert!((0..from).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}

//! The binaries' allocator: mimalloc, entered as Rust's `System` allocator enters the C
//! library's malloc — the plain entry points for the alignment every block has anyway, the
//! aligned ones only for more.
//!
//! The `mimalloc` crate enters every allocation through `mi_malloc_aligned`. In mimalloc 3 that
//! entry's fast path takes a block only from a size's free list; when that list is empty (the
//! page's freed blocks wait on its deferred list until `mi_malloc` collects them) it
//! over-allocates from a larger size, for any size not a power of two, so the request path's
//! allocations kept missing: ~1.4 slow allocations per proxied HTTP/1.1 request
//! (docs/benchmarks.md, session 16). `mi_malloc` collects the deferred list and takes its
//! fast path.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

/// Every mimalloc block is aligned to a word at least: block sizes are whole words, and pages
/// start their first block aligned to more.
const MIN_ALIGN: usize = std::mem::size_of::<usize>();

/// mimalloc as the global allocator.
pub struct MiMalloc;

/// Whether a block of `size` bytes from the plain entry points is aligned to `align` (as
/// `System` decides for malloc: a block smaller than the alignment might not be).
fn plain(align: usize, size: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// SAFETY: mimalloc's functions meet `GlobalAlloc`'s contract: blocks of at least the size
// asked, aligned as checked above (or by the aligned entry points), freed by `mi_free`
// whichever entry made them, and `mi_realloc*` keeping the contents up to the smaller size.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain C calls; a null return is the allocation failure `GlobalAlloc` allows.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if plain(layout.align(), layout.size()) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's contract).
        unsafe {
            if plain(layout.align(), new_size) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_sized_kept_and_zeroed() {
        let a = MiMalloc;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 7, 8, 24, 100, 160, 624, 5000, 70_000] {
                let layout = Layout::from_size_align(size, align).expect("a layout");
                // SAFETY: a non-zero-sized layout; each block is freed once, with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "{size} aligned to {align}");
                    std::ptr::write_bytes(p, 0xa5, size);
                    let grown = a.realloc(p, layout, size * 3);
                    assert_eq!(grown as usize % align, 0, "{size} regrown to {align}");
                    let kept = std::slice::from_raw_parts(grown, size);
                    assert!(
                        kept.iter().all(|&b| b == 0xa5),
                        "{size}/{align}: contents kept"
                    );
                    a.dealloc(
                        grown,
                        Layout::from_size_align(size * 3, align).expect("a layout"),
                    );
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0);
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }
}

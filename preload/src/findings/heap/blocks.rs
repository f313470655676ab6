//! The heap block an extension's pointer starts, for reading the
//! references an extension keeps out of line (a hash table, an array of
//! items in memory of its own), which its `tp_traverse` need not report
//! when they cannot make a cycle (strs, ints). The size comes from the
//! allocator's own bookkeeping, checked for plausibility: glibc's chunk
//! header (the word before the block), or the header of the pymalloc pool
//! the block lies in (small `PyMem_Malloc` blocks), or, under the
//! interpreter's debug hooks (debug builds, `PYTHONMALLOC=debug`, `-X dev`),
//! the size the hooks write before the block. A pointer that is none of
//! these gives no block. Only read in the copy a check runs in,
//! within readable mappings.

use crate::python::layout;
use crate::sys::memory::Readable;

/// Longest block read.
const MAX_BLOCK: usize = 1 << 20;
/// pymalloc's pool header: `szidx` is its sixth field (after the count,
/// two pointers, the previous pointer and `arenaindex`); blocks follow the
/// 48-byte header, in sizes of 16 bytes times `szidx + 1`.
const POOL_SZIDX: usize = 36;
const POOL_OVERHEAD: usize = 48;
const SIZE_CLASSES: u32 = 32;

/// The words of the heap block that starts at `pointer`, if it plausibly
/// is one.
///
/// # Safety
/// `readable` is the process's readable memory now.
pub unsafe fn block_words<'a>(pointer: usize, readable: &Readable) -> Option<&'a [usize]> {
    if pointer < 4096 || !pointer.is_multiple_of(16) || !readable.contains(pointer - 16, 32) {
        return None;
    }
    // SAFETY: forwarded: each candidate range is checked readable first.
    let size = unsafe {
        debug_hook_size(pointer, readable)
            .or_else(|| chunk_size(pointer, readable))
            .or_else(|| pool_block_size(pointer, readable))
    }?;
    // SAFETY: the block's bytes are readable (checked by the size
    // functions); reading them has no side effect.
    Some(unsafe { std::slice::from_raw_parts(pointer as *const usize, size / 8) })
}

/// The interpreter's debug hooks put the requested size (big-endian), then
/// the allocator's letter ('r', 'm' or 'o') and seven forbidden bytes
/// (0xFD), before the block.
///
/// # Safety
/// The 16 bytes before `pointer` are readable.
unsafe fn debug_hook_size(pointer: usize, readable: &Readable) -> Option<usize> {
    const FORBIDDEN: u8 = 0xFD;
    // SAFETY: caller's contract.
    let (size, tag) = unsafe {
        (usize::from_be(((pointer - 16) as *const usize).read()), ((pointer - 8) as *const [u8; 8]).read())
    };
    let marked = matches!(tag[0], b'r' | b'm' | b'o') && tag[1..].iter().all(|&b| b == FORBIDDEN);
    (marked && size <= MAX_BLOCK && readable.contains(pointer, size)).then(|| size / 8 * 8)
}

/// glibc's chunk header: the usable size of an allocated chunk is its size
/// field (low three bits are flags) less the header word.
///
/// # Safety
/// The 16 bytes before `pointer` are readable.
unsafe fn chunk_size(pointer: usize, readable: &Readable) -> Option<usize> {
    // SAFETY: caller's contract.
    let header = unsafe { ((pointer - 8) as *const usize).read() };
    let size = header & !7;
    let plausible = size >= 32 && size.is_multiple_of(16) && size <= MAX_BLOCK;
    (plausible && readable.contains(pointer, size - 8)).then(|| size - 8)
}

/// A pymalloc block's size, from its pool's header.
///
/// # Safety
/// As for `block_words`.
unsafe fn pool_block_size(pointer: usize, readable: &Readable) -> Option<usize> {
    let pool_size = layout::pymalloc_pool_size();
    let pool = pointer & !(pool_size - 1);
    if !readable.contains(pool, pool_size) || pointer < pool + POOL_OVERHEAD {
        return None;
    }
    // SAFETY: the pool's page is readable (checked above).
    let szidx = unsafe { ((pool + POOL_SZIDX) as *const u32).read() };
    if szidx >= SIZE_CLASSES {
        return None;
    }
    let size = 16 * (szidx as usize + 1);
    ((pointer - pool - POOL_OVERHEAD).is_multiple_of(size) && pointer + size <= pool + pool_size)
        .then_some(size)
}

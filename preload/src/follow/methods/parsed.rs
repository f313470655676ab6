//! The arguments a `PyArg_Parse*` call lends from the argument tuple of the
//! method call it is made in (the usual case: a `METH_VARARGS` method
//! parsing its own `args`), kept in that call's frame rather than in
//! provenance's maps.
//!
//! Each item is borrowed from the tuple, which the caller holds for the
//! whole call: an item the extension's release frees during the call was
//! not the extension's to free (`lent_in_this_call`, `take_lent`, for the
//! over-release check). The frame keeps each item's refcount when it was
//! lent; one the call released more references to than it took is handed
//! to provenance as it returns (`hand_over`), so that a free while the
//! tuple still points at it is still named. Each lent item counts in
//! provenance's filter while it is pending, so that its free during the
//! call is not missed either (`lent_block_freed`). Items past those the
//! frame covers, tuples that are not the call's own, and parses at a site
//! whose releases are watched go through provenance's maps as before.

use super::{calls, Frame, DEPTH};
use crate::follow::provenance::assoc::Association;
use crate::python::layout;
use std::cell::UnsafeCell;

/// Pending lent items of every thread's frames, counted by a few bits of
/// their address: an extension's release of an object no frame lent (most)
/// is told with one load, before a frame is looked at. GIL-serialized
/// (parses and releases run with the GIL held).
struct Lent(UnsafeCell<[u8; LENT_BUCKETS]>);

// SAFETY: only touched with the GIL held.
unsafe impl Sync for Lent {}

const LENT_BUCKETS: usize = 64;
static LENT: Lent = Lent(UnsafeCell::new([0; LENT_BUCKETS]));

/// `object`'s counter in `LENT`.
fn lent_bucket(object: usize) -> *mut u8 {
    // SAFETY: the index is below LENT_BUCKETS.
    unsafe { LENT.0.get().cast::<u8>().add((object >> 4) % LENT_BUCKETS) }
}

/// The parse of a frame's argument tuple (only `pending` matters while it
/// is 0).
#[derive(Clone, Copy, Default)]
#[repr(C)]
pub(super) struct Parse {
    /// Return address of the parsing call (0: no parse).
    site: usize,
    /// Its index in `provenance::apis::APIS`.
    api: u32,
    /// Tuple items lent and not yet reported, one bit each.
    pending: u32,
    /// The first items of the tuple (those a frame follows lazily), their
    /// refcounts when lent, their pre-headers (each block is that much
    /// before its object).
    items: [usize; ITEMS],
    before: [u64; ITEMS],
    pre_headers: [u8; ITEMS],
}

/// Items of an argument tuple a frame follows; the parse follows the rest
/// through provenance's maps.
const ITEMS: usize = 6;

impl Parse {
    /// No parse yet (a call's start).
    pub(super) fn clear(&mut self) {
        self.pending = 0;
    }
}

/// The innermost followed call's frame, if this thread is in one.
#[inline(always)]
fn current_frame() -> Option<&'static mut Frame> {
    let calls = calls();
    let depth = calls.depth;
    (1..=DEPTH).contains(&depth).then(|| &mut calls.frames[depth - 1])
}

/// Items of the argument tuple `tuple` a frame follows.
///
/// # Safety
/// `tuple` is a live tuple.
unsafe fn items_covered(tuple: usize) -> usize {
    // SAFETY: caller's contract.
    unsafe { layout::size(tuple) }.min(ITEMS)
}

/// A `PyArg_Parse*` call at `site` (`api`) parsed `tuple`. When that is the
/// argument tuple of the method call this thread is in, the items its
/// frame covers are noted there; returns how many (0: none, `tuple` is not
/// the call's or its releases are watched).
///
/// # Safety
/// `tuple` is the live tuple the parse succeeded on; the GIL is held.
pub unsafe fn note_parse(tuple: usize, site: usize, api: usize) -> usize {
    let Some(frame) = current_frame().filter(|f| f.args == tuple) else { return 0 };
    if crate::follow::watch::wants_release(frame.method + 1, site) {
        return 0; // watched lending goes through `provenance::associate`
    }
    if let Some(parses) = super::stubs::PARSES.get(frame.method as usize) {
        parses.store(1, std::sync::atomic::Ordering::Relaxed);
    }
    // SAFETY: caller's contract.
    let covered = unsafe { items_covered(tuple) };
    // Items a parse in this call lent already stay counted once.
    let mut lent = frame.parse.pending;
    let mut new = ((1u32 << covered) - 1) & !lent;
    while new != 0 {
        let index = new.trailing_zeros() as usize;
        new &= new - 1;
        // SAFETY: an item of the call's argument tuple, alive for the call
        // (its type too); parsing runs with the GIL held.
        unsafe {
            let object = layout::tuple_item(tuple, index);
            let type_object = layout::type_of(object);
            // As provenance: an object whose death could go unseen is not
            // followed.
            if !crate::follow::provenance::deaths::seen_dying(type_object) {
                continue;
            }
            let pre_header = layout::pre_header(type_object);
            frame.parse.items[index] = object;
            frame.parse.before[index] = layout::refcount(object);
            frame.parse.pre_headers[index] = pre_header as u8;
            crate::follow::provenance::count_lent(object - pre_header, 1);
            // A frame holds at most ITEMS items, and DEPTH frames a
            // thread: with the threads sharing a bucket, it saturates
            // long before it could wrap (then it only says "maybe").
            let bucket = lent_bucket(object);
            *bucket = (*bucket).saturating_add(1);
        }
        lent |= 1 << index;
    }
    frame.parse.site = site;
    frame.parse.api = api as u32;
    frame.parse.pending = lent;
    covered
}

/// The memory block of item `index` of `frame`'s argument tuple.
fn block_of(frame: &Frame, index: usize) -> usize {
    frame.parse.items[index] - usize::from(frame.parse.pre_headers[index])
}

/// Stops counting item `index` of `frame` as lent.
///
/// # Safety
/// The caller holds the GIL; the item is pending.
unsafe fn settle(frame: &mut Frame, index: usize) {
    frame.parse.pending &= !(1 << index);
    // SAFETY: forwarded; LENT is GIL-serialized.
    unsafe {
        crate::follow::provenance::count_lent(block_of(frame, index), -1);
        let bucket = lent_bucket(frame.parse.items[index]);
        if *bucket != u8::MAX {
            *bucket -= 1;
        }
    }
}

/// The first item `frame`'s parse lent, not reported yet, for which
/// `matches(index)` holds.
#[inline(always)]
fn pending_where(frame: &Frame, matches: impl Fn(usize) -> bool) -> Option<usize> {
    (0..ITEMS).find(|&i| frame.parse.pending & (1 << i) != 0 && matches(i))
}

/// Where `object` is among the items `frame`'s parse lent and that were not
/// reported yet.
#[inline(always)]
fn pending_index(frame: &Frame, object: usize) -> Option<usize> {
    pending_where(frame, |i| frame.parse.items[i] == object)
}

/// Whether the current call's parse lent `object` from its argument tuple
/// (not reported yet).
///
/// # Safety
/// The caller holds the GIL.
#[inline(always)]
pub unsafe fn lent_in_this_call(object: usize) -> bool {
    // SAFETY: LENT is GIL-serialized (caller's contract).
    let maybe = unsafe { *lent_bucket(object) != 0 };
    maybe && current_frame().is_some_and(|f| f.parse.pending != 0 && pending_index(f, object).is_some())
}

/// `lent_in_this_call`, reported now (not again, nor handed over): how
/// provenance would have remembered it.
///
/// # Safety
/// The caller holds the GIL; `object` is alive (being released).
pub unsafe fn take_lent(object: usize) -> Option<Association> {
    let frame = current_frame()?;
    // SAFETY: forwarded.
    unsafe { take(frame, object) }
}

/// # Safety
/// As for `take_lent`; `frame` is the current one.
unsafe fn take(frame: &mut Frame, object: usize) -> Option<Association> {
    let index = pending_index(frame, object)?;
    let tuple = frame.args;
    // SAFETY: pending, so alive until now (being released or freed).
    unsafe { settle(frame, index) };
    // SAFETY: the tuple and the object are alive (the object is being
    // released, not yet freed); a live object's type is alive.
    unsafe {
        let container_type = layout::type_of(tuple);
        Some(Association {
            container: tuple,
            container_type,
            index,
            site: frame.parse.site,
            api: frame.parse.api,
            slot: Association::slot_number(crate::follow::provenance::apis::Slot::TupleIndex),
            stolen: false,
            container_pre_header: layout::pre_header(container_type) as u8,
            method: frame.method + 1,
            pre_header: layout::pre_header(layout::type_of(object)) as u32,
        })
    }
}

/// The memory block at `block` is being freed: if it holds an item the
/// current call's parse lent, that item and how provenance would have
/// remembered it (reported now: not again).
///
/// # Safety
/// The caller holds the GIL; the block's memory is still intact.
#[cold]
pub unsafe fn lent_block_freed(block: usize) -> Option<(usize, Association)> {
    let frame = current_frame().filter(|f| f.parse.pending != 0)?;
    let index = pending_where(frame, |i| block_of(frame, i) == block)?;
    let object = frame.parse.items[index];
    // SAFETY: as above.
    unsafe { take(frame, object) }.map(|association| (object, association))
}

/// The current call returns: the items its parse lent stop counting as
/// lent, and each whose refcount fell below what it was at the call goes to
/// provenance, which follows it until it dies (the call still current).
///
/// # Safety
/// The caller holds the GIL; the frame is the returning call's.
#[inline(always)]
pub(super) unsafe fn hand_over() {
    if let Some(frame) = current_frame().filter(|f| f.parse.pending != 0) {
        // SAFETY: forwarded.
        unsafe { hand_over_pending(frame) };
    }
}

/// `hand_over` when items are pending.
///
/// # Safety
/// As for `hand_over`.
#[cold]
unsafe fn hand_over_pending(frame: &mut Frame) {
    let mut pending = frame.parse.pending;
    let mut fell = 0u32;
    while pending != 0 {
        let index = pending.trailing_zeros() as usize;
        pending &= pending - 1;
        // SAFETY: the caller holds the argument tuple, which still holds its
        // items (alive); the GIL is held.
        unsafe {
            settle(frame, index);
            if layout::refcount(frame.parse.items[index]) < frame.parse.before[index] {
                fell |= 1 << index;
            }
        }
    }
    if fell != 0 {
        let (items, tuple, site, api) = (frame.parse.items, frame.args, frame.parse.site, frame.parse.api);
        // Done with the frame: provenance reads the current call itself.
        while fell != 0 {
            let index = fell.trailing_zeros() as usize;
            fell &= fell - 1;
            // SAFETY: as above.
            unsafe { crate::follow::provenance::lent_from_arguments(items[index], tuple, index, site, api) };
        }
    }
}

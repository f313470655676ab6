//! Which table each thread writes: a pool of tables handed out on a thread's
//! first event and given back when it exits, so thread pools that come and
//! go reuse tables (counts stay in them, which keeps every sum right).
//!
//! The pool is one anonymous mapping made at start (`init`); pages are only
//! backed once a thread writes them. Tables are never unmapped, so a pointer
//! to one stays valid for the life of the process.

use super::table::Table;
use super::tls;
use std::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Tables in the pool; threads beyond this share the overflow table.
const POOL: usize = 256;

const FREE: u8 = 0;
const USED: u8 = 1;

static BASE: AtomicPtr<Table> = AtomicPtr::new(std::ptr::null_mut());
static STATE: [AtomicU8; POOL] = [const { AtomicU8::new(FREE) }; POOL];
/// Tables ever handed out: the reporter reads `0..HIGH`.
static HIGH: AtomicUsize = AtomicUsize::new(0);
/// Written with atomic read-modify-write by any thread the pool cannot serve.
static OVERFLOW: Table = Table::new();
static EXIT_KEY: OnceLock<libc::pthread_key_t> = OnceLock::new();

/// Maps the pool. Called once, before any hook can run.
pub fn init() -> bool {
    OVERFLOW.set_shared();
    if !BASE.load(Ordering::Acquire).is_null() {
        return true;
    }
    let Some(base) = crate::sys::zeroed_mapping(POOL * size_of::<Table>()) else { return false };
    // Zeroed memory is a valid empty `Table` (all atomics zero).
    BASE.store(base.cast(), Ordering::Release);
    EXIT_KEY.get_or_init(|| {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is a valid out-pointer; `on_thread_exit` matches the
        // destructor signature pthread expects.
        unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) };
        key
    });
    true
}

/// The calling thread's table (the hot path's first step).
#[inline(always)]
pub fn current() -> *const Table {
    let table = tls::get();
    if !table.is_null() {
        return table;
    }
    acquire()
}

fn table_at(i: usize) -> *const Table {
    // SAFETY: callers pass i < POOL, and the mapping holds POOL tables.
    unsafe { BASE.load(Ordering::Acquire).add(i) }
}

/// First event on this thread: take a free table from the pool.
#[cold]
#[inline(never)]
fn acquire() -> *const Table {
    let mut table: *const Table = &OVERFLOW;
    if !BASE.load(Ordering::Acquire).is_null() {
        if let Some(i) = (0..POOL)
            .find(|&i| STATE[i].compare_exchange(FREE, USED, Ordering::Acquire, Ordering::Relaxed).is_ok())
        {
            HIGH.fetch_max(i + 1, Ordering::AcqRel);
            table = table_at(i);
            if let Some(key) = EXIT_KEY.get() {
                // SAFETY: a valid key; the value is only handed back to
                // `on_thread_exit`. Non-null, so the destructor will run.
                unsafe { libc::pthread_setspecific(*key, table.cast()) };
            }
        }
    }
    tls::set(table);
    // Once per thread: a stack for the crash handler.
    crate::sys::crash::give_thread_an_alternate_stack();
    table
}

/// pthread key destructor: the exiting thread gives its table back.
extern "C" fn on_thread_exit(value: *mut libc::c_void) {
    tls::set(std::ptr::null());
    crate::sys::crash::drop_thread_alternate_stack();
    if let Some(i) = index_of(value as *const Table) {
        STATE[i].store(FREE, Ordering::Release);
    }
}

fn index_of(table: *const Table) -> Option<usize> {
    let base = BASE.load(Ordering::Acquire) as usize;
    let offset = (table as usize).checked_sub(base)?;
    let i = offset / size_of::<Table>();
    (base != 0 && i < POOL).then_some(i)
}

/// Calls `f` on every table that may hold counts.
pub fn for_each_table(mut f: impl FnMut(&Table)) {
    let high = HIGH.load(Ordering::Acquire);
    for i in 0..high {
        // SAFETY: `table_at` points into the live mapping; tables are only
        // read here, through atomics.
        f(unsafe { &*table_at(i) });
    }
    f(&OVERFLOW);
}

/// In a child just after `fork`: the other threads are gone, so every table
/// but the caller's is free again, and all counts start from zero.
pub fn reset_after_fork() {
    let mine = tls::get();
    for_each_table(|t| t.clear());
    for (i, state) in STATE.iter().enumerate() {
        let owned = index_of(mine) == Some(i);
        state.store(if owned { USED } else { FREE }, Ordering::Relaxed);
    }
}

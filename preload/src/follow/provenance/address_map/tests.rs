//! The map and the counting filter every map shares.
//!
//! The filter is one static for the whole process, so every test takes
//! `Gil` (the lock that stands for the GIL here, as the module invariant
//! asks) and keeps its keys in a 1 MiB window of address space of its own
//! (`window`): windows map to disjoint ranges of the filter's counters, so
//! what one test leaves counted cannot answer another's question.

use super::*;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

static LOCK: Mutex<()> = Mutex::new(());

/// Holding the lock that stands for the GIL: every map call goes through
/// it.
struct Gil(#[allow(dead_code)] MutexGuard<'static, ()>);

fn gil() -> Gil {
    Gil(LOCK.lock().unwrap_or_else(|e| e.into_inner()))
}

impl Gil {
    fn get<V: Copy + Default>(&self, map: &AddressMap<V>, key: usize) -> Option<V> {
        // SAFETY: `self` holds the lock that stands for the GIL.
        unsafe { map.get(key) }
    }

    fn put<V: Copy + Default>(&self, map: &AddressMap<V>, key: usize, value: V) -> bool {
        // SAFETY: as in `get`.
        unsafe { map.update(key, |v| *v = value) }
    }

    fn remove<V: Copy + Default>(&self, map: &AddressMap<V>, key: usize) -> Option<V> {
        // SAFETY: as in `get`.
        unsafe { map.remove(key) }
    }

    fn len<V: Copy + Default>(&self, map: &AddressMap<V>) -> usize {
        // SAFETY: as in `get`.
        unsafe { map.len() }
    }

    fn entries<V: Copy + Default>(&self, map: &AddressMap<V>) -> BTreeMap<usize, V> {
        let mut out = BTreeMap::new();
        // SAFETY: as in `get`; the closure does not touch the map.
        unsafe { map.for_each(|k, v| assert!(out.insert(k, v).is_none(), "{k:#x} twice")) };
        out
    }

    fn clear<V: Copy + Default>(&self, map: &AddressMap<V>) {
        // SAFETY: as in `get`.
        unsafe { map.clear() }
    }

    fn maybe_present(&self, key: usize) -> bool {
        // SAFETY: as in `get`.
        unsafe { maybe_present(key) }
    }

    fn maybe_present_any3(&self, key: usize) -> bool {
        // SAFETY: as in `get`.
        unsafe { maybe_present_any3(key) }
    }

    /// Inserts refused so far.
    fn dropped<V>(&self, map: &AddressMap<V>) -> u64 {
        // SAFETY: as in `get`; a read of the table's header.
        unsafe { (*map.0.get()).dropped }
    }

    /// The slot `key` is in, if any.
    fn slot_of<V: Copy + Default>(&self, map: &AddressMap<V>, key: usize) -> Option<usize> {
        // SAFETY: as in `get`.
        let t = unsafe { map.table() }?;
        (0..t.capacity).find(|&i| t.slot(i).key == key)
    }
}

/// A map of its own for a test, `capacity` slots in a mapping of its own
/// (never unmapped, like the agent's).
fn new_map<V: Copy + Default>(capacity: usize) -> AddressMap<V> {
    let map = AddressMap::new();
    assert!(map.init(capacity));
    map
}

/// The start of test window `n` (< 16): 1 MiB of addresses whose filter
/// counters no other window shares. Window 0 starts at filter counter 0.
fn window(n: usize) -> usize {
    assert!(n < 16);
    0x7000_0000_0000 + (n << 20)
}

/// With 64 slots, a key's home is its 16-byte granule's low six bits: the
/// key in `window(w)` with home `home`, the `j`-th of them.
fn key_at_home(w: usize, home: usize, j: usize) -> usize {
    window(w) + 16 * home + 1024 * j
}

#[test]
fn a_map_not_mapped_yet_holds_nothing_and_takes_nothing() {
    let gil = gil();
    let map = AddressMap::<u64>::new();
    let key = window(1);
    assert!(!gil.put(&map, key, 7));
    assert_eq!(gil.get(&map, key), None);
    assert_eq!(gil.remove(&map, key), None);
    assert_eq!(gil.len(&map), 0);
    assert_eq!(gil.dropped(&map), 0);
    assert!(gil.entries(&map).is_empty());
}

#[test]
fn insert_get_update_remove() {
    let gil = gil();
    let map = new_map::<u64>(64);
    let (a, b) = (window(1) + 0x40, window(1) + 0x50);
    assert_eq!(gil.get(&map, a), None);
    assert!(gil.put(&map, a, 11));
    assert!(gil.put(&map, b, 22));
    assert_eq!((gil.get(&map, a), gil.get(&map, b), gil.len(&map)), (Some(11), Some(22), 2));
    // `update` on a present key changes its value in place; on an absent
    // one it starts from the default.
    // SAFETY: the lock that stands for the GIL is held.
    assert!(unsafe { map.update(a, |v| *v += 5) });
    // SAFETY: as above.
    assert!(unsafe { map.update(window(1) + 0x60, |v| *v += 5) });
    assert_eq!(gil.get(&map, a), Some(16));
    assert_eq!(gil.get(&map, window(1) + 0x60), Some(5));
    assert_eq!(gil.len(&map), 3);
    assert_eq!(gil.remove(&map, a), Some(16));
    assert_eq!(gil.remove(&map, a), None);
    assert_eq!(gil.get(&map, a), None);
    assert_eq!(gil.get(&map, b), Some(22));
    assert_eq!(gil.len(&map), 2);
    assert_eq!(gil.entries(&map), BTreeMap::from([(b, 22), (window(1) + 0x60, 5)]));
    gil.clear(&map);
    assert_eq!(gil.len(&map), 0);
    assert_eq!(gil.get(&map, b), None);
    assert!(gil.entries(&map).is_empty());
}

#[test]
fn linear_probing_places_a_run_across_the_end_of_the_table() {
    let gil = gil();
    let map = new_map::<u64>(64);
    let homes = [62, 62, 63, 62, 0, 63, 1, 0];
    let keys: Vec<usize> = homes.iter().enumerate().map(|(j, &h)| key_at_home(2, h, j)).collect();
    for (i, &k) in keys.iter().enumerate() {
        assert_eq!(home(k, 64), homes[i]);
        assert!(gil.put(&map, k, i as u64));
    }
    let slots: Vec<_> = keys.iter().map(|&k| gil.slot_of(&map, k)).collect();
    let expected = [62, 63, 0, 1, 2, 3, 4, 5].map(Some);
    assert_eq!(slots, expected);
    // Backward-shift deletion of the first: every later entry of the run
    // may move back one slot, and does.
    assert_eq!(gil.remove(&map, keys[0]), Some(0));
    let slots: Vec<_> = keys[1..].iter().map(|&k| gil.slot_of(&map, k)).collect();
    assert_eq!(slots, [62, 63, 0, 1, 2, 3, 4].map(Some));
    for (i, &k) in keys.iter().enumerate().skip(1) {
        assert_eq!(gil.get(&map, k), Some(i as u64));
    }
    gil.clear(&map);
}

#[test]
fn backward_shift_leaves_an_entry_at_its_home() {
    let gil = gil();
    let map = new_map::<u64>(64);
    let (a, b, c) = (key_at_home(3, 10, 0), key_at_home(3, 11, 0), key_at_home(3, 10, 1));
    for (k, v) in [(a, 1), (b, 2), (c, 3)] {
        assert!(gil.put(&map, k, v));
    }
    // a@10, b@11 (its home), c@12 (home 10).
    assert_eq!([a, b, c].map(|k| gil.slot_of(&map, k)), [Some(10), Some(11), Some(12)]);
    assert_eq!(gil.remove(&map, a), Some(1));
    // b may not move before its home; c moves into the hole a left.
    assert_eq!([b, c].map(|k| gil.slot_of(&map, k)), [Some(11), Some(10)]);
    assert_eq!((gil.get(&map, b), gil.get(&map, c)), (Some(2), Some(3)));
    gil.clear(&map);
}

/// A small deterministic generator for removal orders.
fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

#[test]
fn every_key_stays_findable_whatever_the_order_of_removals() {
    let gil = gil();
    let map = new_map::<u64>(64);
    // Clustered homes around the end of the table, so runs wrap and
    // interleave: 24 keys over homes 58..=63 and 0..=3.
    let homes = [58, 59, 60, 61, 62, 63, 0, 1, 2, 3];
    let keys: Vec<usize> = (0..24).map(|j| key_at_home(4, homes[(j * 7) % homes.len()], j)).collect();
    for seed in 0..200 {
        let mut model = BTreeMap::new();
        for (i, &k) in keys.iter().enumerate() {
            assert!(gil.put(&map, k, i as u64 + 100));
            model.insert(k, i as u64 + 100);
        }
        for i in shuffled(keys.len(), seed) {
            assert_eq!(gil.remove(&map, keys[i]), model.remove(&keys[i]), "seed {seed}");
            for &k in &keys {
                assert_eq!(gil.get(&map, k), model.get(&k).copied(), "seed {seed}, key {k:#x}");
            }
            assert_eq!(gil.len(&map), model.len());
            assert_eq!(gil.entries(&map), model);
        }
    }
    // Every counter went back down: the keys' filter counters are theirs
    // alone (their own window), so the filter says absent again.
    assert!(keys.iter().all(|&k| !gil.maybe_present(k)));
}

#[test]
fn refuses_inserts_at_three_quarters_full_and_counts_them() {
    let gil = gil();
    let map = new_map::<u64>(16);
    let keys: Vec<usize> = (0..14).map(|i| window(5) + 16 * i).collect();
    for (i, &k) in keys[..12].iter().enumerate() {
        assert!(gil.put(&map, k, i as u64), "insert {i}");
    }
    assert_eq!((gil.len(&map), gil.dropped(&map)), (12, 0));
    let mut called = false;
    // SAFETY: the lock that stands for the GIL is held.
    assert!(!unsafe { map.update(keys[12], |_| called = true) });
    assert!(!called, "a refused insert does not run the update");
    assert_eq!(gil.dropped(&map), 1);
    assert!(!gil.put(&map, keys[13], 0));
    assert_eq!(gil.dropped(&map), 2);
    assert_eq!(gil.get(&map, keys[12]), None);
    // A full map still changes what it holds.
    assert!(gil.put(&map, keys[3], 33));
    assert_eq!(gil.get(&map, keys[3]), Some(33));
    assert_eq!((gil.len(&map), gil.dropped(&map)), (12, 2));
    // Room again after a removal; the count of refusals stays.
    assert_eq!(gil.remove(&map, keys[0]), Some(0));
    assert!(gil.put(&map, keys[12], 12));
    assert_eq!((gil.len(&map), gil.dropped(&map)), (12, 2));
    gil.clear(&map);
}

#[test]
fn the_filter_never_says_absent_for_a_present_key() {
    let gil = gil();
    let (a, b) = (new_map::<u64>(64), new_map::<u64>(64));
    let k = window(6) + 0x1000;
    assert!(!gil.maybe_present(k));
    assert!(!gil.maybe_present_any3(k - 32 - 48));
    assert!(gil.put(&a, k, 1));
    assert!(gil.maybe_present(k));
    // Its neighbours' counters are their own.
    assert!(!gil.maybe_present(k + 16) && !gil.maybe_present(k - 16));
    // Three neighbouring keys from k - 32 to k + 32 see it; k + 16 does not.
    assert!(gil.maybe_present_any3(k - 32));
    assert!(gil.maybe_present_any3(k - 16));
    assert!(gil.maybe_present_any3(k));
    assert!(!gil.maybe_present_any3(k + 16));
    assert!(!gil.maybe_present_any3(k - 48));
    // A key 16 MiB away shares k's counter: "maybe", and the map says no.
    let alias = k + (16 << 20);
    assert!(gil.maybe_present(alias));
    assert_eq!(gil.get(&a, alias), None);
    // The filter is shared and counts: the key in two maps is still maybe
    // present after one of them lets it go.
    assert!(gil.put(&b, k, 2));
    assert_eq!(gil.remove(&a, k), Some(1));
    assert!(gil.maybe_present(k));
    assert_eq!(gil.get(&b, k), Some(2));
    assert_eq!(gil.remove(&b, k), Some(2));
    assert!(!gil.maybe_present(k));
    assert!(!gil.maybe_present_any3(k - 32));
    // `clear` takes its keys out of the filter too.
    assert!(gil.put(&a, k, 3) && gil.put(&a, k + 16, 4));
    gil.clear(&a);
    assert!(!gil.maybe_present(k) && !gil.maybe_present(k + 16));
}

#[test]
fn the_first_counters_are_mirrored_after_the_last() {
    let gil = gil();
    let map = new_map::<u64>(64);
    // window(0) starts at counter 0; the key before it has the last one.
    let first = window(0);
    let last = first - 16;
    assert_eq!((filter_index(first), filter_index(last)), (0, FILTER_BYTES - 1));
    assert!(!gil.maybe_present_any3(last));
    assert!(gil.put(&map, first, 1));
    // last, last + 16 (counter 0), last + 32 (counter 1).
    assert!(gil.maybe_present_any3(last));
    assert!(gil.maybe_present_any3(last - 16));
    assert!(!gil.maybe_present_any3(last - 32));
    assert_eq!(gil.remove(&map, first), Some(1));
    assert!(!gil.maybe_present_any3(last) && !gil.maybe_present_any3(last - 16));
    assert!(gil.put(&map, first + 16, 2));
    assert!(gil.maybe_present_any3(last));
    assert!(!gil.maybe_present_any3(last - 16));
    gil.clear(&map);
    assert!(!gil.maybe_present_any3(last));
}

#[test]
fn a_saturated_counter_stays_maybe() {
    let gil = gil();
    let map = new_map::<u64>(512);
    // 300 keys on one counter: 16 MiB apart, from window 7.
    let keys: Vec<usize> = (0..300).map(|m| window(7) + 0x30 + (m << 24)).collect();
    assert!(keys.iter().all(|&k| filter_index(k) == filter_index(keys[0])));
    for (i, &k) in keys.iter().enumerate() {
        assert!(gil.put(&map, k, i as u64));
    }
    // SAFETY: the lock that stands for the GIL is held; a read of the
    // counter inside the filter.
    let counter = || unsafe { *filter().add(filter_index(keys[0])) };
    assert_eq!(counter(), STUCK);
    for (i, &k) in keys.iter().enumerate() {
        assert_eq!(gil.remove(&map, k), Some(i as u64));
        // Counting down from a wrapped count would reach zero with keys
        // still in: a saturated counter does not move.
        assert_eq!(counter(), STUCK);
        assert!(keys[i + 1..].iter().all(|&k| gil.get(&map, k).is_some()));
    }
    assert_eq!(gil.len(&map), 0);
    assert!(gil.maybe_present(keys[0]));
}

#[test]
fn keys_of_one_chunk_take_neighbouring_slots() {
    let gil = gil();
    let map = new_map::<u64>(1 << 12);
    // One 1 KiB chunk: 64 granules of 16 bytes.
    let chunk = window(8) + 0x4_0000;
    let keys: Vec<usize> = (0..64).map(|i| chunk + 16 * i).collect();
    for (i, &k) in keys.iter().enumerate() {
        assert!(gil.put(&map, k, i as u64));
    }
    let first = gil.slot_of(&map, chunk).unwrap();
    assert_eq!(first % 64, 0);
    for (i, &k) in keys.iter().enumerate() {
        assert_eq!(gil.slot_of(&map, k), Some(first + i));
        assert_eq!(gil.get(&map, k), Some(i as u64));
    }
    gil.clear(&map);
}

#[test]
fn chunks_are_scattered_and_a_dense_heap_stays_findable() {
    let gil = gil();
    let capacity = 1 << 12;
    let map = new_map::<u64>(capacity);
    // Neighbouring chunks do not get neighbouring homes.
    let base = window(9);
    let homes: Vec<usize> = (0..64).map(|c| home(base + 1024 * c, capacity)).collect();
    let adjacent = homes.windows(2).filter(|h| h[1] == (h[0] + 64) % capacity).count();
    assert!(adjacent <= 4, "{adjacent} neighbouring chunks in neighbouring slots: {homes:?}");
    let mut distinct = homes.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(distinct.len() >= 32, "{} distinct chunk homes of 64", distinct.len());
    // 48 KiB of objects 16 bytes apart: 3/4 of the slots, all taken.
    let keys: Vec<usize> = (0..capacity / 4 * 3).map(|i| base + 16 * i).collect();
    for (i, &k) in keys.iter().enumerate() {
        assert!(gil.put(&map, k, i as u64), "insert {i}");
    }
    assert!(!gil.put(&map, base + 16 * keys.len(), 0));
    assert_eq!((gil.len(&map), gil.dropped(&map)), (keys.len(), 1));
    // Every other one removed: the long runs shift back and keep the rest.
    for (i, &k) in keys.iter().enumerate().step_by(2) {
        assert_eq!(gil.remove(&map, k), Some(i as u64));
    }
    for (i, &k) in keys.iter().enumerate() {
        let expected = (i % 2 == 1).then_some(i as u64);
        assert_eq!(gil.get(&map, k), expected, "key {i}");
    }
    assert_eq!(gil.len(&map), keys.len() / 2);
    gil.clear(&map);
}

#[test]
fn read_out_hands_every_entry_over_and_empties_the_map() {
    let gil = gil();
    let map = new_map::<u64>(1 << 10);
    let keys: Vec<usize> = (0..700).map(|i| window(10) + 48 * i).collect();
    for (i, &k) in keys.iter().enumerate() {
        assert!(gil.put(&map, k, i as u64 * 3));
    }
    let mut seen = BTreeMap::new();
    // SAFETY: the lock that stands for the GIL is held; the map's pages
    // are this test's own, and nothing reads the entries after.
    unsafe { map.read_out(|k, v| assert!(seen.insert(k, v).is_none())) };
    let expected: BTreeMap<usize, u64> = keys.iter().enumerate().map(|(i, &k)| (k, i as u64 * 3)).collect();
    assert_eq!(seen, expected);
    assert_eq!(gil.len(&map), 0);
    assert!(gil.entries(&map).is_empty());
    assert_eq!(gil.get(&map, keys[0]), None);
    // The pages given back read as empty slots: the map takes entries again.
    assert!(gil.put(&map, keys[5], 5));
    assert_eq!(gil.entries(&map), BTreeMap::from([(keys[5], 5)]));
}

//! One thread's table of counts: per site, per kind; the probe window and
//! `dropped`; the overflow table's atomic counting; sampling gaps.

use super::*;
use std::collections::BTreeMap;

const ALL: [Kind; KINDS] = [Kind::Incref, Kind::Decref, Kind::Dealloc, Kind::Negative, Kind::New];

fn table() -> Box<Table> {
    Box::new(Table::new())
}

/// Every site's counts, whatever the order of the slots.
fn counts(table: &Table) -> BTreeMap<usize, [u64; KINDS]> {
    let mut out = BTreeMap::new();
    table.for_each(|ra, counts| assert!(out.insert(ra, counts).is_none(), "{ra:#x} twice"));
    out
}

/// Return addresses whose home slot is `slot`, in increasing order.
fn with_home(slot: usize) -> impl Iterator<Item = usize> {
    (0x7f00_1234_0000usize..).filter(move |&ra| hash(ra) == slot)
}

#[test]
fn counts_each_kind_at_each_site() {
    let t = table();
    let (a, b, c) = (0x7f00_0000_1005, 0x7f00_0000_2a31, 0x5555_0000_0100);
    for _ in 0..3 {
        t.bump(a, Kind::Incref);
    }
    t.bump(a, Kind::Decref);
    t.bump(a, Kind::Decref);
    t.bump(b, Kind::Dealloc);
    t.bump(b, Kind::Negative);
    for _ in 0..4 {
        t.bump(c, Kind::New);
    }
    let expected = BTreeMap::from([(a, [3, 2, 0, 0, 0]), (b, [0, 0, 1, 1, 0]), (c, [0, 0, 0, 0, 4])]);
    assert_eq!(counts(&t), expected);
    assert_eq!(t.dropped(), 0);
    // Kinds index the counters in their declared order.
    assert_eq!(ALL.map(|k| k as usize), [0, 1, 2, 3, 4]);
}

#[test]
fn a_site_past_the_probe_window_is_dropped_and_counted() {
    let t = table();
    let home = 1000;
    let same: Vec<usize> = with_home(home).take(MAX_PROBES + 1).collect();
    for (i, &ra) in same[..MAX_PROBES].iter().enumerate() {
        for _ in 0..=i {
            t.bump(ra, Kind::Incref);
        }
    }
    assert_eq!(t.dropped(), 0);
    // Slots home..home + 64 are taken: the 65th site with that home has
    // nowhere to go, and each of its events is dropped.
    for _ in 0..3 {
        t.bump(same[MAX_PROBES], Kind::Decref);
    }
    assert_eq!(t.dropped(), 3);
    let seen = counts(&t);
    assert_eq!(seen.len(), MAX_PROBES);
    assert!(!seen.contains_key(&same[MAX_PROBES]));
    for (i, ra) in same[..MAX_PROBES].iter().enumerate() {
        assert_eq!(seen[ra], [i as u64 + 1, 0, 0, 0, 0]);
    }
    // A site whose window reaches a free slot is still counted: home + 1
    // probes up to home + 64.
    let next = with_home(home + 1).next().unwrap();
    t.bump(next, Kind::New);
    assert_eq!(counts(&t)[&next], [0, 0, 0, 0, 1]);
    assert_eq!(t.dropped(), 3);
    // Events at sites already in keep counting, full window or not.
    t.bump(same[0], Kind::Incref);
    assert_eq!(counts(&t)[&same[0]][0], 2);
}

#[test]
fn every_slot_holds_a_site_and_a_full_table_drops_new_ones() {
    let t = table();
    let sites: Vec<usize> = (0..SLOTS).map(|slot| with_home(slot).next().unwrap()).collect();
    for &ra in &sites {
        t.bump(ra, Kind::Incref);
    }
    let seen = counts(&t);
    assert_eq!(seen.len(), SLOTS);
    assert!(sites.iter().all(|ra| seen[ra] == [1, 0, 0, 0, 0]));
    assert_eq!(t.dropped(), 0);
    let newcomers: Vec<usize> = (1..=5).map(|n| with_home(n * 700).nth(1).unwrap()).collect();
    for &ra in &newcomers {
        t.bump(ra, Kind::New);
    }
    assert_eq!(t.dropped(), 5);
    assert_eq!(counts(&t).len(), SLOTS);
}

#[test]
fn the_order_of_events_does_not_change_the_counts() {
    // Sites that collide, so that which slot each takes depends on the
    // order in which they first appear.
    let sites: Vec<usize> =
        with_home(4095).take(6).chain(with_home(0).take(4)).chain(with_home(7).take(3)).collect();
    let events: Vec<(usize, Kind)> =
        (0..500).map(|i| (sites[(i * 7 + i / 13) % sites.len()], ALL[(i * 3 + i / 5) % KINDS])).collect();
    let (forward, backward, interleaved) = (table(), table(), table());
    for &(ra, kind) in &events {
        forward.bump(ra, kind);
    }
    for &(ra, kind) in events.iter().rev() {
        backward.bump(ra, kind);
    }
    let (even, odd): (Vec<_>, Vec<_>) = events.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    for (_, &(ra, kind)) in odd.into_iter().chain(even) {
        interleaved.bump(ra, kind);
    }
    let expected = counts(&forward);
    assert_eq!(expected.values().flatten().sum::<u64>(), events.len() as u64);
    assert_eq!(counts(&backward), expected);
    assert_eq!(counts(&interleaved), expected);
    let mut by_hand: BTreeMap<usize, [u64; KINDS]> = BTreeMap::new();
    for &(ra, kind) in &events {
        by_hand.entry(ra).or_default()[kind as usize] += 1;
    }
    assert_eq!(expected, by_hand);
}

#[test]
fn home_counter_is_only_for_a_site_in_its_home_slot_of_a_single_writer_table() {
    let t = table();
    let [first, second] = [0, 1].map(|n| with_home(321).nth(n).unwrap());
    assert!(t.home_counter(first, Kind::Incref).is_none(), "not seen yet");
    t.bump(first, Kind::Incref);
    t.bump(second, Kind::Incref);
    let counter = t.home_counter(first, Kind::Decref).expect("in its home slot");
    bump_single(counter);
    bump_single(counter);
    assert_eq!(counts(&t)[&first], [1, 2, 0, 0, 0]);
    // Counted, but one slot past its home.
    assert!(t.home_counter(second, Kind::Incref).is_none());
    assert_eq!(counts(&t)[&second], [1, 0, 0, 0, 0]);
    // Never on a table several threads write.
    t.set_shared();
    assert!(t.home_counter(first, Kind::Incref).is_none());
}

#[test]
fn the_shared_table_counts_every_event_of_every_thread() {
    let t = table();
    t.set_shared();
    // Colliding sites, so that threads race to claim the same slots.
    let sites: Vec<usize> = with_home(2000).take(8).chain(with_home(2001).take(8)).collect();
    let (threads, per_thread) = (4, 20_000);
    std::thread::scope(|scope| {
        for n in 0..threads {
            let (t, sites) = (&t, &sites);
            scope.spawn(move || {
                for i in 0..per_thread {
                    t.bump(sites[(i + n) % sites.len()], ALL[i % 2]);
                }
            });
        }
    });
    let seen = counts(&t);
    assert_eq!(seen.len(), sites.len());
    let each = (threads * per_thread / sites.len() / 2) as u64;
    assert!(seen.values().all(|c| *c == [each, each, 0, 0, 0]), "{seen:?}");
    assert_eq!(t.dropped(), 0);
}

#[test]
fn on_the_shared_table_a_slot_claimed_for_another_site_is_not_taken() {
    let t = table();
    t.set_shared();
    let (a, b) = (0x7f00_0000_1111, 0x7f00_0000_2222);
    let slot = &t.slots[5];
    assert!(t.claim(slot, a));
    // Another thread claimed it for the same site first: that is as good.
    assert!(t.claim(slot, a));
    // For another site: not this one's; it probes on.
    assert!(!t.claim(slot, b));
    assert_eq!(slot.key.load(Ordering::Relaxed), a);
}

#[test]
fn clear_forgets_sites_counts_and_drops() {
    let t = table();
    for ra in with_home(50).take(MAX_PROBES + 2) {
        t.bump(ra, Kind::Incref);
    }
    assert_eq!((counts(&t).len(), t.dropped()), (MAX_PROBES, 2));
    assert!(t.sample_tick(1000));
    assert_ne!(t.countdown.load(Ordering::Relaxed), 0);
    t.clear();
    assert_eq!(t.countdown.load(Ordering::Relaxed), 0);
    assert!(counts(&t).is_empty());
    assert_eq!(t.dropped(), 0);
    // The countdown starts over: the next event is sampled.
    assert!(t.sample_tick(1000));
    let ra = with_home(50).nth(MAX_PROBES + 1).unwrap();
    t.bump(ra, Kind::Dealloc);
    assert_eq!(counts(&t), BTreeMap::from([(ra, [0, 0, 1, 0, 0])]));
}

#[test]
fn without_sampling_every_event_is_sampled() {
    let t = table();
    assert!((0..1000).all(|_| t.sample_tick(1)));
    assert!((0..100).all(|_| t.gap(1) == 1 && t.gap(0) == 1));
}

#[test]
fn sampling_gaps_are_between_1_and_2n_minus_1() {
    let t = table();
    for n in [2u32, 3, 10, 1000] {
        let gaps: Vec<u32> = (0..20_000).map(|_| t.gap(n)).collect();
        assert_eq!(*gaps.iter().min().unwrap(), 1, "N = {n}");
        let max = *gaps.iter().max().unwrap();
        assert!(max < 2 * n && max >= 2 * n - 1 - n / 4, "N = {n}: max {max}");
        let mean = gaps.iter().map(|&g| f64::from(g)).sum::<f64>() / gaps.len() as f64;
        assert!((mean - f64::from(n)).abs() < f64::from(n) * 0.05, "N = {n}: mean {mean}");
    }
}

#[test]
fn sample_tick_says_yes_once_per_gap() {
    let t = table();
    let n = 4;
    // A fresh table samples its first event.
    assert!(t.sample_tick(n));
    let mut since = 0;
    let mut gaps = Vec::new();
    for _ in 0..40_000 {
        since += 1;
        if t.sample_tick(n) {
            gaps.push(since);
            since = 0;
        }
    }
    assert!(gaps.iter().all(|&g| (1..=2 * n - 1).contains(&g)), "{gaps:?}");
    for g in 1..=2 * n - 1 {
        assert!(gaps.contains(&g), "no gap of {g}");
    }
    let chosen = gaps.len() as f64;
    assert!((chosen - 10_000.0).abs() < 500.0, "{chosen} of 40000 sampled");
}

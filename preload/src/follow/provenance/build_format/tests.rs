//! The walk of `Py_BuildValue` formats, on objects laid out as the
//! interpreter lays out tuples and lists (`layout`, as on 3.12 release:
//! no header extra, tuple items right after `ob_size`). Leaves are never
//! read, so any non-zero word serves as one.

use super::*;
use std::ffi::CStr;
use std::sync::{Mutex, MutexGuard};

/// Taken by the tests that put formats in `FORMATS_WITHOUT_STEALS`, so that
/// none overwrites a slot another is about to check.
fn formats_table() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The value `Py_BuildValue` built, as a tree.
enum V {
    /// An object the walk does not read (an int, a str, a dict).
    Leaf(usize),
    Tuple(Vec<V>),
    List(Vec<V>),
    /// A NULL item.
    Null,
}
use V::*;

fn o(n: usize) -> V {
    Leaf(0x1000 + 16 * n)
}

/// Objects laid out in memory that outlives the walk.
#[derive(Default)]
struct Heap(Vec<Box<[usize]>>);

impl Heap {
    /// The object for `v`: a tuple is `ob_refcnt, ob_type, ob_size` then its
    /// items; a list the same header, then `ob_item` and `allocated`.
    fn make(&mut self, v: &V) -> usize {
        let (items, list) = match v {
            Leaf(address) => return *address,
            Null => return 0,
            Tuple(items) => (items, false),
            List(items) => (items, true),
        };
        let words: Vec<usize> = items.iter().map(|item| self.make(item)).collect();
        let n = words.len();
        let object: Box<[usize]> = if list {
            let array: Box<[usize]> = words.into();
            let pointer = array.as_ptr() as usize;
            self.0.push(array);
            vec![1, 0, n, pointer, n].into()
        } else {
            [vec![1, 0, n], words].concat().into()
        };
        let address = object.as_ptr() as usize;
        self.0.push(object);
        address
    }
}

/// The object at `path` (item indices from the root) in the built tree,
/// with its address.
fn at<'a>(heap_root: usize, root: &'a V, path: &[usize]) -> (usize, &'a V) {
    let mut address = heap_root;
    let mut v = root;
    for &i in path {
        let (Tuple(items) | List(items)) = v else { panic!("path {path:?} goes through a leaf") };
        // SAFETY: `address` is the fake container made for `v`, with at
        // least i + 1 items (the tree says so).
        address = unsafe {
            if matches!(v, Tuple(_)) {
                layout::tuple_item(address, i)
            } else {
                layout::list_item(address, i)
            }
        };
        v = &items[i];
    }
    (address, v)
}

/// What the walk reports: (object, container, index, slot).
type Stolen = (usize, usize, usize, Slot);

fn walk(format: &CStr, built: usize) -> Vec<Stolen> {
    let mut out = Vec::new();
    // SAFETY: `format` is a C string; `built` is a live (fake) object of
    // the shape the format builds; no interpreter is involved, so no GIL
    // is needed for these plain reads.
    unsafe { for_each_stolen(format.as_ptr() as usize, built, &mut |o, c, i, s| out.push((o, c, i, s))) };
    out
}

/// Formats with `N` units, the value built, and where the stolen
/// references are: (path of the container from the root, index).
#[allow(clippy::type_complexity)]
fn cases() -> Vec<(&'static CStr, V, Vec<(Vec<usize>, usize)>)> {
    vec![
        // One unit builds the value itself: nothing holds it but the result.
        (c"N", o(1), vec![]),
        // Two units build a tuple.
        (c"NN", Tuple(vec![o(1), o(2)]), vec![(vec![], 0), (vec![], 1)]),
        (c"(N)", Tuple(vec![o(1)]), vec![(vec![], 0)]),
        (c"[N]", List(vec![o(1)]), vec![(vec![], 0)]),
        (c"[iN]", List(vec![o(1), o(2)]), vec![(vec![], 1)]),
        // N steals, O does not.
        (c"(ON)", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        (c"(NO)", Tuple(vec![o(1), o(2)]), vec![(vec![], 0)]),
        (c"(NN)", Tuple(vec![o(1), o(2)]), vec![(vec![], 0), (vec![], 1)]),
        // A dict's values are not followed by position.
        (c"{s:O,s:N}", o(9), vec![]),
        (c"({s:N}N)", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        // Modifiers belong to the unit before them: `O&` is one value, and
        // so is each `#` form.
        (c"O&N", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        (c"(O&N)", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        (c"s#N", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        (c"y#N", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        (c"z#N", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        (c"u#N", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        (c"U#N", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        (c"(s#N)", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        (c"(s#y#z#N)", Tuple(vec![o(1), o(2), o(3), o(4)]), vec![(vec![], 3)]),
        (c"(sN)", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        // Separators and blanks are not units.
        (c"(O, N)", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        (c"(O:N)", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        (c"(O\tN)", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        (c" N , N ", Tuple(vec![o(1), o(2)]), vec![(vec![], 0), (vec![], 1)]),
        (c"(,,N,,)", Tuple(vec![o(1)]), vec![(vec![], 0)]),
        // Nested groups: each is the container of its own units.
        (c"((N))", Tuple(vec![Tuple(vec![o(1)])]), vec![(vec![0], 0)]),
        (c"[[N]]", List(vec![List(vec![o(1)])]), vec![(vec![0], 0)]),
        (
            c"(O(NO)[ON])",
            Tuple(vec![o(1), Tuple(vec![o(2), o(3)]), List(vec![o(4), o(5)])]),
            vec![(vec![1], 0), (vec![2], 1)],
        ),
        (
            c"N(iN)[N,(N)]",
            Tuple(vec![o(1), Tuple(vec![o(2), o(3)]), List(vec![o(4), Tuple(vec![o(5)])])]),
            vec![(vec![], 0), (vec![1], 1), (vec![2], 0), (vec![2, 1], 0)],
        ),
        // A code the walk does not know is one unit.
        (c"(iXN)", Tuple(vec![o(1), o(2), o(3)]), vec![(vec![], 2)]),
        // An unclosed group ends with the format.
        (c"(ON", Tuple(vec![o(1), o(2)]), vec![(vec![], 1)]),
        // What the object does not have is not reported: items past its
        // size, NULL items, and the units of a NULL group.
        (c"(NN)", Tuple(vec![o(1)]), vec![(vec![], 0)]),
        (c"(NN)", Tuple(vec![Null, o(2)]), vec![(vec![], 1)]),
        (c"(N(N))", Tuple(vec![o(1), Null]), vec![(vec![], 0)]),
    ]
}

#[test]
fn reports_exactly_the_values_n_units_put_in_tuples_and_lists() {
    layout::set_header_extra(0, 12);
    for (format, value, expected) in cases() {
        let mut heap = Heap::default();
        let built = heap.make(&value);
        let expected: Vec<Stolen> = expected
            .iter()
            .map(|(path, index)| {
                let (container, v) = at(built, &value, path);
                let slot = if matches!(v, List(_)) { Slot::ListIndex } else { Slot::TupleIndex };
                let (object, _) = at(built, &value, &[path.clone(), vec![*index]].concat());
                (object, container, *index, slot)
            })
            .collect();
        assert_eq!(walk(format, built), expected, "{format:?}");
        // A format with an `N` is never remembered as one without.
        assert!(!known_without_steals(format.as_ptr() as usize), "{format:?}");
    }
}

#[test]
fn formats_without_n_are_not_walked_and_are_remembered() {
    let _table = formats_table();
    for format in [c"(OO)", c"{s:O,s:O}", c"[iO]", c"O&", c"y#", c"s#", c"(s#)", c"(O(OO)[iO])", c"", c"n"] {
        let address = format.as_ptr() as usize;
        // No built object (0): nothing is read for a format without `N`.
        assert!(walk(format, 0).is_empty(), "{format:?}");
        assert!(known_without_steals(address), "{format:?}");
        // A second call is answered from the table alone.
        assert!(walk(format, 0).is_empty(), "{format:?}");
    }
}

#[test]
fn only_the_first_max_format_bytes_are_read() {
    let _table = formats_table();
    // An `N` past the bytes read is not seen: the format is remembered as
    // one without.
    let mut long = vec![b'O'; MAX_FORMAT];
    long.extend_from_slice(b"N\0");
    let format = CStr::from_bytes_with_nul(&long).unwrap();
    assert!(walk(format, 0).is_empty());
    assert!(known_without_steals(format.as_ptr() as usize));
    // One byte earlier, it is walked (a tuple of MAX_FORMAT items).
    layout::set_header_extra(0, 12);
    let mut long = vec![b'O'; MAX_FORMAT - 1];
    long.extend_from_slice(b"N\0");
    let format = CStr::from_bytes_with_nul(&long).unwrap();
    let mut heap = Heap::default();
    let built = heap.make(&Tuple((0..MAX_FORMAT).map(o).collect()));
    assert_eq!(
        walk(format, built),
        vec![(o_address(MAX_FORMAT - 1), built, MAX_FORMAT - 1, Slot::TupleIndex)]
    );
}

fn o_address(n: usize) -> usize {
    let Leaf(address) = o(n) else { unreachable!() };
    address
}

#[test]
fn the_slot_is_the_top_six_bits_of_the_hash() {
    // What the trampolines' gate computes too: `imul` by HASH, `shr` by SHIFT.
    assert_eq!(slot_of(0), 0);
    assert_eq!(slot_of(1), 39);
    assert_eq!(slot_of(2), 15);
    assert_eq!(slot_of(usize::MAX), 24);
    for format in [0x5555_5555_5555, 0x7fff_ffff_f000, 0x0040_1000, usize::MAX] {
        assert!(slot_of(format) < FORMATS_WITHOUT_STEALS.len());
    }
    assert_eq!(FORMATS_WITHOUT_STEALS.len(), 64);
}

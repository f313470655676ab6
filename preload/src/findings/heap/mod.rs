//! How many references the heap's holders make to chosen objects: every
//! object the garbage collector tracks, and everything reachable from them
//! or from the chosen objects that is a gc object it does not track (dicts
//! of atomic values, tuples of them), each traversed with its type's own
//! `tp_traverse`, as `gc.get_referents` does; and, of the objects met that
//! are not gc objects, a static type's dict is walked, and an object of a
//! type a watched extension defines (its deallocator is the extension's
//! code: a plain struct, with no `tp_traverse` to report what it holds) is
//! read conservatively, each word of its fixed part, and of the heap blocks
//! those words point at (`blocks`), that is a chosen object's address
//! counting. The interpreter's own non-gc objects are not
//! read that way: their words include borrowed pointers and caches (a 3.14
//! code object keeps one to an object it last saw).
//!
//! Written against `tp_traverse` rather than in Python: the walk needs a
//! map from each chosen object to its count, and with a million followed
//! objects Python's dict of ids alone took 180 MB; here the map is a
//! compact table of addresses, and no object is created or changed while
//! walking (no reference count is touched but the list's, so the forked
//! copy the check runs in shares the heap's pages instead of copying them).
//!
//! Nothing is freed during the walk: it runs no Python code. Every object
//! is traversed or read at most once, so the walk ends.

mod blocks;
mod chosen;

use crate::interpose::objects::Watched;
use crate::python::api::{api, export, Api, PyObject};
use crate::python::{layout, runtime};
use crate::sys::memory::Readable;
use rustc_hash::{FxHashMap, FxHashSet};
use std::ffi::{c_int, c_void};

type Visit = unsafe extern "C" fn(*mut PyObject, *mut c_void) -> c_int;
type Traverse = unsafe extern "C" fn(*mut PyObject, Visit, *mut c_void) -> c_int;

pub use chosen::Chosen;

/// Types whose objects hold no references (ints, strs, bytes and bools by
/// their flags; these by address): not read.
struct Atomic {
    float: usize,
    complex: usize,
    none: usize,
}

impl Atomic {
    /// Whether objects of `type_object` hold no references.
    ///
    /// # Safety
    /// `type_object` is a live type object.
    unsafe fn contains(&self, type_object: usize) -> bool {
        const FLAGS: u64 = layout::LONG_SUBCLASS | layout::BYTES_SUBCLASS | layout::UNICODE_SUBCLASS;
        // SAFETY: caller's contract.
        let flags = unsafe { layout::type_flags(type_object) };
        flags & FLAGS != 0 || [self.float, self.complex, self.none].contains(&type_object)
    }
}

/// Code objects are not gc objects, yet hold the strs and tuples they were
/// made with (`co_filename`, `co_name`, `co_consts`, ...): read for the
/// atomic objects they name and the tuples they point at.
struct Code {
    code: usize,
    tuple: usize,
}

/// `dict`'s own `tp_traverse`, which visits a dict's values, and its keys
/// unless they are all str (or the table is split).
struct DictTraverse(Option<Traverse>);

/// The weak reference types: their fixed part points at an object they do
/// not hold.
struct Weak([usize; 3]);

struct Walk<'a> {
    api: &'static Api,
    chosen: &'a Chosen,
    counts: &'a mut [u32],
    atomic: Atomic,
    dict_traverse: DictTraverse,
    code: Code,
    weak: Weak,
    /// Per type met: whether its objects' fixed part is read (not a weak
    /// reference type).
    readable_types: FxHashMap<usize, bool>,
    /// While an object is traversed: the chosen objects it visited, when
    /// its fixed part names one.
    visits_now: Option<Vec<usize>>,
    watched: Vec<Watched>,
    /// The readable memory, for the blocks extensions' objects point at.
    memory: &'a Readable,
    /// Per type met: whether a watched extension defines it.
    extension_types: FxHashMap<usize, bool>,
    /// The module type, and the module definitions the watched extensions
    /// registered (for their modules' state).
    module_type: usize,
    module_defs: Vec<usize>,
    /// Objects met that the collector does not track, handled once each.
    seen: FxHashSet<usize>,
    todo: Vec<usize>,
}

/// Adds to `counts[i]` the references holders make to each chosen object
/// (`chosen.get(object) == Some(i)`). `None` if the interpreter could not be asked
/// for its gc objects.
///
/// # Safety
/// The caller holds the GIL; every chosen object is alive.
pub unsafe fn count_holders(chosen: &Chosen, counts: &mut [u32], memory: &Readable) -> Option<()> {
    let api = api()?;
    let atomic = Atomic {
        float: export(c"PyFloat_Type"),
        complex: export(c"PyComplex_Type"),
        none: export(c"_PyNone_Type"),
    };
    let dict_type = export(c"PyDict_Type");
    // SAFETY: `PyDict_Type` is a live type; its tp_traverse has this signature.
    let dict_traverse = DictTraverse(unsafe {
        (dict_type != 0)
            .then(|| layout::traverse_of(dict_type))
            .filter(|&t| t != 0)
            .map(|t| std::mem::transmute::<usize, Traverse>(t))
    });
    let mut walk = Walk {
        api,
        chosen,
        counts,
        atomic,
        dict_traverse,
        code: Code { code: export(c"PyCode_Type"), tuple: export(c"PyTuple_Type") },
        weak: Weak([
            export(c"_PyWeakref_RefType"),
            export(c"_PyWeakref_ProxyType"),
            export(c"_PyWeakref_CallableProxyType"),
        ]),
        readable_types: FxHashMap::default(),
        visits_now: None,
        watched: crate::interpose::objects::watched(),
        memory,
        extension_types: FxHashMap::default(),
        module_type: export(c"PyModule_Type"),
        module_defs: crate::follow::methods::module_defs(),
        seen: FxHashSet::default(),
        todo: Vec::new(),
    };
    // What a chosen object holds is held (only the root of a leaked
    // structure is a leak): untracked chosen containers are walked too.
    for &object in chosen.objects() {
        // SAFETY: chosen objects are alive (caller's contract).
        unsafe { walk.meet(object) };
    }
    // A single-phase module's saved copy of its dict (the interpreter
    // keeps it in the definition, a C static) holds what the module's dict
    // holds; a dict of atomic values is untracked, reachable from nothing.
    for def in crate::follow::methods::module_defs() {
        // SAFETY: a definition a watched extension registered: static data
        // of a loaded extension; its copy, when set, is a live dict.
        unsafe {
            let copy = layout::module_def_copy(def);
            if copy != 0 {
                walk.meet(copy);
            }
        }
    }
    // The watched extensions' static data (C statics): each word that is a
    // chosen object's address holds it, as does each such word of a heap
    // block it points at; the code objects there (Cython keeps its
    // functions' code objects in statics) are read.
    // SAFETY: only readable words are read; `static_roots` checks that a
    // word is a code object before it is read.
    unsafe { walk.static_roots() };
    // The frames of every thread (a daemon thread blocked at exit, the
    // threads running during a periodic check) hold their locals; from
    // 3.11 they are no objects until asked for, and so no traversal sees
    // them: made into frame objects here, they are walked.
    // SAFETY: the GIL is held (caller's contract).
    let frames = unsafe { thread_frames() };
    let mut locals = Vec::new();
    for &frame in &frames {
        // SAFETY: a frame object this walk holds; an untracked one (a
        // running function's) is queued. From 3.11 the traversal of a
        // running function's frame leaves its locals out: each is counted
        // here, read from a dict of them (itself walked: it holds them too).
        unsafe {
            walk.meet(frame);
            if let Some(dict) = locals_of(api, frame) {
                let (mut at, mut key, mut value) = (0isize, std::ptr::null_mut(), std::ptr::null_mut());
                while (api.dict_next)(dict as *mut PyObject, &mut at, &mut key, &mut value) != 0 {
                    walk.count(value as usize);
                    walk.meet(value as usize);
                }
                walk.meet(dict);
                locals.push(dict);
            }
        }
    }
    let walked = runtime::with_gc_objects(|list| {
        // SAFETY: the list holds every tracked object while it is read
        // (`gc.get_objects` leaves the list itself out).
        unsafe {
            for i in 0..layout::size(list) {
                walk.traverse(layout::list_item(list, i));
            }
            while let Some(object) = walk.todo.pop() {
                walk.traverse(object);
            }
        }
    });
    for object in locals.into_iter().chain(frames) {
        // SAFETY: new references this walk took, each given back once.
        unsafe { (api.decref)(object as *mut PyObject) };
    }
    walked
}

/// A new dict of the locals of a running function's `frame` (3.11+, where
/// its traversal leaves them out), or `None`.
///
/// # Safety
/// The GIL is held; `frame` is a live frame object.
unsafe fn locals_of(api: &Api, frame: usize) -> Option<usize> {
    type Unary = unsafe extern "C" fn(usize) -> usize;
    type Update = unsafe extern "C" fn(usize, usize) -> std::ffi::c_int;
    if !layout::locals_left_out_of_frames() {
        return None;
    }
    let (get_locals, update) = (export(c"PyFrame_GetLocals"), export(c"PyDict_Update"));
    if get_locals == 0 || update == 0 {
        return None;
    }
    // SAFETY: the interpreter's functions of these names and signatures;
    // the GIL is held; every result is checked and released once. An error
    // they raise is cleared (the check runs where none is pending).
    unsafe {
        let mapping = std::mem::transmute::<usize, Unary>(get_locals)(frame);
        if mapping == 0 {
            (api.err_clear)();
            return None;
        }
        // A dict on 3.11 and 3.12 (the frame's own f_locals), a proxy from
        // 3.13: copied into a dict of this walk's either way.
        let dict = (api.dict_new)() as usize;
        let copied = dict != 0 && std::mem::transmute::<usize, Update>(update)(dict, mapping) == 0;
        (api.decref)(mapping as *mut PyObject);
        if !copied {
            (api.err_clear)();
            if dict != 0 {
                (api.decref)(dict as *mut PyObject);
            }
            return None;
        }
        Some(dict)
    }
}

/// New references to the frame objects of every thread's Python stack,
/// innermost to outermost (empty where the interpreter lacks the calls).
///
/// # Safety
/// The GIL is held.
unsafe fn thread_frames() -> Vec<usize> {
    type Interpreter = unsafe extern "C" fn() -> usize;
    type Next = unsafe extern "C" fn(usize) -> usize;
    let [interpreter, head, next, frame_of, back] = [
        c"PyInterpreterState_Get",
        c"PyInterpreterState_ThreadHead",
        c"PyThreadState_Next",
        c"PyThreadState_GetFrame",
        c"PyFrame_GetBack",
    ]
    .map(export);
    let mut frames = Vec::new();
    if [interpreter, head, next, frame_of, back].contains(&0) {
        return frames;
    }
    // SAFETY: the interpreter's own functions of these names and C
    // signatures (the first takes nothing, the others a pointer, and each
    // returns one); with the GIL held the list of thread states is stable;
    // frames are new references.
    unsafe {
        let interpreter = std::mem::transmute::<usize, Interpreter>(interpreter);
        let [head, next, frame_of, back] =
            [head, next, frame_of, back].map(|f| std::mem::transmute::<usize, Next>(f));
        let mut thread = head(interpreter());
        while thread != 0 && frames.len() < MAX_FRAMES {
            let mut frame = frame_of(thread);
            while frame != 0 && frames.len() < MAX_FRAMES {
                frames.push(frame);
                frame = back(frame);
            }
            thread = next(thread);
        }
    }
    frames
}

/// Frames made into objects for a walk, at most.
const MAX_FRAMES: usize = 100_000;

impl Walk<'_> {
    /// Handles an object met the first time that the collector does not
    /// track: a gc object is queued for its traversal (a tracked one is in
    /// the list already); another is read.
    ///
    /// # Safety
    /// `object` is alive; the GIL is held.
    unsafe fn meet(&mut self, object: usize) {
        // SAFETY: caller's contract. A gc object is one of a gc type for
        // which the type's `tp_is_gc` (if any) agrees: a static type object
        // is not one, and its `tp_traverse` must not be called.
        unsafe {
            let pointer = object as *mut PyObject;
            if (self.api.is_gc)(pointer) != 0 {
                if (self.api.gc_is_tracked)(pointer) == 0 && self.seen.insert(object) {
                    self.todo.push(object);
                }
                return;
            }
            let type_object = layout::type_of(object);
            // A subclass of str, bytes or int a watched extension defines
            // may hold references in fields of its own (multidict's `istr`
            // keeps its canonical str): read like its other types.
            let atomic = self.atomic.contains(type_object) && !self.defined_by_extension(type_object);
            if atomic || !self.seen.insert(object) {
                return;
            }
            if layout::type_flags(type_object) & layout::TYPE_SUBCLASS != 0 {
                // A static type: its dict may hold atomic values only (then
                // untracked, reachable from nothing else). Its metatype may
                // be an extension's, with fields of its own (read below).
                let dict = layout::type_dict(object);
                if dict != 0 {
                    self.count(dict);
                    self.meet(dict);
                }
            }
            if type_object == self.code.code && type_object != 0 {
                self.read_code(object, type_object);
            } else if self.defined_by_extension(type_object) {
                for object in self.named_by(object, type_object) {
                    self.count(object);
                }
            }
        }
    }

    /// Counts what the watched extensions' static data points at, and what
    /// the heap blocks it points at hold; reads the code objects it keeps.
    ///
    /// # Safety
    /// The GIL is held.
    unsafe fn static_roots(&mut self) {
        let ranges: Vec<std::ops::Range<usize>> =
            self.watched.iter().flat_map(|w| w.writable.iter().flat_map(|r| self.memory.within(r))).collect();
        for range in ranges {
            let start = (range.start + 7) & !7;
            let words = range.end.saturating_sub(start) / 8;
            // SAFETY: the words lie in one readable mapping of a loaded
            // object, aligned; reading them has no side effects.
            let data = unsafe { std::slice::from_raw_parts(start as *const usize, words) };
            for &word in data {
                if self.count(word) {
                    continue;
                }
                // Only code objects are walked from here: statics also keep
                // borrowed pointers, which may dangle, while a code object
                // is made once and kept (Cython caches them there).
                if self.is_object(word) {
                    // SAFETY: the header is readable (`is_object`).
                    if unsafe { layout::type_of(word) } == self.code.code && self.seen.insert(word) {
                        // SAFETY: a code object a static keeps is alive.
                        unsafe { self.read_code(word, self.code.code) };
                    }
                    continue;
                }
                // A heap block a static points at (a cache of the
                // extension's, as orjson keeps its keys): its words that
                // are chosen objects' addresses hold them.
                // SAFETY: only readable memory is read (`block_words`).
                if let Some(block) = unsafe { blocks::block_words(word, self.memory) } {
                    for &held in block {
                        self.count(held);
                    }
                }
            }
        }
    }

    /// Whether `word` is plausibly an object's address: readable, its type
    /// a ready type object whose own type is a type.
    fn is_object(&self, word: usize) -> bool {
        const READY: u64 = 1 << 12;
        let readable = |address: usize| address.is_multiple_of(8) && self.memory.contains(address, 16);
        if word < 4096 || !readable(word) {
            return false;
        }
        // SAFETY: each header read is checked readable first.
        unsafe {
            let type_object = layout::type_of(word);
            if !readable(type_object) || !self.memory.contains(type_object, 400) {
                return false;
            }
            let metatype = layout::type_of(type_object);
            readable(metatype)
                && self.memory.contains(metatype, 400)
                && layout::type_flags(metatype) & layout::TYPE_SUBCLASS != 0
                && layout::type_flags(type_object) & READY != 0
        }
    }

    /// A code object's fields: the atomic chosen objects they name count
    /// (its other words may be caches), the tuples they point at are walked.
    ///
    /// # Safety
    /// `code` is a live code object of type `code_type`; the GIL is held.
    unsafe fn read_code(&mut self, code: usize, code_type: usize) {
        // SAFETY: caller's contract: the fixed part lies inside the object.
        for &word in unsafe { fixed_part(code, layout::basicsize(code_type)) } {
            if !self.memory.contains(word, 16) {
                continue;
            }
            // SAFETY: the header words are readable (checked above); a
            // word whose type field is the tuple type is a tuple.
            let type_object = unsafe { layout::type_of(word) };
            if type_object == self.code.tuple {
                // A tuple field (`co_consts`, `co_names`, ...) is owned.
                self.count(word);
                // SAFETY: a tuple the code object holds is alive.
                unsafe { self.meet(word) };
            } else if self.chosen.contains(word) {
                // SAFETY: a chosen object is alive, and so is its type.
                if unsafe { self.atomic.contains(type_object) } {
                    self.count(word);
                }
            }
        }
    }

    /// Whether a watched extension defines `type_object` (or the base of
    /// a class made from it): its deallocator is the extension's code.
    ///
    /// # Safety
    /// `type_object` is a live type object.
    unsafe fn defined_by_extension(&mut self, type_object: usize) -> bool {
        if let Some(&known) = self.extension_types.get(&type_object) {
            return known;
        }
        // SAFETY: caller's contract.
        let dealloc = unsafe { crate::follow::provenance::deaths::final_dealloc(type_object) };
        let known = self.watched.iter().any(|w| w.contains(dealloc));
        self.extension_types.insert(type_object, known);
        known
    }

    /// Counts one reference to `object` if it is chosen; says whether it is.
    fn count(&mut self, object: usize) -> bool {
        let Some(i) = self.chosen.get(object) else { return false };
        self.counts[i] += 1;
        true
    }

    /// Counts what `object` refers to.
    ///
    /// # Safety
    /// `object` is alive; the GIL is held.
    unsafe fn traverse(&mut self, object: usize) {
        // SAFETY: a live object's type is alive; its tp_traverse, when set,
        // has this signature and only calls `visit`.
        unsafe {
            let type_object = layout::type_of(object);
            let traverse = layout::traverse_of(type_object);
            if traverse == 0 {
                return;
            }
            let traverse: Traverse = std::mem::transmute(traverse);
            let named = self.named_by(object, type_object);
            self.visits_now = (!named.is_empty()).then(Vec::new);
            traverse(object as *mut PyObject, visit, self as *mut Walk as *mut c_void);
            if let Some(visited) = self.visits_now.take() {
                self.count_unreported(&named, &visited);
            }
            if layout::type_flags(type_object) & layout::DICT_SUBCLASS != 0 {
                self.count_skipped_keys(object);
            }
            if type_object == self.module_type && type_object != 0 {
                self.count_untraversed_state(object);
            }
        }
    }

    /// The chosen objects whose addresses are words of `object`'s fixed
    /// part (after its header): fields that may hold them; for a type a
    /// watched extension defines, also the words of the heap blocks its
    /// fixed part points at (out-of-line tables and arrays).
    ///
    /// # Safety
    /// `object` is alive, of type `type_object`.
    unsafe fn named_by(&mut self, object: usize, type_object: usize) -> Vec<usize> {
        let readable = *self.readable_types.entry(type_object).or_insert_with(|| {
            // SAFETY: a live type's bases are alive.
            unsafe { !self.weak.is_base_of(type_object) }
        });
        if !readable {
            return Vec::new();
        }
        // SAFETY: caller's contract: the fixed part lies inside the object.
        let words = unsafe { fixed_part(object, layout::basicsize(type_object)) };
        let mut named: Vec<usize> = words.iter().copied().filter(|&w| self.chosen.contains(w)).collect();
        // SAFETY: forwarded.
        if unsafe { self.defined_by_extension(type_object) } {
            for &word in words.iter().filter(|&&w| !self.chosen.contains(w)) {
                // SAFETY: only readable memory is read (`block_words`).
                if let Some(block) = unsafe { blocks::block_words(word, self.memory) } {
                    named.extend(block.iter().copied().filter(|&w| self.chosen.contains(w)));
                }
            }
        }
        named
    }

    /// A traversal need not report a reference that cannot make a cycle
    /// (a heap type's name, a str or int field of an extension's object)
    /// or a field its type forgot: each chosen object named more times by
    /// the fixed part than the traversal visited it gets the difference.
    fn count_unreported(&mut self, named: &[usize], visited: &[usize]) {
        let times = |list: &[usize], object: usize| list.iter().filter(|&&o| o == object).count();
        let mut done: Vec<usize> = Vec::new();
        for &object in named {
            if done.contains(&object) {
                continue;
            }
            done.push(object);
            for _ in times(visited, object)..times(named, object) {
                self.count(object);
            }
        }
    }

    /// A dict's own traversal leaves out its keys when they are all str (or
    /// the table is split); a subclass's traversal may visit them elsewhere
    /// (an `OrderedDict`'s list of nodes holds references of its own). So
    /// the dict's own traversal is asked again, counting only: when it
    /// visited fewer than a key and a value per item, each chosen key is
    /// counted here, read through the C-API (no code of a subclass runs).
    /// Those keys are strs: nothing to walk into.
    ///
    /// # Safety
    /// `dict` is a live dict; the GIL is held.
    unsafe fn count_skipped_keys(&mut self, dict: usize) {
        let Some(dict_traverse) = self.dict_traverse.0 else { return };
        let mut visits = 0usize;
        // SAFETY: caller's contract; `count_visit` only counts.
        unsafe {
            dict_traverse(dict as *mut PyObject, count_visit, &mut visits as *mut usize as *mut c_void)
        };
        let mut items = 0usize;
        let (mut keys, mut all_keys) = (Vec::new(), Vec::new());
        let (mut at, mut key, mut value) = (0isize, std::ptr::null_mut(), std::ptr::null_mut());
        // SAFETY: caller's contract; PyDict_Next reads the table in place.
        while unsafe { (self.api.dict_next)(dict as *mut PyObject, &mut at, &mut key, &mut value) } != 0 {
            items += 1;
            if self.chosen.contains(key as usize) {
                keys.push(key as usize);
            }
            all_keys.push(key as usize);
        }
        if visits < 2 * items {
            for key in keys {
                self.count(key);
            }
            // The keys the traversal skipped are met here: a str subclass
            // of an extension's holds what its fields point at.
            for key in all_keys {
                // SAFETY: a key of a live dict is alive.
                unsafe { self.meet(key) };
            }
        }
    }

    /// A watched extension's module whose definition has state and no
    /// `m_traverse` holds what its state points at unreported: each word of
    /// the state counts, as does each word of a heap block it points at.
    ///
    /// # Safety
    /// `module` is a live module object; the GIL is held.
    unsafe fn count_untraversed_state(&mut self, module: usize) {
        type Unary = unsafe extern "C" fn(usize) -> usize;
        let (get_def, get_state) = (export(c"PyModule_GetDef"), export(c"PyModule_GetState"));
        if get_def == 0 || get_state == 0 {
            return;
        }
        // SAFETY: the interpreter's functions of these names and signatures
        // (a module in, a pointer out); the state is `m_size` bytes, read
        // only where readable.
        unsafe {
            let def = std::mem::transmute::<usize, Unary>(get_def)(module);
            if def == 0 || !self.module_defs.contains(&def) {
                return;
            }
            let (size, traverse) = layout::module_def_size_and_traverse(def);
            let state = std::mem::transmute::<usize, Unary>(get_state)(module);
            if traverse != 0 || size <= 0 || state == 0 || !self.memory.contains(state, size as usize) {
                return;
            }
            let words = std::slice::from_raw_parts(state as *const usize, size as usize / 8);
            for &word in words {
                if self.count(word) || self.is_object(word) {
                    continue;
                }
                if let Some(block) = blocks::block_words(word, self.memory) {
                    for &held in block {
                        self.count(held);
                    }
                }
            }
        }
    }

    /// One reference a holder makes to `object`.
    ///
    /// # Safety
    /// `object` is alive (a holder refers to it); the GIL is held.
    unsafe fn reference(&mut self, object: usize) {
        if object == 0 {
            return;
        }
        if self.count(object) {
            if let Some(visited) = &mut self.visits_now {
                visited.push(object);
            }
        }
        // SAFETY: forwarded.
        unsafe { self.meet(object) };
    }
}

/// The words of an object's fixed part after its header (refcount, type).
///
/// # Safety
/// `object` is alive and at least `size` bytes long.
unsafe fn fixed_part<'a>(object: usize, size: usize) -> &'a [usize] {
    let header = layout::refcount_offset() + 16;
    let words = size.saturating_sub(header) / 8;
    // SAFETY: the words lie inside the live object (caller's contract); the
    // header is word-aligned, so they are too.
    unsafe { std::slice::from_raw_parts((object + header) as *const usize, words) }
}

impl Weak {
    /// Whether `type_object` is a weak reference type or derives from one.
    ///
    /// # Safety
    /// `type_object` is a live type object.
    unsafe fn is_base_of(&self, mut type_object: usize) -> bool {
        while type_object != 0 {
            if self.0.contains(&type_object) {
                return true;
            }
            // SAFETY: a live type's base is alive.
            type_object = unsafe { layout::base_of(type_object) };
        }
        false
    }
}

/// A `visitproc` that only counts its calls.
unsafe extern "C" fn count_visit(_: *mut PyObject, visits: *mut c_void) -> c_int {
    // SAFETY: `visits` is the counter `count_skipped_keys` passed.
    unsafe { *(visits as *mut usize) += 1 };
    0
}

/// The `visitproc` handed to `tp_traverse`.
unsafe extern "C" fn visit(object: *mut PyObject, walk: *mut c_void) -> c_int {
    // SAFETY: `walk` is the `Walk` that `traverse` passed for this call; a
    // visited object is alive (its holder refers to it).
    unsafe { (*(walk as *mut Walk)).reference(object as usize) };
    0
}

//! The readers run on the objects of the test process itself: the test
//! executable, libc, the loader and the vdso, none of which is ever
//! unloaded, so their tables stay mapped while the tests read them.

use super::*;

fn objects() -> Vec<Loaded> {
    loaded_objects()
}

fn executable() -> Loaded {
    let all = objects();
    assert_eq!(all[0].path, "", "the executable comes first, without a name");
    all[0].clone()
}

fn named(prefix: &str) -> Loaded {
    objects()
        .into_iter()
        .find(|o| o.basename().starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix}* loaded"))
}

fn address_of(name: &CStr) -> usize {
    // SAFETY: a C string; RTLD_DEFAULT looks the symbol up in the global scope.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
    assert_ne!(address, 0, "{name:?}");
    address
}

/// Every import of `object` named `name`.
fn imports_of(object: &Loaded, name: &[u8]) -> Vec<(usize, bool)> {
    // SAFETY: the objects of these tests stay loaded (module comment).
    let dynamic = unsafe { object.dynamic() }.expect("a dynamic section");
    let mut found = Vec::new();
    // SAFETY: as above.
    unsafe {
        dynamic.for_each_import(|import| {
            if import.name == name {
                found.push((import.slot as usize, import.undefined));
            }
        })
    };
    found
}

fn within(ranges: &[Range<usize>], inner: &Range<usize>) -> bool {
    ranges.iter().any(|r| r.start <= inner.start && inner.end <= r.end)
}

#[test]
fn lists_the_executable_libc_the_loader_and_the_vdso() {
    let all = objects();
    assert_eq!(all[0].path, "");
    for prefix in ["libc.so", "ld-linux-x86-64.so", "linux-vdso.so"] {
        assert_eq!(all.iter().filter(|o| o.basename().starts_with(prefix)).count(), 1, "{prefix}");
    }
    // Each object has a load range, and an identity of its own.
    assert!(all.iter().all(|o| !o.load_ranges().is_empty()));
    let mut keys: Vec<_> = all.iter().map(Loaded::key).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), all.len());
}

#[test]
fn basename_is_after_the_last_slash() {
    let at = |path: &str| Loaded { path: path.into(), bias: 0, phdrs: Vec::new() }.basename().to_string();
    assert_eq!(at("/usr/lib/x86_64-linux-gnu/libc.so.6"), "libc.so.6");
    assert_eq!(at("_fixture.cpython-312-x86_64-linux-gnu.so"), "_fixture.cpython-312-x86_64-linux-gnu.so");
    assert_eq!(at("/trailing/"), "");
    assert_eq!(at(""), "");
}

#[test]
fn contains_says_which_object_an_address_is_in() {
    let all = objects();
    let here = lists_the_executable_libc_the_loader_and_the_vdso as fn() as usize;
    let malloc = address_of(c"malloc");
    let holders = |address: usize| -> Vec<String> {
        all.iter().filter(|o| o.contains(address)).map(|o| o.basename().to_string()).collect()
    };
    assert_eq!(holders(here), [""]);
    assert_eq!(holders(malloc).len(), 1);
    assert!(holders(malloc)[0].starts_with("libc.so"), "{:?}", holders(malloc));
    assert!(holders(0x10).is_empty());
}

fn phdr(kind: elf::ProgramType, flags: u32, vaddr: u64, memsz: u64) -> libc::Elf64_Phdr {
    libc::Elf64_Phdr {
        p_type: kind.0,
        p_flags: flags,
        p_offset: 0,
        p_vaddr: vaddr,
        p_paddr: vaddr,
        p_filesz: memsz,
        p_memsz: memsz,
        p_align: 0x1000,
    }
}

#[test]
fn ranges_are_bias_plus_vaddr_for_memsz() {
    let (r, rw) = (elf::PF_R.0, elf::PF_R.0 | elf::PF_W.0);
    let object = Loaded {
        path: "/x/a.so".into(),
        bias: 0x7f00_0000_0000,
        phdrs: vec![
            phdr(elf::PT_LOAD, r | elf::PF_X.0, 0, 0x1800),
            phdr(elf::PT_LOAD, rw, 0x2e00, 0x300),
            phdr(elf::PT_GNU_RELRO, r, 0x2e00, 0x200),
            phdr(elf::PT_DYNAMIC, rw, 0x2e40, 0x1c0),
            phdr(elf::PT_NOTE, r, 0x200, 0x24),
        ],
    };
    let b = object.bias;
    assert_eq!(object.load_ranges(), [b..b + 0x1800, b + 0x2e00..b + 0x3100]);
    assert_eq!(object.writable_ranges(), vec![(b + 0x2e00)..(b + 0x3100)]);
    assert_eq!(object.relro(), Some(b + 0x2e00..b + 0x3000));
    assert_eq!(object.key(), (b, b + 0x2e40));
    for (address, inside) in [
        (b, true),
        (b + 0x17ff, true),
        (b + 0x1800, false),
        (b + 0x2dff, false),
        (b + 0x30ff, true),
        (b + 0x3100, false),
    ] {
        assert_eq!(object.contains(address), inside, "{address:#x}");
    }
    let bare = Loaded { phdrs: vec![phdr(elf::PT_LOAD, r, 0, 0x1000)], ..object };
    assert_eq!((bare.relro(), bare.key()), (None, (b, 0)));
    // SAFETY: no PT_DYNAMIC: nothing is read.
    assert!(unsafe { bare.dynamic() }.is_none());
}

#[test]
fn relro_and_writable_ranges_lie_inside_the_load_ranges() {
    for object in [executable(), named("libc.so"), named("ld-linux-x86-64.so")] {
        let loads = object.load_ranges();
        let relro = object.relro().unwrap_or_else(|| panic!("{}: no PT_GNU_RELRO", object.basename()));
        assert!(!relro.is_empty());
        assert!(within(&loads, &relro), "{}: {relro:x?} not in {loads:x?}", object.basename());
        let writable = object.writable_ranges();
        assert!(!writable.is_empty());
        assert!(writable.iter().all(|w| within(&loads, w)));
        // What is made read-only after relocation was written by the loader.
        assert!(within(&writable, &relro), "{}", object.basename());
    }
}

#[test]
fn dynamic_tables_are_found_inside_the_object() {
    // The vdso's d_ptr values are not relocated by the loader: the bias is
    // added to them.
    for object in [executable(), named("libc.so"), named("ld-linux-x86-64.so"), named("linux-vdso.so")] {
        let loads = object.load_ranges();
        // SAFETY: these objects stay loaded (module comment).
        let d = unsafe { object.dynamic() }.unwrap_or_else(|| panic!("{}: no dynamic", object.basename()));
        assert_eq!(d.bias, object.bias);
        for (what, address) in [("strtab", d.strtab), ("symtab", d.symtab), ("dynamic", object.key().1)] {
            assert!(loads.iter().any(|r| r.contains(&address)), "{}: {what} {address:#x}", object.basename());
        }
        for (what, table, size) in [("jmprel", d.jmprel, d.jmprel_size), ("rela", d.rela, d.rela_size)] {
            if table != 0 {
                assert!(within(&loads, &(table..table + size)), "{}: {what}", object.basename());
            }
        }
    }
}

#[test]
fn relocated_adds_the_bias_only_below_it() {
    let object = Loaded { path: String::new(), bias: 0x7f00_0000_0000, phdrs: Vec::new() };
    assert_eq!(object.relocated(0x3e00), 0x7f00_0000_3e00);
    assert_eq!(object.relocated(0x7f00_0000_3e00), 0x7f00_0000_3e00);
    let unbiased = Loaded { bias: 0, ..object };
    assert_eq!(unbiased.relocated(0x40_3e00), 0x40_3e00);
}

#[test]
fn the_executable_imports_malloc_and_its_slot_holds_libcs() {
    let exe = executable();
    let found = imports_of(&exe, b"malloc");
    assert!(!found.is_empty(), "malloc is imported");
    let malloc = address_of(c"malloc");
    for (slot, undefined) in found {
        assert!(undefined, "the executable does not define malloc");
        assert!(exe.contains(slot));
        assert!(exe.writable_ranges().iter().any(|w| w.contains(&slot)));
        // Bound at start (Rust links executables with -z now): read-only
        // after relocation.
        assert!(exe.relro().is_some_and(|r| r.contains(&slot)));
        // SAFETY: a GOT slot of a loaded object: mapped, aligned, readable.
        assert_eq!(unsafe { *(slot as *const usize) }, malloc);
    }
}

#[test]
fn libc_imports_what_it_defines_for_interposition_and_what_the_loader_defines() {
    let libc = named("libc.so");
    // libc defines malloc, and still reaches it through its GOT, where a
    // preloaded malloc would interpose.
    let found = imports_of(&libc, b"malloc");
    assert!(!found.is_empty());
    let malloc = address_of(c"malloc");
    for (slot, undefined) in found {
        assert!(!undefined, "libc defines malloc");
        // SAFETY: a GOT slot of libc: mapped, aligned, readable.
        assert_eq!(unsafe { *(slot as *const usize) }, malloc);
        assert!(libc.relro().is_some_and(|r| r.contains(&slot)), "GLOB_DAT slots are in RELRO");
    }
    // calloc too, through the PLT (DT_JMPREL, a JUMP_SLOT).
    let found = imports_of(&libc, b"calloc");
    assert_eq!(found.len(), 1);
    assert!(!found[0].1);
    // SAFETY: as above.
    assert_eq!(unsafe { *(found[0].0 as *const usize) }, address_of(c"calloc"));
    // __libc_stack_end is the loader's.
    let found = imports_of(&libc, b"__libc_stack_end");
    assert_eq!(found.len(), 1);
    let (slot, undefined) = found[0];
    assert!(undefined);
    // SAFETY: as above.
    assert_eq!(unsafe { *(slot as *const usize) }, address_of(c"__libc_stack_end"));
    assert!(named("ld-linux-x86-64.so").contains(address_of(c"__libc_stack_end")));
    // No import is nameless, none lies outside the object.
    // SAFETY: libc stays loaded.
    let dynamic = unsafe { libc.dynamic() }.unwrap();
    let mut count = 0;
    // SAFETY: as above.
    unsafe {
        dynamic.for_each_import(|import| {
            count += 1;
            assert!(!import.name.is_empty());
            assert!(libc.contains(import.slot as usize));
        })
    };
    assert!(count > 10, "{count} imports");
}

#[test]
fn no_search_path_without_runpath_or_rpath() {
    for object in [executable(), named("libc.so")] {
        // SAFETY: these objects stay loaded.
        let dynamic = unsafe { object.dynamic() }.unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { dynamic.search_path() }, None, "{}", object.basename());
    }
}

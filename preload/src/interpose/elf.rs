//! Reading a loaded object's ELF tables in memory: program headers, the
//! dynamic section, and the relocations that fill its GOT.
//!
//! Terms: `bias` is the load bias (`dlpi_addr`): an address the object's
//! headers state plus `bias` is where it is in this process.

use object::elf::{self, Dyn64, Rela64, Sym64};
use object::endian::LittleEndian as LE;
use std::ffi::CStr;
use std::ops::Range;

/// One loaded object, as `dl_iterate_phdr` describes it (copied, so it can
/// be used after the iteration).
#[derive(Clone, Debug)]
pub struct Loaded {
    /// Path as the loader recorded it; empty for the main executable.
    pub path: String,
    pub bias: usize,
    pub phdrs: Vec<libc::Elf64_Phdr>,
}

/// Every object loaded right now, in the loader's order.
pub fn loaded_objects() -> Vec<Loaded> {
    unsafe extern "C" fn collect(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: `data` is the `&mut Vec<Loaded>` passed below, alive for
        // the whole iteration; `info` is valid during this callback.
        let (out, info) = unsafe { (&mut *(data as *mut Vec<Loaded>), &*info) };
        let path = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: the loader's names are NUL-terminated strings.
            unsafe { CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned()
        };
        let phdrs = if info.dlpi_phdr.is_null() {
            Vec::new()
        } else {
            // SAFETY: the loader guarantees `dlpi_phnum` headers at `dlpi_phdr`.
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) }.to_vec()
        };
        out.push(Loaded { path, bias: info.dlpi_addr as usize, phdrs });
        0
    }
    let mut out: Vec<Loaded> = Vec::new();
    // SAFETY: `collect` only touches `out` through `data`, and `out`
    // outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(collect), (&mut out as *mut Vec<Loaded>).cast()) };
    out
}

impl Loaded {
    pub fn basename(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    fn segments(&self, kind: elf::ProgramType) -> impl Iterator<Item = Range<usize>> + '_ {
        self.phdrs.iter().filter(move |p| p.p_type == kind.0).map(|p| {
            let start = self.bias + p.p_vaddr as usize;
            start..start + p.p_memsz as usize
        })
    }

    /// Address ranges of its loadable segments.
    pub fn load_ranges(&self) -> Vec<Range<usize>> {
        self.segments(elf::PT_LOAD).collect()
    }

    /// Address ranges of its writable loadable segments (`.data`, `.bss`).
    pub fn writable_ranges(&self) -> Vec<Range<usize>> {
        self.ranges_with(elf::PF_W.0)
    }

    /// Address ranges of its executable loadable segments (`.text`).
    pub fn executable_ranges(&self) -> Vec<Range<usize>> {
        self.ranges_with(elf::PF_X.0)
    }

    fn ranges_with(&self, flag: u32) -> Vec<Range<usize>> {
        self.phdrs
            .iter()
            .filter(|p| p.p_type == elf::PT_LOAD.0 && p.p_flags & flag != 0)
            .map(|p| {
                let start = self.bias + p.p_vaddr as usize;
                start..start + p.p_memsz as usize
            })
            .collect()
    }

    pub fn contains(&self, address: usize) -> bool {
        self.segments(elf::PT_LOAD).any(|r| r.contains(&address))
    }

    /// The range made read-only after relocation (`PT_GNU_RELRO`).
    pub fn relro(&self) -> Option<Range<usize>> {
        self.segments(elf::PT_GNU_RELRO).next()
    }

    /// Identity while loaded: bias plus where its dynamic section is.
    pub fn key(&self) -> (usize, usize) {
        (self.bias, self.segments(elf::PT_DYNAMIC).next().map_or(0, |r| r.start))
    }

    /// The dynamic section's tables, if it has one.
    ///
    /// # Safety
    /// The object must still be loaded (its memory mapped as described).
    pub unsafe fn dynamic(&self) -> Option<Dynamic> {
        let dynamic = self.segments(elf::PT_DYNAMIC).next()?;
        let mut d = Dynamic { bias: self.bias, ..Dynamic::default() };
        let mut entry = dynamic.start as *const Dyn64<LE>;
        let (mut pltrel, mut rpath, mut runpath) = (0u64, None, None);
        loop {
            // SAFETY: PT_DYNAMIC points at an array of entries ending with
            // DT_NULL, mapped while the object is loaded (caller's contract).
            let (tag, val) = unsafe { ((*entry).d_tag.get(LE), (*entry).d_val.get(LE)) };
            match tag {
                elf::DT_NULL => break,
                elf::DT_STRTAB => d.strtab = self.relocated(val),
                elf::DT_SYMTAB => d.symtab = self.relocated(val),
                elf::DT_JMPREL => d.jmprel = self.relocated(val),
                elf::DT_PLTRELSZ => d.jmprel_size = val as usize,
                elf::DT_PLTREL => pltrel = val,
                elf::DT_RELA => d.rela = self.relocated(val),
                elf::DT_RELASZ => d.rela_size = val as usize,
                elf::DT_RPATH => rpath = Some(val as usize),
                elf::DT_RUNPATH => runpath = Some(val as usize),
                _ => {}
            }
            // SAFETY: not past DT_NULL, so the next entry is in the array.
            entry = unsafe { entry.add(1) };
        }
        if pltrel != 0 && pltrel != elf::DT_RELA.0 as u64 {
            d.jmprel_size = 0; // REL-style PLT: not used on x86_64.
        }
        // RUNPATH wins over RPATH, as in the loader.
        d.search_path = runpath.map(|o| (o, true)).or(rpath.map(|o| (o, false)));
        (d.strtab != 0 && d.symtab != 0).then_some(d)
    }

    /// `d_ptr` values are usually relocated by the loader already, but not in
    /// every object (the vdso, other libcs): add the bias only when the value
    /// is below it.
    fn relocated(&self, value: u64) -> usize {
        let value = value as usize;
        if value < self.bias {
            value + self.bias
        } else {
            value
        }
    }
}

/// The tables of one object's dynamic section, at their addresses in memory.
#[derive(Default, Debug)]
pub struct Dynamic {
    bias: usize,
    strtab: usize,
    symtab: usize,
    jmprel: usize,
    jmprel_size: usize,
    rela: usize,
    rela_size: usize,
    /// String-table offset of DT_RUNPATH (true) or DT_RPATH (false).
    search_path: Option<(usize, bool)>,
}

/// A GOT slot that the loader fills with the address of a named symbol.
pub struct Import<'a> {
    pub name: &'a [u8],
    pub slot: *mut usize,
    /// The symbol is undefined in this object (truly imported).
    pub undefined: bool,
}

impl Dynamic {
    /// Calls `f` for every symbol-bearing GOT relocation.
    ///
    /// # Safety
    /// The object these tables came from must still be loaded.
    pub unsafe fn for_each_import(&self, mut f: impl FnMut(Import<'_>)) {
        for (table, size) in [(self.jmprel, self.jmprel_size), (self.rela, self.rela_size)] {
            if table == 0 {
                continue;
            }
            let count = size / size_of::<Rela64<LE>>();
            // SAFETY: DT_JMPREL/DT_RELA with their sizes describe arrays of
            // Elf64_Rela mapped while the object is loaded.
            let relocs = unsafe { std::slice::from_raw_parts(table as *const Rela64<LE>, count) };
            for rel in relocs {
                let kind = rel.r_type(LE, false);
                if kind != elf::R_X86_64_JUMP_SLOT && kind != elf::R_X86_64_GLOB_DAT {
                    continue;
                }
                let index = rel.r_sym(LE, false) as usize;
                if index == 0 {
                    continue;
                }
                // SAFETY: relocation symbol indices point into DT_SYMTAB.
                let sym = unsafe { &*(self.symtab as *const Sym64<LE>).add(index) };
                // SAFETY: st_name is an offset of a NUL-terminated name in
                // DT_STRTAB.
                let name = unsafe { self.string(sym.st_name.get(LE) as usize) };
                f(Import {
                    name: name.to_bytes(),
                    slot: (self.bias + rel.r_offset.get(LE) as usize) as *mut usize,
                    undefined: sym.st_shndx.get(LE) == elf::SHN_UNDEF,
                });
            }
        }
    }

    /// # Safety
    /// `offset` must be a string offset within this object's DT_STRTAB.
    unsafe fn string(&self, offset: usize) -> &CStr {
        // SAFETY: per the contract, a NUL-terminated string lives there.
        unsafe { CStr::from_ptr((self.strtab + offset) as *const libc::c_char) }
    }

    /// The DT_RUNPATH (true) or DT_RPATH (false) string.
    ///
    /// # Safety
    /// The object must still be loaded.
    pub unsafe fn search_path(&self) -> Option<(String, bool)> {
        let (offset, runpath) = self.search_path?;
        // SAFETY: DT_RUNPATH/DT_RPATH values are DT_STRTAB offsets.
        Some((unsafe { self.string(offset) }.to_string_lossy().into_owned(), runpath))
    }
}

#[cfg(test)]
mod tests;

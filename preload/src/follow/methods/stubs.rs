//! x86_64 wrappers put in place of a watched extension's method functions
//! (`PyMethodDef::ml_meth`): stub `k` keeps the argument registers on its
//! stack, calls [`super::on_enter`], calls the real function, calls
//! [`super::on_exit`] with its result, and returns the result. Every
//! `PyCFunction` signature has at most five integer arguments and none on
//! the stack, so one stub serves them all. An ordinary frame, with CFI for
//! unwinders.
//!
//! Sampling gate: under `REFWATCH_SAMPLE=N` (`SAMPLING_ON` set), one call
//! in N on average is followed; the others jump straight to the real
//! function, as the provenance trampolines' gate does, except the calls of
//! a suspect (`watch::suspected`), which are followed for the watches but
//! do not count as sampled (every call counts down), and those of a method
//! that parses its arguments (`PARSES`), which get a frame for that alone.

use std::sync::atomic::{AtomicU8, AtomicUsize};

/// Stubs available: methods beyond this many are left unwrapped.
pub const METHOD_STUBS: usize = 512;

/// The extension's method function behind stub `k`; written before the
/// stub is installed.
pub static METHOD_FN: [AtomicUsize; METHOD_STUBS] = [const { AtomicUsize::new(0) }; METHOD_STUBS];

/// Non-zero when method calls are sampled.
pub static SAMPLING_ON: AtomicU8 = AtomicU8::new(0);

/// Non-zero for a method seen parsing its argument tuple: under sampling,
/// its calls that are not sampled still get a frame (without the
/// arguments' refcounts), which keeps what the parse lends (`parsed`)
/// far more cheaply than provenance's maps.
pub static PARSES: [AtomicU8; METHOD_STUBS] = [const { AtomicU8::new(0) }; METHOD_STUBS];

/// The argument registers a stub keeps: `rdi`, `rsi`, `rdx`, `rcx`, `r8`,
/// `r9`, what [`super::on_enter`] and [`super::on_exit`] are handed.
pub type Registers = [usize; 6];

/// What a stub keeps on its stack, at its stack pointer.
#[repr(C)]
struct StubFrame {
    /// First: the stub hands its stack pointer over as `*const Registers`.
    registers: Registers,
    /// The method's result, across the call of `on_exit`.
    result: usize,
    /// The stub's index, across the calls.
    index: usize,
}

/// How far a stub moves its stack pointer: its frame, plus what keeps the
/// stack pointer 16-byte aligned at its calls (it is 8 mod 16 at entry).
const FRAME_BYTES: usize = size_of::<StubFrame>().next_multiple_of(16) + 8;

const _: () = assert!(std::mem::offset_of!(StubFrame, registers) == 0);
const _: () = assert!(FRAME_BYTES >= size_of::<StubFrame>() && (8 + FRAME_BYTES).is_multiple_of(16));
// The gate's loads: `cmp byte ptr` on SAMPLING_ON and PARSES[k], `cmp dword
// ptr` on SUSPECT[k] and a jump through the 8-byte METHOD_FN[k].
const _: () = assert!(size_of_val(&SAMPLING_ON) == 1 && crate::sys::element_bytes(&PARSES) == 1);
const _: () = assert!(crate::sys::element_bytes(&crate::follow::watch::SUSPECT) == 4);
const _: () = assert!(crate::sys::element_bytes(&METHOD_FN) == 8);
// The gate reads `watch::SUSPECT[k]` for every stub k.
const _: () = assert!(crate::follow::watch::METHODS >= METHOD_STUBS);

core::arch::global_asm!(
    // Stub `index`: r11 = index, on to the common part. Its address goes in
    // the table `refwatch_method_stubs`.
    ".macro refwatch_method_stub index",
    ".p2align 4",
    ".hidden refwatch_method_\\index",
    ".type refwatch_method_\\index,@function",
    "refwatch_method_\\index:",
    ".cfi_startproc",
    "mov r11d, \\index",
    "jmp refwatch_method_common",
    ".cfi_endproc",
    ".size refwatch_method_\\index, . - refwatch_method_\\index",
    ".pushsection .data.rel.ro.refwatch_method_stubs,\"aw\"",
    ".quad refwatch_method_\\index",
    ".popsection",
    ".endm",
    // The stubs' addresses, in order.
    ".pushsection .data.rel.ro.refwatch_method_stubs,\"aw\"",
    ".p2align 3",
    ".globl refwatch_method_stubs",
    ".hidden refwatch_method_stubs",
    "refwatch_method_stubs:",
    ".popsection",
    crate::sys::asm_for_each_index!("refwatch_method_stub", "{method_stubs}"),
    // r11 = k. Frame (`StubFrame`): the 6 argument registers, the result,
    // k; the entry's rsp is 8 mod 16, so rsp is 16-aligned at the calls
    // below.
    ".p2align 4",
    ".hidden refwatch_method_common",
    ".type refwatch_method_common,@function",
    "refwatch_method_common:",
    ".cfi_startproc",
    // The sampling gate: on to label 1 to follow the call.
    "cmp byte ptr [rip + {sampling_on}], 0",
    "je 1f",
    "mov rax, qword ptr [rip + refwatch_method_calls@GOTTPOFF]",
    "sub qword ptr fs:[rax + {countdown}], 1",
    "jbe 1f",
    "lea rax, [rip + {suspect}]",
    "cmp dword ptr [rax + 4 * r11], 0",
    "jne 1f",
    "lea rax, [rip + {parses}]",
    "cmp byte ptr [rax + r11], 0",
    "jne 1f",
    "lea rax, [rip + {method_fn}]",
    "jmp qword ptr [rax + 8 * r11]",
    "1:",
    "sub rsp, {frame_bytes}",
    ".cfi_adjust_cfa_offset {frame_bytes}",
    "mov qword ptr [rsp], rdi",
    "mov qword ptr [rsp + 8], rsi",
    "mov qword ptr [rsp + 16], rdx",
    "mov qword ptr [rsp + 24], rcx",
    "mov qword ptr [rsp + 32], r8",
    "mov qword ptr [rsp + 40], r9",
    "mov qword ptr [rsp + {index}], r11",
    // on_enter(k, registers)
    "mov rdi, r11",
    "mov rsi, rsp",
    "call {on_enter}",
    "mov r11, qword ptr [rsp + {index}]",
    "lea rax, [rip + {method_fn}]",
    "mov r11, qword ptr [rax + 8 * r11]",
    "mov rdi, qword ptr [rsp]",
    "mov rsi, qword ptr [rsp + 8]",
    "mov rdx, qword ptr [rsp + 16]",
    "mov rcx, qword ptr [rsp + 24]",
    "mov r8, qword ptr [rsp + 32]",
    "mov r9, qword ptr [rsp + 40]",
    "call r11",
    // Where the method returns to: also where a C-API function it called
    // as a tail call returns to.
    ".globl refwatch_method_returned",
    ".hidden refwatch_method_returned",
    "refwatch_method_returned:",
    "mov qword ptr [rsp + {result}], rax",
    // on_exit(k, registers, result)
    "mov rdi, qword ptr [rsp + {index}]",
    "mov rsi, rsp",
    "mov rdx, rax",
    "call {on_exit}",
    "mov rax, qword ptr [rsp + {result}]",
    "add rsp, {frame_bytes}",
    ".cfi_adjust_cfa_offset -{frame_bytes}",
    "ret",
    ".cfi_endproc",
    ".size refwatch_method_common, . - refwatch_method_common",
    method_stubs = const METHOD_STUBS,
    frame_bytes = const FRAME_BYTES,
    result = const std::mem::offset_of!(StubFrame, result),
    index = const std::mem::offset_of!(StubFrame, index),
    method_fn = sym METHOD_FN,
    sampling_on = sym SAMPLING_ON,
    parses = sym PARSES,
    suspect = sym crate::follow::watch::SUSPECT,
    countdown = const std::mem::offset_of!(super::Calls, countdown),
    on_enter = sym super::on_enter,
    on_exit = sym super::on_exit,
);

unsafe extern "C" {
    static refwatch_method_stubs: [usize; METHOD_STUBS];
    static refwatch_method_returned: u8;
}

/// The return address of every followed method call.
#[inline(always)]
pub fn returned() -> usize {
    // Only the label's address is taken, which needs no `unsafe`.
    &raw const refwatch_method_returned as usize
}

/// The address of stub `k`.
pub fn stub(k: usize) -> usize {
    // SAFETY: a read-only table of METHOD_STUBS addresses defined above.
    unsafe { refwatch_method_stubs[k] }
}

/// The stub index of `address`, if it is one of the stubs. Most addresses
/// asked about (every call site a report names) lie outside the stubs,
/// which are laid out in order: one compare each answers them.
pub fn index_of(address: usize) -> Option<usize> {
    if !(stub(0)..=stub(METHOD_STUBS - 1)).contains(&address) {
        return None;
    }
    // SAFETY: as above.
    unsafe { refwatch_method_stubs.iter().position(|&s| s == address) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_holds_every_stub_in_order() {
        for k in 0..METHOD_STUBS {
            assert_eq!(stub(k) % 16, 0, "stub {k}");
            if k > 0 {
                assert!(stub(k) > stub(k - 1), "stub {k}");
            }
            assert_eq!(index_of(stub(k)), Some(k));
            assert_eq!(index_of(stub(k) + 1), None);
        }
        assert_eq!(index_of(stub(0) - 16), None);
        assert_eq!(index_of(stub(METHOD_STUBS - 1) + 16), None);
        assert_eq!(index_of(returned()), None);
    }
}

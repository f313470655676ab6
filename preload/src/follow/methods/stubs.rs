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

/// Where the countdown is in the thread's method frames (`super::Calls`).
pub const COUNTDOWN_OFFSET: usize = 8;

// The gate reads `watch::SUSPECT[k]` for every stub k.
const _: () = assert!(crate::follow::watch::METHODS >= METHOD_STUBS);

core::arch::global_asm!(
    ".irp k,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,243,244,245,246,247,248,249,250,251,252,253,254,255,256,257,258,259,260,261,262,263,264,265,266,267,268,269,270,271,272,273,274,275,276,277,278,279,280,281,282,283,284,285,286,287,288,289,290,291,292,293,294,295,296,297,298,299,300,301,302,303,304,305,306,307,308,309,310,311,312,313,314,315,316,317,318,319,320,321,322,323,324,325,326,327,328,329,330,331,332,333,334,335,336,337,338,339,340,341,342,343,344,345,346,347,348,349,350,351,352,353,354,355,356,357,358,359,360,361,362,363,364,365,366,367,368,369,370,371,372,373,374,375,376,377,378,379,380,381,382,383,384,385,386,387,388,389,390,391,392,393,394,395,396,397,398,399,400,401,402,403,404,405,406,407,408,409,410,411,412,413,414,415,416,417,418,419,420,421,422,423,424,425,426,427,428,429,430,431,432,433,434,435,436,437,438,439,440,441,442,443,444,445,446,447,448,449,450,451,452,453,454,455,456,457,458,459,460,461,462,463,464,465,466,467,468,469,470,471,472,473,474,475,476,477,478,479,480,481,482,483,484,485,486,487,488,489,490,491,492,493,494,495,496,497,498,499,500,501,502,503,504,505,506,507,508,509,510,511",
    ".p2align 4",
    ".hidden refwatch_method_\\k",
    ".type refwatch_method_\\k,@function",
    "refwatch_method_\\k:",
    ".cfi_startproc",
    "mov r11d, \\k",
    "jmp refwatch_method_common",
    ".cfi_endproc",
    ".size refwatch_method_\\k, . - refwatch_method_\\k",
    ".endr",
    // r11 = k. Frame: 6 argument registers, the result, k (64 bytes; the
    // entry's rsp is 8 mod 16, so rsp is 16-aligned at the calls below).
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
    "sub rsp, 72",
    ".cfi_adjust_cfa_offset 72",
    "mov qword ptr [rsp], rdi",
    "mov qword ptr [rsp + 8], rsi",
    "mov qword ptr [rsp + 16], rdx",
    "mov qword ptr [rsp + 24], rcx",
    "mov qword ptr [rsp + 32], r8",
    "mov qword ptr [rsp + 40], r9",
    "mov qword ptr [rsp + 56], r11",
    // on_enter(k, registers)
    "mov rdi, r11",
    "mov rsi, rsp",
    "call {on_enter}",
    "mov r11, qword ptr [rsp + 56]",
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
    "mov qword ptr [rsp + 48], rax",
    // on_exit(k, registers, result)
    "mov rdi, qword ptr [rsp + 56]",
    "mov rsi, rsp",
    "mov rdx, rax",
    "call {on_exit}",
    "mov rax, qword ptr [rsp + 48]",
    "add rsp, 72",
    ".cfi_adjust_cfa_offset -72",
    "ret",
    ".cfi_endproc",
    ".size refwatch_method_common, . - refwatch_method_common",
    // The stubs' addresses.
    ".section .data.rel.ro,\"aw\"",
    ".p2align 3",
    ".globl refwatch_method_stubs",
    ".hidden refwatch_method_stubs",
    "refwatch_method_stubs:",
    ".irp k,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,243,244,245,246,247,248,249,250,251,252,253,254,255,256,257,258,259,260,261,262,263,264,265,266,267,268,269,270,271,272,273,274,275,276,277,278,279,280,281,282,283,284,285,286,287,288,289,290,291,292,293,294,295,296,297,298,299,300,301,302,303,304,305,306,307,308,309,310,311,312,313,314,315,316,317,318,319,320,321,322,323,324,325,326,327,328,329,330,331,332,333,334,335,336,337,338,339,340,341,342,343,344,345,346,347,348,349,350,351,352,353,354,355,356,357,358,359,360,361,362,363,364,365,366,367,368,369,370,371,372,373,374,375,376,377,378,379,380,381,382,383,384,385,386,387,388,389,390,391,392,393,394,395,396,397,398,399,400,401,402,403,404,405,406,407,408,409,410,411,412,413,414,415,416,417,418,419,420,421,422,423,424,425,426,427,428,429,430,431,432,433,434,435,436,437,438,439,440,441,442,443,444,445,446,447,448,449,450,451,452,453,454,455,456,457,458,459,460,461,462,463,464,465,466,467,468,469,470,471,472,473,474,475,476,477,478,479,480,481,482,483,484,485,486,487,488,489,490,491,492,493,494,495,496,497,498,499,500,501,502,503,504,505,506,507,508,509,510,511",
    ".quad refwatch_method_\\k",
    ".endr",
    ".text",
    method_fn = sym METHOD_FN,
    sampling_on = sym SAMPLING_ON,
    parses = sym PARSES,
    suspect = sym crate::follow::watch::SUSPECT,
    countdown = const COUNTDOWN_OFFSET,
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

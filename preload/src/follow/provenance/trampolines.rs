//! x86_64 trampolines that see what a C-API function returns, in two
//! families (the GOT patcher picks one per function, `apis::Api::variadic`):
//!
//! * Call-through entry `k` (fixed-arity functions, whose arguments are all
//!   in registers): keeps the first three argument registers on the stack,
//!   calls the real function, hands the result, those arguments and the
//!   caller's return address to its handler `HANDLER[k]` (one per effect, so
//!   that the most frequent, a new reference, is not dispatched again), and
//!   returns. An ordinary
//!   frame, with CFI for unwinders, that keeps the CPU's return predictions
//!   intact: most followed calls take this path.
//! * Shadow entry `k` (variadic functions, which may have arguments on the
//!   stack and `al` set): pushes the caller's return address, `k`, the stack
//!   pointer and the first three argument registers onto a per-thread shadow
//!   stack, replaces the return address with `refwatch_prov_return`, and
//!   jumps to the real function. It only uses `r10` and `r11`, which carry no
//!   arguments in the SysV ABI. When the shadow stack is full it just jumps
//!   to the real function (that call is not followed).
//!   `refwatch_prov_return` (where the real function returns to) saves the
//!   return registers (`rax`, `rdx`, `xmm0`, `xmm1`), hands the result and
//!   the entry's stack pointer to [`super::on_return`], which pops the
//!   matching shadow entry (matched by stack pointer, not order: greenlets
//!   switch C stacks inside calls) and returns the caller's address,
//!   restores the registers and jumps back to the caller.
//!
//! Sampling gate: when `ENTRY_SAMPLING[k]` is `SAMPLE_CALLS` (new-reference
//! functions under `REFWATCH_SAMPLE`), or `SAMPLE_CALLS_WITHOUT_STEALS`
//! (`Py_BuildValue` and kin) and the format in the first argument is one
//! known to have no `N` unit (`build_format::FORMATS_WITHOUT_STEALS`: then
//! only the fresh result would be followed), either entry first counts down
//! the thread's `Shadow::countdown` and, while it stays above zero, jumps
//! straight to the real function: a call that is not sampled costs a few
//! instructions and leaves no frame. A followed call sets the next gap
//! (`super::record`).
//!
//! The shadow stack is a TLS block of refwatch's own, reached with the
//! initial-exec model (`fs`-relative, no call): refwatch is loaded at start-up
//! by LD_PRELOAD, so its TLS is in the static block.

use std::sync::atomic::{AtomicU8, AtomicUsize};

/// Entries in the trampoline table: at least `apis::APIS.len()`.
pub const ENTRIES: usize = 192;
/// Calls a thread can have in flight through the trampolines.
pub const DEPTH: usize = 64;

/// The C-API function behind entry `k` (`apis::APIS[k]`); written at
/// start, before patching.
pub static API_FN: [AtomicUsize; ENTRIES] = [const { AtomicUsize::new(0) }; ENTRIES];

/// What entry `k` calls with the result: `super::on_call` or a handler for
/// its effect with the same signature; written at start, before patching.
pub static HANDLER: [AtomicUsize; ENTRIES] = [const { AtomicUsize::new(0) }; ENTRIES];

/// How entry `k` is sampled (`FOLLOW_EVERY_CALL`, `SAMPLE_CALLS`,
/// `SAMPLE_CALLS_WITHOUT_STEALS`); written at start, before patching.
pub static ENTRY_SAMPLING: [AtomicU8; ENTRIES] = [const { AtomicU8::new(0) }; ENTRIES];
/// No sampling: every call is followed.
pub const FOLLOW_EVERY_CALL: u8 = 0;
/// One call in N is followed.
pub const SAMPLE_CALLS: u8 = 1;
/// One call in N is followed when its format is known to have no `N` unit;
/// every other call is.
pub const SAMPLE_CALLS_WITHOUT_STEALS: u8 = 2;

/// One call in flight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub return_address: usize,
    pub entry: usize,
    /// The stack pointer at entry (where the return address was).
    pub stack_pointer: usize,
    /// The first three integer arguments (`rdi`, `rsi`, `rdx`): the
    /// container and key of a borrowing call, the object a stealing call
    /// takes.
    pub args: [usize; 3],
}

/// The per-thread shadow stack (layout shared with the assembly below).
#[repr(C)]
pub struct Shadow {
    pub depth: usize,
    /// Sampled calls left until the next followed one (0 or 1: follow).
    pub countdown: u64,
    pub frames: [Frame; DEPTH],
}

// The per-thread shadow stack (all zeros: empty).
crate::sys::static_thread_block!(pub fn shadow() -> Shadow, "refwatch_shadow");

// A shadow entry finds frame `depth` at `frames + depth * 48`, with `lea`
// (x3) and `shl` (x16).
const _: () = assert!(size_of::<Frame>() == 3 << 4);
// The gate's `cmp byte ptr` on ENTRY_SAMPLING[k], the 8-byte API_FN[k] and
// HANDLER[k].
const _: () = assert!(crate::sys::element_bytes(&ENTRY_SAMPLING) == 1);
const _: () = assert!(crate::sys::element_bytes(&API_FN) == 8 && crate::sys::element_bytes(&HANDLER) == 8);

core::arch::global_asm!(
    ".text",
    // The sampling gate: falls through to label 1 to follow the call, jumps
    // to label 2 (straight to the real function) to let it pass.
    ".macro refwatch_gate k",
    "cmp byte ptr [rip + {entry_sampling} + \\k], {sample_calls}",
    "jb 1f",
    "je 3f",
    // A build: sampled only when its format is known to steal nothing.
    "movabs r11, {hash}",
    "imul r11, rdi",
    "shr r11, {shift}",
    "lea r10, [rip + {formats_without_steals}]",
    "cmp qword ptr [r10 + 8 * r11], rdi",
    "jne 1f",
    "3:",
    "mov r11, qword ptr [rip + refwatch_shadow@GOTTPOFF]",
    "sub qword ptr fs:[r11 + {shadow_countdown}], 1",
    "ja 2f",
    "1:",
    ".endm",
    // Call-through entry k, one per hooked fixed-arity function. Its
    // address goes in the table `refwatch_prov_calls`.
    ".macro refwatch_prov_call k",
    ".p2align 6",
    ".hidden refwatch_prov_call_\\k",
    ".type refwatch_prov_call_\\k,@function",
    "refwatch_prov_call_\\k:",
    ".cfi_startproc",
    "refwatch_gate \\k",
    "push rdx",
    ".cfi_adjust_cfa_offset 8",
    "push rsi",
    ".cfi_adjust_cfa_offset 8",
    "push rdi",
    ".cfi_adjust_cfa_offset 8",
    "call qword ptr [rip + {api_fn} + 8 * \\k]",
    // handler(result, [rdi, rsi, rdx, return address], k); rax kept.
    "mov rdi, rax",
    "mov rsi, rsp",
    "mov edx, \\k",
    "push rax",
    ".cfi_adjust_cfa_offset 8",
    "sub rsp, 8",
    ".cfi_adjust_cfa_offset 8",
    "call qword ptr [rip + {handler} + 8 * \\k]",
    "add rsp, 8",
    ".cfi_adjust_cfa_offset -8",
    "pop rax",
    ".cfi_adjust_cfa_offset -8",
    "add rsp, 24",
    ".cfi_adjust_cfa_offset -24",
    "ret",
    "2:",
    "jmp qword ptr [rip + {api_fn} + 8 * \\k]",
    ".cfi_endproc",
    ".size refwatch_prov_call_\\k, . - refwatch_prov_call_\\k",
    ".pushsection .data.rel.ro.refwatch_prov_calls,\"aw\"",
    ".quad refwatch_prov_call_\\k",
    ".popsection",
    ".endm",
    // Shadow entry k, one per hooked variadic function. Its address goes
    // in the table `refwatch_prov_entries`.
    ".macro refwatch_prov_entry k",
    ".p2align 6",
    ".hidden refwatch_prov_entry_\\k",
    "refwatch_prov_entry_\\k:",
    "refwatch_gate \\k",
    "mov r11, qword ptr [rip + refwatch_shadow@GOTTPOFF]",
    "add r11, qword ptr fs:[0]",
    "mov r10, qword ptr [r11 + {shadow_depth}]",
    "cmp r10, {depth}",
    "jae 2f",
    "lea r10, [r10 + r10 * 2]",
    "shl r10, 4",
    "lea r10, [r11 + r10 + {shadow_frames}]",
    "push qword ptr [rsp]",
    "pop qword ptr [r10 + {frame_return_address}]",
    "mov qword ptr [r10 + {frame_entry}], \\k",
    "mov qword ptr [r10 + {frame_stack_pointer}], rsp",
    "mov qword ptr [r10 + {frame_args}], rdi",
    "mov qword ptr [r10 + {frame_args} + 8], rsi",
    "mov qword ptr [r10 + {frame_args} + 16], rdx",
    "inc qword ptr [r11 + {shadow_depth}]",
    "lea r10, [rip + refwatch_prov_return]",
    "mov qword ptr [rsp], r10",
    "2:",
    "jmp qword ptr [rip + {api_fn} + 8 * \\k]",
    ".pushsection .data.rel.ro.refwatch_prov_entries,\"aw\"",
    ".quad refwatch_prov_entry_\\k",
    ".popsection",
    ".endm",
    // The tables of the entries' addresses, for the GOT patcher.
    ".pushsection .data.rel.ro.refwatch_prov_calls,\"aw\"",
    ".p2align 3",
    ".globl refwatch_prov_calls",
    ".hidden refwatch_prov_calls",
    "refwatch_prov_calls:",
    ".popsection",
    ".pushsection .data.rel.ro.refwatch_prov_entries,\"aw\"",
    ".p2align 3",
    ".globl refwatch_prov_entries",
    ".hidden refwatch_prov_entries",
    "refwatch_prov_entries:",
    ".popsection",
    crate::sys::asm_for_each_index!("refwatch_prov_call", "{entries}"),
    crate::sys::asm_for_each_index!("refwatch_prov_entry", "{entries}"),
    ".purgem refwatch_gate",
    // The common return stub. On arrival rsp = entry rsp + 8, 16-byte
    // aligned; below it, rax and rdx (16 bytes) and xmm0 and xmm1 (32).
    ".p2align 4",
    ".hidden refwatch_prov_return",
    "refwatch_prov_return:",
    "push rax",
    "push rdx",
    "sub rsp, 32",
    "movdqu xmmword ptr [rsp], xmm0",
    "movdqu xmmword ptr [rsp + 16], xmm1",
    "mov rdi, rax",
    "lea rsi, [rsp + 40]",
    "call {on_return}",
    "mov r11, rax",
    "movdqu xmm0, xmmword ptr [rsp]",
    "movdqu xmm1, xmmword ptr [rsp + 16]",
    "add rsp, 32",
    "pop rdx",
    "pop rax",
    "jmp r11",
    entries = const ENTRIES,
    depth = const DEPTH,
    shadow_depth = const std::mem::offset_of!(Shadow, depth),
    shadow_countdown = const std::mem::offset_of!(Shadow, countdown),
    shadow_frames = const std::mem::offset_of!(Shadow, frames),
    frame_return_address = const std::mem::offset_of!(Frame, return_address),
    frame_entry = const std::mem::offset_of!(Frame, entry),
    frame_stack_pointer = const std::mem::offset_of!(Frame, stack_pointer),
    frame_args = const std::mem::offset_of!(Frame, args),
    api_fn = sym API_FN,
    entry_sampling = sym ENTRY_SAMPLING,
    sample_calls = const SAMPLE_CALLS,
    hash = const super::build_format::HASH,
    shift = const super::build_format::SHIFT,
    formats_without_steals = sym super::build_format::FORMATS_WITHOUT_STEALS,
    handler = sym HANDLER,
    on_return = sym super::on_return,
);

unsafe extern "C" {
    static refwatch_prov_calls: [usize; ENTRIES];
    static refwatch_prov_entries: [usize; ENTRIES];
}

/// The address GOT slots of hooked function `k` are pointed at: its
/// shadow entry when it is variadic, else its call-through entry.
pub fn entry(k: usize, variadic: bool) -> usize {
    // SAFETY: read-only tables of ENTRIES addresses defined above.
    unsafe {
        if variadic {
            refwatch_prov_entries[k]
        } else {
            refwatch_prov_calls[k]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_hold_every_entry_in_order() {
        for variadic in [false, true] {
            for k in 0..ENTRIES {
                assert_eq!(entry(k, variadic) % 64, 0, "entry {k}, variadic {variadic}");
                if k > 0 {
                    assert!(entry(k, variadic) > entry(k - 1, variadic), "entry {k}");
                }
            }
        }
        // The shadow entries follow the call-through ones.
        assert!(entry(0, true) > entry(ENTRIES - 1, false));
    }
}

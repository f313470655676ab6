//! Per-architecture trampolines: hand the caller's return address (the call
//! site) to a hook as one more argument, leaving the real arguments in place.
//!
//! On entry `[rsp]` holds the return address. The trampoline copies it into
//! the first argument register the function does not use and jumps (not
//! calls) to the hook, so the hook returns straight to the extension.

#[cfg(not(target_arch = "x86_64"))]
compile_error!("refwatch's trampolines exist for x86_64 only so far");

/// `trampoline!(name, shape, hook)` defines `pub unsafe extern "C" fn name()`.
macro_rules! trampoline {
    ($name:ident, ra_after_0_args, $hook:path) => {
        $crate::hooks::arch::trampoline!(@emit $name, "rdi", $hook);
    };
    ($name:ident, ra_after_1_arg, $hook:path) => {
        $crate::hooks::arch::trampoline!(@emit $name, "rsi", $hook);
    };
    ($name:ident, ra_after_3_args, $hook:path) => {
        $crate::hooks::arch::trampoline!(@emit $name, "rcx", $hook);
    };
    (@emit $name:ident, $reg:literal, $hook:path) => {
        /// Entry point written into GOT slots; never called from Rust.
        #[unsafe(naked)]
        pub unsafe extern "C" fn $name() {
            core::arch::naked_asm!(
                concat!("mov ", $reg, ", qword ptr [rsp]"),
                "jmp {hook}",
                hook = sym $hook,
            )
        }
    };
}

pub(crate) use trampoline;

//! The ground floor: the few system calls the agent makes itself, without
//! going through anything that could allocate or re-enter the agent, and
//! the process-level facilities built on them: the crash handler and its
//! alternate signal stacks (`crash`), the memory the process can read
//! (`memory`), and work done in a forked copy of the process (`isolate`).

pub mod crash;
pub mod isolate;
pub mod memory;

use std::io;

/// Writes all of `bytes` to `fd`, retrying on `EINTR` and short writes.
/// A line of up to `PIPE_BUF` bytes goes out in one `write(2)`.
pub fn write_all(fd: i32, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable slice for its whole length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

/// One line of the agent's own to stderr (`refwatch: ...`). Not for the hot
/// path: it formats into a `String`.
pub fn warn(message: std::fmt::Arguments<'_>) {
    let line = format!("refwatch: {message}\n");
    let _ = write_all(libc::STDERR_FILENO, line.as_bytes());
}

pub fn getpid() -> u32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() as u32 }
}

/// Reads an environment variable. Only called on cold paths (start, fork).
pub fn env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
}

/// The system's page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

/// A new zeroed, private, anonymous mapping of `bytes`, or `None`. Pages
/// are only backed once touched, and no swap is reserved for them: the
/// agent's tables are sized for the worst case and mostly stay untouched.
pub fn zeroed_mapping(bytes: usize) -> Option<*mut u8> {
    // SAFETY: an anonymous private mapping with no address hint has no
    // preconditions; the result is checked against MAP_FAILED.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (base != libc::MAP_FAILED).then_some(base.cast())
}

/// `static_thread_block!(fn name() -> Type, "symbol")`: a zero-initialized
/// block of `Type` per thread in refwatch's own TLS, reached with the
/// initial-exec model (`fs`-relative, no `__tls_get_addr` call, which a
/// `thread_local!` in a shared object pays on every access). refwatch is
/// loaded at start-up by LD_PRELOAD, so its TLS is in the static block.
/// `name()` returns the calling thread's block; `Type` must be valid when
/// all zeros.
macro_rules! static_thread_block {
    ($vis:vis fn $name:ident() -> $ty:ty, $symbol:literal) => {
        // The block is aligned to 16 bytes below.
        const _: () = assert!(align_of::<$ty>() <= 16);
        core::arch::global_asm!(
            ".section .tbss,\"awT\",@nobits",
            ".p2align 4",
            // Global (hidden: within refwatch), for assembly elsewhere.
            concat!(".globl ", $symbol),
            concat!(".hidden ", $symbol),
            concat!(".type ", $symbol, ",@object"),
            concat!(".size ", $symbol, ", {size}"),
            concat!($symbol, ":"),
            ".zero {size}",
            ".text",
            size = const size_of::<$ty>(),
        );

        #[inline(always)]
        $vis fn $name() -> *mut $ty {
            let block: *mut $ty;
            // SAFETY: computes the address of this thread's copy of the TLS
            // block defined above; reads only the thread pointer (fs:0) and
            // the GOT.
            unsafe {
                core::arch::asm!(
                    concat!("mov {block}, qword ptr [rip + ", $symbol, "@GOTTPOFF]"),
                    "add {block}, qword ptr fs:[0]",
                    block = out(reg) block,
                    options(nostack, preserves_flags, pure, readonly),
                );
            }
            block
        }
    };
}

pub(crate) use static_thread_block;

/// `asm_for_each_index!("name", "{count}")`: assembly that invokes the
/// assembler macro `name` (defined just before, with one parameter) with
/// 0, 1, ..., count - 1 in decimal, then forgets it. `{count}` is the
/// placeholder of a `const` operand of the `global_asm!` it is used in, so
/// the repeated stubs are exactly as many as the Rust constant says: the
/// one way refwatch's assembly repeats a stub.
macro_rules! asm_for_each_index {
    ($macro:literal, $count:literal) => {
        concat!(
            // `%symbol` passes the symbol's value as text (GNU as and LLVM's
            // assembler, in `.altmacro` mode only).
            ".altmacro\n",
            ".set ",
            $macro,
            "_index, 0\n",
            ".rept ",
            $count,
            "\n",
            $macro,
            " %",
            $macro,
            "_index\n",
            ".set ",
            $macro,
            "_index, ",
            $macro,
            "_index + 1\n",
            ".endr\n",
            ".noaltmacro\n",
            ".purgem ",
            $macro,
        )
    };
}

pub(crate) use asm_for_each_index;

/// The size of one element of `array`: for `const` asserts that an array
/// the assembly indexes has the element size its instructions assume.
pub const fn element_bytes<T, const N: usize>(_array: &[T; N]) -> usize {
    size_of::<T>()
}

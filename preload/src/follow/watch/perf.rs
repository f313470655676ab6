//! One hardware watchpoint on 8 bytes through
//! `perf_event_open(PERF_TYPE_BREAKPOINT)`, armed on one thread and
//! inherited by the threads it starts while armed: every write (or access)
//! raises a synchronous `SIGTRAP` (`TRAP_PERF`) in the thread that made it,
//! carrying `sig_data`, so the handler sees that thread's own instruction
//! pointer (Linux 5.13+: `sigtrap`, which requires `remove_on_exec`). The
//! `libc` crate has the system call number but not the attribute struct,
//! which is written out here (the kernel's `struct perf_event_attr` up to
//! `sig_data`, 128 bytes).

use std::io;

const PERF_TYPE_BREAKPOINT: u32 = 5;
const HW_BREAKPOINT_W: u32 = 2;
const HW_BREAKPOINT_RW: u32 = 3;
const HW_BREAKPOINT_LEN_8: u64 = 8;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
/// `disabled` (0), `inherit` (1), `exclude_kernel` (5), `exclude_hv` (6),
/// `inherit_thread` (35), `remove_on_exec` (36), `sigtrap` (37).
const FLAGS: u64 = 1 | (1 << 1) | (1 << 5) | (1 << 6) | (1 << 35) | (1 << 36) | (1 << 37);

#[repr(C)]
#[derive(Default)]
struct Attr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    bp_addr: u64,
    bp_len: u64,
    rest: [u64; 6],
    sig_data: u64,
}

const _: () = assert!(size_of::<Attr>() == 128);

/// Watches writes (with `reads`, reads too) of the 8 bytes at `address`
/// (8-aligned) by thread `tid` (0: this one) and the threads it starts
/// meanwhile; each raises `SIGTRAP` in the thread that made the access,
/// with `sig_data`. Another thread of this process may be watched: the
/// kernel's check for `sigtrap` on another task is the ptrace one, which
/// a thread of the same process passes. Returns the event's descriptor,
/// for `disarm`.
pub fn arm(address: usize, reads: bool, sig_data: u64, tid: libc::pid_t) -> io::Result<i32> {
    let attr = Attr {
        kind: PERF_TYPE_BREAKPOINT,
        size: size_of::<Attr>() as u32,
        sample_period: 1,
        flags: FLAGS,
        bp_type: if reads { HW_BREAKPOINT_RW } else { HW_BREAKPOINT_W },
        bp_addr: address as u64,
        bp_len: HW_BREAKPOINT_LEN_8,
        sig_data,
        ..Attr::default()
    };
    // SAFETY: a valid attribute struct of the size it declares; pid `tid`
    // (0: this thread) and cpu -1: that thread on any CPU; no group.
    let fd = unsafe {
        libc::syscall(libc::SYS_perf_event_open, &attr as *const Attr, tid, -1, -1, PERF_FLAG_FD_CLOEXEC)
    } as i32;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ioctl on the descriptor just opened.
    if unsafe { libc::ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) } != 0 {
        let error = io::Error::last_os_error();
        disarm(fd);
        return Err(error);
    }
    Ok(fd)
}

/// Stops watching and closes the event's descriptor (which removes the
/// copies threads inherited).
pub fn disarm(fd: i32) {
    // SAFETY: our own descriptor; disabling first so no signal follows.
    unsafe {
        libc::ioctl(fd, PERF_EVENT_IOC_DISABLE, 0);
        libc::close(fd);
    }
}

//! One hardware watchpoint on 8 bytes, for the calling thread, through
//! `perf_event_open(PERF_TYPE_BREAKPOINT)`: every write (or access) sends `signal` to
//! this thread (`F_SETSIG`, `F_SETOWN_EX` with `F_OWNER_TID`). The `libc`
//! crate has the system call number but not the attribute struct nor these
//! fcntl commands, which are written out here (the kernel's
//! `struct perf_event_attr`, 128 bytes).

use std::io;

const PERF_TYPE_BREAKPOINT: u32 = 5;
const HW_BREAKPOINT_W: u32 = 2;
const HW_BREAKPOINT_RW: u32 = 3;
const HW_BREAKPOINT_LEN_8: u64 = 8;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;
const PERF_EVENT_IOC_ENABLE: libc::c_ulong = 0x2400;
const PERF_EVENT_IOC_DISABLE: libc::c_ulong = 0x2401;
/// fcntl commands and `struct f_owner_ex` (not in the `libc` crate).
const F_SETSIG: i32 = 10;
const F_SETOWN_EX: i32 = 15;
const F_OWNER_TID: i32 = 0;

#[repr(C)]
struct OwnerEx {
    kind: i32,
    pid: i32,
}

/// `disabled`, `exclude_kernel`, `exclude_hv` (bits 0, 5 and 6).
const FLAGS: u64 = 1 | (1 << 5) | (1 << 6);

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
    rest: [u64; 7],
}

const _: () = assert!(size_of::<Attr>() == 128);

/// Watches writes (with `reads`, reads too) of the 8 bytes at `address`
/// (8-aligned) by this thread; returns the event's descriptor, for `disarm`.
pub fn arm(address: usize, signal: i32, reads: bool) -> io::Result<i32> {
    let attr = Attr {
        kind: PERF_TYPE_BREAKPOINT,
        size: size_of::<Attr>() as u32,
        sample_period: 1,
        flags: FLAGS,
        wakeup_events: 1,
        bp_type: if reads { HW_BREAKPOINT_RW } else { HW_BREAKPOINT_W },
        bp_addr: address as u64,
        bp_len: HW_BREAKPOINT_LEN_8,
        ..Attr::default()
    };
    // SAFETY: a valid attribute struct of the size it declares; pid 0 and
    // cpu -1: this thread on any CPU; no group.
    let fd = unsafe {
        libc::syscall(libc::SYS_perf_event_open, &attr as *const Attr, 0, -1, -1, PERF_FLAG_FD_CLOEXEC)
    } as i32;
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    let owner = OwnerEx { kind: F_OWNER_TID, pid: tid };
    // SAFETY: fcntl and ioctl on the descriptor just opened, with valid
    // arguments; a failure is reported and the descriptor closed.
    let ok = unsafe {
        libc::fcntl(fd, libc::F_SETFL, libc::O_ASYNC | libc::O_NONBLOCK) == 0
            && libc::fcntl(fd, F_SETSIG, signal) == 0
            && libc::fcntl(fd, F_SETOWN_EX, &owner as *const OwnerEx) == 0
            && libc::ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) == 0
    };
    if !ok {
        let error = io::Error::last_os_error();
        disarm(fd);
        return Err(error);
    }
    Ok(fd)
}

/// Stops watching and closes the event's descriptor.
pub fn disarm(fd: i32) {
    // SAFETY: our own descriptor; disabling first so no signal follows.
    unsafe {
        libc::ioctl(fd, PERF_EVENT_IOC_DISABLE, 0);
        libc::close(fd);
    }
}

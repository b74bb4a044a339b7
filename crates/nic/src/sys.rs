//! Thin wrappers over the few Linux calls std does not offer.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking eventfd: one thread notifies, another waits on it in
/// epoll, io_uring or poll.
pub(crate) struct EventFd(OwnedFd);

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the returned fd is checked and then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the fd readable. Never blocks (a saturated counter stays
    /// readable, which is all a wake-up needs).
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a local; the fd is ours.
        let _ = unsafe { libc::write(self.raw(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter (non-blocking).
    pub(crate) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a local; the fd is ours.
        let _ = unsafe { libc::read(self.raw(), (&mut v as *mut u64).cast(), 8) };
    }

    pub(crate) fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// `send(2)` without blocking and without SIGPIPE. Returns bytes written.
pub(crate) fn send_nonblocking(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads `buf.len()` bytes from a live slice.
    let r = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// `recv(2)` without blocking. Returns bytes read (0: end of stream).
pub(crate) fn recv_nonblocking(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most `buf.len()` bytes into a live slice.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

/// Shuts both directions of a socket: wakes any operation waiting on it
/// (an io_uring recv or send completes) without closing the fd.
pub(crate) fn shutdown(fd: RawFd) {
    // SAFETY: plain syscall on a socket we own; no memory involved.
    let _ = unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// Waits until `fd` is readable or `timeout` passed (`ppoll(2)`, so
/// sub-millisecond timeouts hold). EINTR counts as a wake-up.
#[cfg(feature = "dpdk")]
pub(crate) fn wait_readable(fd: RawFd, timeout: std::time::Duration) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: ppoll reads one pollfd and one timespec we own and writes
    // the pollfd's revents.
    let _ = unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
}

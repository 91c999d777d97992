//! Socket calls that std and mio do not offer: the listen backlog, a peek at
//! the accept queue, an abortive close, and which accept errors mean the
//! process ran out of a resource.

use std::io;
use std::os::fd::RawFd;

/// Raises the accept queue of a listening socket from the 128 that mio (like
/// std) asks for, so that a burst of clients, or clients waiting for a free
/// connection slot, are not dropped (a dropped SYN costs the client a second
/// before it retries).
pub fn widen_backlog(fd: RawFd, backlog: libc::c_int) {
    // SAFETY: listen(2) on a socket that is already listening only changes its
    // backlog.
    unsafe {
        libc::listen(fd, backlog);
    }
}

/// Whether a client waits in the accept queue of the listening socket `fd`.
pub fn has_pending(fd: RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and no waiting.
    let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
    ready > 0 && pfd.revents & libc::POLLIN != 0
}

/// Makes the coming close of `fd` reset the connection, discarding unsent
/// bytes, so that a client that stopped reading cannot keep them in kernel
/// memory.
pub fn reset_on_close(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid descriptor and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Whether an accept failed for lack of descriptors or memory (worth
/// retrying later), rather than for the client's own sake.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

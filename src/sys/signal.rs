//! SIGINT/SIGTERM (and SIGHUP, when asked) as poll events: the handler writes
//! one byte to a socket pair whose other end the event loop watches (the
//! self-pipe trick): [`STOP`] or [`RELOAD`].

use std::io;
use std::os::fd::IntoRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use mio::net::UnixStream;

static WAKE_FD: AtomicI32 = AtomicI32::new(-1);

/// The byte SIGINT and SIGTERM write: shut down.
pub const STOP: u8 = b'!';
/// The byte SIGHUP writes: read the configuration's files again.
pub const RELOAD: u8 = b'H';

extern "C" fn on_signal(signal: libc::c_int) {
    // Only async-signal-safe calls here: write(2), and errno saved around it.
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: errno location is valid for this thread; write(2) is
        // async-signal-safe and the buffer outlives the call.
        unsafe {
            let errno = *errno_location();
            let byte = if signal == libc::SIGHUP { RELOAD } else { STOP };
            libc::write(fd, (&byte as *const u8).cast(), 1);
            *errno_location() = errno;
        }
    }
}

// The thread's errno, under the name each C library gives it (std reads errno
// but cannot restore it).
#[cfg(target_os = "linux")]
use libc::__errno_location as errno_location;
#[cfg(target_vendor = "apple")]
use libc::__error as errno_location;

/// Installs the handlers; returns the end to register with the poller.
/// A write past the file-size limit (RLIMIT_FSIZE) fails with `EFBIG`
/// instead of killing the process: the journal treats it as a full disk.
pub fn ignore_file_size_limit() {
    #[cfg(any(target_os = "linux", target_vendor = "apple"))]
    // SAFETY: setting a signal's disposition to SIG_IGN touches no memory.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}

/// `reload`: SIGHUP is caught too (else it keeps its default, the end of
/// the process).
pub fn install(reload: bool) -> io::Result<UnixStream> {
    let (receiver, sender) = UnixStream::pair()?;
    // The sending end stays open for the life of the process.
    WAKE_FD.store(sender.into_raw_fd(), Ordering::Relaxed);
    let hangup = [libc::SIGHUP];
    let signals =
        [libc::SIGINT, libc::SIGTERM]
            .iter()
            .chain(if reload { &hangup[..] } else { &[] });
    for &signal in signals {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler only
        // performs async-signal-safe work.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(receiver)
}

//! Zero-copy body relay on Linux: `splice(2)` moves bytes from the producer's
//! socket into a pipe and from the pipe into the consumer's socket without
//! passing through user space. Elsewhere (or if a pipe cannot be had) the
//! server copies through its buffers instead.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Bytes a transfer pipe is asked to hold (the kernel may grant less).
const PIPE_SIZE: libc::c_int = 1 << 20;
/// Pipes kept for reuse.
const POOL_KEEP: usize = 16;

/// A pipe carrying one transfer's body between two sockets.
#[derive(Debug)]
pub struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Bytes in the pipe, not yet moved to the consumer.
    pub filled: usize,
    /// How much the pipe holds.
    pub capacity: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as RawFd; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours alone.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // A larger pipe moves more per system call; the default (64 KiB) still works.
        // SAFETY: fcntl on a descriptor we own.
        let granted = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        let capacity = if granted > 0 {
            granted as usize
        } else {
            64 * 1024
        };
        Ok(Pipe {
            read,
            write,
            filled: 0,
            capacity,
        })
    }

    /// Moves up to `len` bytes from socket `from` into the pipe.
    pub fn fill_from(&mut self, from: RawFd, len: usize) -> io::Result<usize> {
        let n = splice(
            from,
            self.write.as_raw_fd(),
            len.min(self.capacity - self.filled),
        )?;
        self.filled += n;
        Ok(n)
    }

    /// Moves what the pipe holds into socket `to` (as much as it takes).
    pub fn drain_into(&mut self, to: RawFd) -> io::Result<usize> {
        let n = splice(self.read.as_raw_fd(), to, self.filled)?;
        self.filled -= n;
        Ok(n)
    }

    /// Copies the pipe's first `len` bytes into pipe `to` without consuming
    /// them (`tee(2)`: the pages are shared, not copied).
    pub fn tee_into(&self, to: &mut Pipe, len: usize) -> io::Result<usize> {
        // SAFETY: two pipe descriptors we own.
        let n = unsafe {
            libc::tee(
                self.read.as_raw_fd(),
                to.write.as_raw_fd(),
                len,
                libc::SPLICE_F_NONBLOCK,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        to.filled += n as usize;
        Ok(n as usize)
    }

    /// Moves up to `len` bytes into pipe `to`.
    pub fn move_into(&mut self, to: &mut Pipe, len: usize) -> io::Result<usize> {
        let n = splice(self.read.as_raw_fd(), to.write.as_raw_fd(), len)?;
        self.filled -= n;
        to.filled += n;
        Ok(n)
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors and null offsets (both ends are streams).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Empty pipes for reuse, so a warm relay creates none per transfer.
#[derive(Default)]
pub struct PipePool {
    free: Vec<Pipe>,
    /// Creating a pipe failed (descriptors short, or no support): copy instead
    /// until a pipe is returned.
    unavailable: bool,
}

impl PipePool {
    pub fn take(&mut self) -> Option<Pipe> {
        if let Some(pipe) = self.free.pop() {
            return Some(pipe);
        }
        if self.unavailable {
            return None;
        }
        match Pipe::new() {
            Ok(pipe) => Some(pipe),
            Err(_) => {
                self.unavailable = true;
                None
            }
        }
    }

    /// Takes back a pipe; one still holding bytes is closed instead.
    pub fn give(&mut self, pipe: Pipe) {
        self.unavailable = false;
        if pipe.filled == 0 && self.free.len() < POOL_KEEP {
            self.free.push(pipe);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    #[test]
    fn moves_bytes_between_sockets_through_the_pipe() {
        let (mut producer, relay_in) = UnixStream::pair().unwrap();
        let (relay_out, mut consumer) = UnixStream::pair().unwrap();
        relay_in.set_nonblocking(true).unwrap();
        relay_out.set_nonblocking(true).unwrap();
        let mut pool = PipePool::default();
        let mut pipe = pool.take().expect("pipes work here");
        producer.write_all(b"hello, zero copy").unwrap();
        assert_eq!(
            pipe.fill_from(relay_in.as_raw_fd(), 5).unwrap(),
            5,
            "at most len"
        );
        assert_eq!(pipe.fill_from(relay_in.as_raw_fd(), 100).unwrap(), 11);
        assert_eq!(pipe.filled, 16);
        let err = pipe.fill_from(relay_in.as_raw_fd(), 100).unwrap_err();
        assert_eq!(
            err.kind(),
            io::ErrorKind::WouldBlock,
            "an empty socket would block"
        );
        assert_eq!(pipe.drain_into(relay_out.as_raw_fd()).unwrap(), 16);
        let mut got = [0u8; 16];
        consumer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello, zero copy");
        pool.give(pipe);
        assert_eq!(pool.free.len(), 1, "an empty pipe is kept");
    }

    #[test]
    fn tee_shares_a_pipes_bytes_and_move_hands_them_on() {
        let (mut producer, relay_in) = UnixStream::pair().unwrap();
        relay_in.set_nonblocking(true).unwrap();
        let mut pool = PipePool::default();
        let (mut stage, mut a, mut b) = (
            pool.take().unwrap(),
            pool.take().unwrap(),
            pool.take().unwrap(),
        );
        producer.write_all(b"to everyone").unwrap();
        assert_eq!(stage.fill_from(relay_in.as_raw_fd(), 100).unwrap(), 11);
        assert_eq!(stage.tee_into(&mut a, stage.filled).unwrap(), 11);
        assert_eq!(stage.filled, 11, "tee consumes nothing");
        assert_eq!(stage.move_into(&mut b, stage.filled).unwrap(), 11);
        assert_eq!((stage.filled, a.filled, b.filled), (0, 11, 11));
        for pipe in [&mut a, &mut b] {
            let (relay_out, mut consumer) = UnixStream::pair().unwrap();
            assert_eq!(pipe.drain_into(relay_out.as_raw_fd()).unwrap(), 11);
            let mut got = [0u8; 11];
            consumer.read_exact(&mut got).unwrap();
            assert_eq!(&got, b"to everyone");
        }
    }
}

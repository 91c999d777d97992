//! Process-wide calls: the descriptor limit, the kernel's randomness, the
//! resident memory, and giving freed heap pages back to the system.

use std::time::{SystemTime, UNIX_EPOCH};

/// Raises the soft descriptor limit to the hard one; returns the limit in force.
pub fn raise_descriptor_limit() -> usize {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
        // macOS refuses a soft limit above OPEN_MAX (10240), and its hard limit
        // is often unlimited: there, the most it allows.
        #[cfg(target_vendor = "apple")]
        if limit.rlim_cur < limit.rlim_max.min(10240) {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max.min(10240),
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = raised.rlim_cur;
            }
        }
        usize::try_from(limit.rlim_cur)
            .unwrap_or(usize::MAX)
            .min(1 << 24)
    }
}

/// Hands freed heap pages back to the system after a burst (glibc keeps them
/// otherwise; other allocators return them on their own).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The process's resident memory, from `/proc/self/statm` (read at each
/// call: a scrape wants it now). `None` where there is no such file.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages.checked_mul(u64::try_from(page).ok()?)
}

/// Seed for job ids: the kernel's randomness when available, else the clock.
pub fn random_seed() -> u64 {
    let mut seed = [0u8; 8];
    fill_random(&mut seed);
    u64::from_ne_bytes(seed)
}

/// Fills `buf` with the kernel's randomness; without it (never on a working
/// Linux), with a clock-seeded xorshift.
pub fn fill_random(buf: &mut [u8]) {
    if kernel_random(buf) {
        return;
    }
    let mut state = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    for byte in buf {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
}

#[cfg(target_os = "linux")]
fn kernel_random(buf: &mut [u8]) -> bool {
    // SAFETY: the buffer is valid for `buf.len()` bytes of writes.
    let got = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    usize::try_from(got).is_ok_and(|n| n == buf.len())
}

// getrandom(2) is Linux-only; getentropy(3) (macOS, the BSDs) gives the same
// randomness, at most 256 bytes a call.
#[cfg(not(target_os = "linux"))]
fn kernel_random(buf: &mut [u8]) -> bool {
    buf.chunks_mut(256).all(|chunk| {
        // SAFETY: the chunk is valid for `chunk.len()` (at most 256) bytes of writes.
        unsafe { libc::getentropy(chunk.as_mut_ptr().cast(), chunk.len()) == 0 }
    })
}

//! This process's descriptor limit: the memory figure parks tens of
//! thousands of connections, each one a descriptor here and in the relay.

fn nofile() -> (u64, u64) {
    // SAFETY: getrlimit writes only the struct passed.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return (1024, 1024);
        }
        (l.rlim_cur, l.rlim_max)
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (children inherit it) and
/// tries a higher hard limit too (needs privilege); returns the new limits.
pub fn raise_nofile(wanted: u64) -> (u64, u64) {
    // SAFETY: getrlimit/setrlimit read and write only the struct passed.
    unsafe {
        let mut l: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            if l.rlim_max < wanted {
                let up = libc::rlimit {
                    rlim_cur: wanted,
                    rlim_max: wanted,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &up) == 0 {
                    l = up;
                }
            }
            if l.rlim_cur < l.rlim_max {
                let up = libc::rlimit {
                    rlim_cur: l.rlim_max,
                    rlim_max: l.rlim_max,
                };
                let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &up);
            }
        }
    }
    nofile()
}

pub fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

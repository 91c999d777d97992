//! CPU and run-queue wait of this process's threads, from `/proc`.

use httprelay_testkit::{cpu_time_in, run_queue_wait_in};

/// CPU seconds and run-queue wait seconds.
pub type Usage = (f64, f64);

/// CPU and run-queue wait of a thread, given its `/proc` directory.
pub fn thread_usage(dir: &str) -> Usage {
    (
        cpu_time_in(&format!("{dir}/stat")).map_or(0.0, |d| d.as_secs_f64()),
        run_queue_wait_in(&format!("{dir}/schedstat")).map_or(0.0, |d| d.as_secs_f64()),
    )
}

#[cfg(target_os = "linux")]
pub fn gettid() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

// Thread ids name `/proc/self/task` entries, which only Linux has: elsewhere
// no thread is found there and its usage reads as zero.
#[cfg(not(target_os = "linux"))]
pub fn gettid() -> i32 {
    0
}

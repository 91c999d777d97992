//! What `/proc` says about a process or thread: resident memory, CPU time and
//! time spent waiting for a CPU.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// VmRSS of a process in KiB, from /proc/PID/status.
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU time of a process, from /proc/PID/stat.
pub fn cpu_time_of(pid: u32) -> Option<Duration> {
    cpu_time_in(&format!("/proc/{pid}/stat"))
}

/// User + system CPU time from a `stat` file of `/proc` (a process's, or a
/// thread's such as `/proc/thread-self/stat`).
pub fn cpu_time_in(stat_path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as u64 } else { 100 };
    Some(Duration::from_micros((utime + stime) * 1_000_000 / ticks))
}

/// Time spent runnable but waiting on a run queue, from a `schedstat` file of
/// `/proc` (a process's or a thread's).
pub fn run_queue_wait_in(schedstat_path: &str) -> Option<Duration> {
    let text = std::fs::read_to_string(schedstat_path).ok()?;
    let ns: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Samples a process's RSS every few milliseconds on a thread and keeps the peak.
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<(u64, usize)>,
}

impl RssSampler {
    pub fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let (mut peak, mut samples) = (0, 0);
            while !flag.load(Ordering::Relaxed) {
                if let Some(kib) = rss_kib_of(pid) {
                    peak = peak.max(kib);
                    samples += 1;
                }
                thread::sleep(Duration::from_millis(10));
            }
            (peak, samples)
        });
        RssSampler { stop, handle }
    }

    /// Stops sampling; returns the peak RSS in KiB and the number of samples taken.
    pub fn finish(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("rss sampler thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let me = std::process::id();
        assert!(rss_kib_of(me).is_some_and(|kib| kib > 0));
        assert!(cpu_time_of(me).is_some());
        assert!(cpu_time_in("/proc/thread-self/stat").is_some());
        assert!(run_queue_wait_in("/proc/thread-self/schedstat").is_some());
    }
}

//! The relay as a child process: spawned with its flags, its output drained for
//! its whole life, its address taken from its `listening on ADDR` line, killed
//! when dropped.

use std::io::{self, BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::Conn;
use crate::sample::{cpu_time_of, rss_kib_of, run_queue_wait_in};

/// How long a relay is given to print its `listening on ADDR` line.
const STARTUP: Duration = Duration::from_secs(15);

/// Where the relay listens.
#[derive(Clone, Debug)]
pub enum Addr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// How to start a relay: its binary, flags and process limits.
pub struct Launch {
    command: Command,
    what: String,
    echo: Option<Arc<str>>,
}

impl Launch {
    pub fn new(binary: &Path, args: &[&str]) -> Launch {
        let mut command = Command::new(binary);
        command.args(args);
        Launch {
            command,
            what: format!("{} {args:?}", binary.display()),
            echo: None,
        }
    }

    /// Sets the relay's descriptor limit (RLIMIT_NOFILE, soft and hard) before
    /// exec, so that only the relay process is limited.
    pub fn nofile(self, nofile: u64) -> Launch {
        // SAFETY (both): setrlimit(2) only reads the limit passed.
        let set = |l: &libc::rlimit| unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, l) };
        self.rlimit(set, nofile, format!(" (nofile {nofile})"))
    }

    /// Limits the size of files the relay may write (RLIMIT_FSIZE, soft and
    /// hard): a disk that fills up, for the relay's journal.
    pub fn fsize(self, bytes: u64) -> Launch {
        let set = |l: &libc::rlimit| unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, l) };
        self.rlimit(set, bytes, format!(" (fsize {bytes})"))
    }

    /// Sets a limit (soft and hard) in the child with `set`, a setrlimit(2)
    /// call for one resource.
    fn rlimit(mut self, set: fn(&libc::rlimit) -> libc::c_int, value: u64, what: String) -> Launch {
        let limit = libc::rlimit {
            rlim_cur: value as libc::rlim_t,
            rlim_max: value as libc::rlim_t,
        };
        // SAFETY: setrlimit(2) is async-signal-safe and only reads `limit`, a plain
        // value copied into the closure.
        unsafe {
            self.command.pre_exec(move || {
                if set(&limit) == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            });
        }
        self.what.push_str(&what);
        self
    }

    /// Also copies each line the relay prints to this process's stderr, after
    /// `prefix`: for a run whose reader has no other way to see the relay's
    /// complaints.
    pub fn echo(mut self, prefix: &str) -> Launch {
        self.echo = Some(prefix.into());
        self
    }

    /// Spawns the relay and waits for its `listening on ADDR` line. The error
    /// says what was started and everything it printed.
    pub fn start(self) -> Result<RelayProcess, String> {
        let what = self.what;
        let (mut process, lines) =
            Supervised::spawn(self.command, self.echo).map_err(|e| format!("spawn {what}: {e}"))?;
        let deadline = Instant::now() + STARTUP;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = parse_listening(&line) {
                        break addr;
                    }
                }
                Err(_) => {
                    process.kill();
                    return Err(format!(
                        "relay {what} never printed `listening on ADDR`; output:\n{}",
                        process.output()
                    ));
                }
            }
        };
        Ok(RelayProcess { process, addr })
    }
}

/// A running relay process; killed when dropped.
pub struct RelayProcess {
    process: Supervised,
    addr: Addr,
}

impl RelayProcess {
    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// The relay's TCP address (panics for a Unix-socket relay).
    pub fn tcp_addr(&self) -> SocketAddr {
        match &self.addr {
            Addr::Tcp(a) => *a,
            Addr::Unix(p) => panic!("relay listens on {p:?}, not TCP"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Resident set size of the relay process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.pid()).expect("relay process status")
    }

    /// CPU time (user + system) the relay has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(self.pid()).expect("relay process stat")
    }

    /// Time the relay has spent runnable but waiting for a CPU.
    pub fn run_queue_wait(&self) -> Option<Duration> {
        run_queue_wait_in(&format!("/proc/{}/schedstat", self.pid()))
    }

    /// Everything the relay printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.process.output()
    }

    /// Opens a client connection to the relay.
    pub fn connect(&self) -> Conn {
        Conn::open(&self.addr)
    }

    /// Sends SIGTERM to the relay.
    pub fn terminate(&self) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(rc, 0, "kill(SIGTERM) failed");
    }

    /// Kills the relay at once (SIGKILL): no answers to its waiters, no goodbye.
    pub fn kill(&mut self) {
        self.process.kill()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the relay process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }
}

/// A child process whose stdout and stderr are drained into a log (each line
/// tagged with its pipe) for its whole life, so that neither pipe ever fills;
/// killed when dropped.
pub(crate) struct Supervised {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Supervised {
    /// Spawns `command`; the channel carries each line it prints as it arrives.
    pub(crate) fn spawn(
        mut command: Command,
        echo: Option<Arc<str>>,
    ) -> io::Result<(Supervised, mpsc::Receiver<String>)> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let log = Arc::new(Mutex::new(String::new()));
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        if let Some(stderr) = child.stderr.take() {
            drain(
                stderr,
                "stderr",
                lines_tx.clone(),
                log.clone(),
                echo.clone(),
            );
        }
        if let Some(stdout) = child.stdout.take() {
            drain(stdout, "stdout", lines_tx, log.clone(), echo);
        }
        Ok((Supervised { child, log }, lines_rx))
    }

    pub(crate) fn output(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn drain<R: Read + Send + 'static>(
    pipe: R,
    name: &'static str,
    lines: mpsc::Sender<String>,
    log: Arc<Mutex<String>>,
    echo: Option<Arc<str>>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut raw = Vec::new();
        loop {
            raw.clear();
            match reader.read_until(b'\n', &mut raw) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&raw).trim_end().to_string();
                    log.lock().unwrap().push_str(&format!("[{name}] {line}\n"));
                    if let Some(prefix) = &echo {
                        eprintln!("{prefix}{line}");
                    }
                    // The receiver is gone once the address is known; that is fine.
                    let _ = lines.send(line);
                }
            }
        }
    });
}

fn parse_listening(line: &str) -> Option<Addr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let token = rest.split_whitespace().next()?;
    if let Some(path) = token.strip_prefix("unix:") {
        return Some(Addr::Unix(PathBuf::from(path)));
    }
    // A relay serving HTTPS alone shows its TLS address.
    let token = token.strip_prefix("https://").unwrap_or(token);
    let token = token.trim_end_matches([',', '.', ';']);
    token.parse().ok().map(Addr::Tcp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listening_line_gives_the_address() {
        let tcp = parse_listening("httprelay 0.1.0 listening on 127.0.0.1:8080");
        assert!(matches!(tcp, Some(Addr::Tcp(a)) if a.port() == 8080));
        let unix = parse_listening("httprelay 0.1.0 listening on unix:/tmp/r.sock");
        assert!(matches!(unix, Some(Addr::Unix(p)) if p == Path::new("/tmp/r.sock")));
        let tls = parse_listening("httprelay 0.1.0 listening on https://127.0.0.1:8443");
        assert!(matches!(tls, Some(Addr::Tcp(a)) if a.port() == 8443));
        let both =
            parse_listening("httprelay 0.1.0 listening on 127.0.0.1:80 and https://[::1]:443");
        assert!(
            matches!(both, Some(Addr::Tcp(a)) if a.port() == 80),
            "the plain one first"
        );
        assert!(parse_listening("httprelay: worst-case memory 9 MiB").is_none());
    }
}

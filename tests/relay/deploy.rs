//! The start script for systems without systemd (`deploy/httprelay.init`),
//! run by dash and by BusyBox's shell against this build: start, status,
//! limits, the user, stop, a stale pidfile, a port already taken.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;

use super::get;
use super::support::{free_port, unix_ms, Addr, Conn};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/httprelay.init");

/// The script under one shell, with its own settings file, pidfile, log and
/// port in a temporary directory. Kills what the pidfile names when dropped.
struct Service {
    shell: &'static [&'static str],
    dir: PathBuf,
    port: u16,
}

impl Service {
    fn new(shell: &'static [&'static str]) -> Service {
        let dir = std::env::temp_dir().join(format!(
            "httprelay-init-{}-{}-{}",
            shell.join("-"),
            std::process::id(),
            unix_ms()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let port = free_port();
        let conf = format!(
            "HTTPRELAY_BIN={}\nHTTPRELAY_ARGS=\"-a 127.0.0.1 -p {port}\"\n\
             HTTPRELAY_PIDFILE={}\nHTTPRELAY_LOG={}\nHTTPRELAY_NOFILE=1000\n",
            env!("CARGO_BIN_EXE_httprelay"),
            dir.join("pid").display(),
            dir.join("log").display(),
        );
        std::fs::write(dir.join("conf"), conf).expect("settings file");
        Service { shell, dir, port }
    }

    /// Runs `script ACTION`; its exit code and what it printed.
    fn run(&self, action: &str) -> (i32, String) {
        let out = Command::new(self.shell[0])
            .args(&self.shell[1..])
            .arg(SCRIPT)
            .arg(action)
            .env("HTTPRELAY_CONF", self.dir.join("conf"))
            .output()
            .unwrap_or_else(|e| panic!("{:?}: {e}", self.shell));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Adds `line` to the settings file.
    fn set(&self, line: &str) {
        let conf = self.dir.join("conf");
        let mut text = std::fs::read_to_string(&conf).expect("settings file");
        text.push_str(line);
        text.push('\n');
        std::fs::write(conf, text).expect("settings file");
    }

    fn pidfile(&self) -> PathBuf {
        self.dir.join("pid")
    }

    fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.pidfile()).ok()?;
        text.trim().parse().ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        // A test that failed half-way leaves no relay behind.
        if let Some(pid) = self.pid().filter(|&pid| is_alive(pid)) {
            // SAFETY: kill(2) with a pid from this test's own pidfile.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Alive: present in `/proc` and not a zombie (killed, not yet reaped by
/// whoever inherited it).
fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|status| {
        !status
            .lines()
            .any(|l| l.starts_with("State:") && (l.contains('Z') || l.contains('X')))
    })
}

/// A line of `/proc/PID/limits`, e.g. "Max open files".
fn limit(pid: u32, name: &str) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits.lines().find(|l| l.starts_with(name)).expect(name);
    line[name.len()..]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn uid(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status.lines().find(|l| l.starts_with("Uid:")).expect("Uid");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn start_status_stop(shell: &'static [&'static str]) {
    let service = Service::new(shell);
    let (code, text) = service.run("status");
    assert_eq!(code, 3, "status before start: {text}");

    let (code, text) = service.run("start");
    assert_eq!(code, 0, "start: {text}\nlog:\n{}", service.log());
    let pid = service.pid().expect("pidfile after start");
    assert!(is_alive(pid));
    let mut conn = Conn::open(&Addr::Tcp(service.addr()));
    assert_eq!(conn.exchange(&get("/health")).status(), 200);
    drop(conn);

    // The pidfile names the relay itself, under the script's limits, not as root.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("comm");
    assert_eq!(comm.trim(), "httprelay");
    assert_eq!(limit(pid, "Max open files"), "1000 1000 files");
    assert_eq!(
        limit(pid, "Max address space"),
        "536870912 536870912 bytes",
        "HTTPRELAY_MEMORY_KIB's default, 512 MiB"
    );
    if is_root() {
        assert_ne!(uid(pid), 0, "started by root, the relay runs unprivileged");
    }

    // Starting again leaves it be; status says running.
    let (code, text) = service.run("start");
    assert_eq!(
        (code, service.pid()),
        (0, Some(pid)),
        "second start: {text}"
    );
    let (code, text) = service.run("status");
    assert_eq!(code, 0, "status while running: {text}");
    assert!(text.contains(&pid.to_string()), "{text}");

    // Stop: SIGTERM, the relay exits, the pidfile goes, the port is free.
    let (code, text) = service.run("stop");
    assert_eq!(code, 0, "stop: {text}");
    assert!(!is_alive(pid), "the relay is still running after stop");
    assert!(!service.pidfile().exists());
    TcpListener::bind(service.addr()).expect("the port is free after stop");
    assert!(service.log().contains("httprelay: shutting down"));
    let (code, text) = service.run("status");
    assert_eq!(code, 3, "status after stop: {text}");
    let (code, text) = service.run("stop");
    assert_eq!(code, 0, "stop when stopped: {text}");

    // A pidfile naming another live process is stale, not the relay.
    std::fs::write(service.pidfile(), format!("{}\n", std::process::id())).unwrap();
    let (code, text) = service.run("status");
    assert_eq!(code, 1, "status with a stale pidfile: {text}");
    let (code, text) = service.run("restart");
    assert_eq!(code, 0, "restart over a stale pidfile: {text}");
    let pid = service.pid().expect("pidfile after restart");
    assert_ne!(pid, std::process::id());
    let (code, _) = service.run("stop");
    assert_eq!(code, 0);
    assert!(!is_alive(pid));

    // HTTPRELAY_MEMORY is the relay's budget, and sizes the address space.
    service.set("HTTPRELAY_MEMORY=48M");
    let (code, text) = service.run("start");
    assert_eq!(
        code,
        0,
        "start with a budget: {text}\nlog:\n{}",
        service.log()
    );
    let pid = service.pid().expect("pidfile after start");
    assert_eq!(
        limit(pid, "Max address space"),
        format!("{0} {0} bytes", (2 * 48 + 64) << 20),
        "twice the budget plus 64 MiB"
    );
    assert!(
        service
            .log()
            .contains("httprelay: memory budget 48 MiB (--memory): "),
        "{}",
        service.log()
    );
    let (code, _) = service.run("stop");
    assert_eq!(code, 0);
    service.set("HTTPRELAY_MEMORY=lots");
    let (code, text) = service.run("start");
    assert_eq!(code, 2, "start with a budget that is not a size: {text}");
    assert!(
        text.contains("HTTPRELAY_MEMORY=lots is not a size"),
        "{text}"
    );
    assert!(!service.pidfile().exists());
    service.set("HTTPRELAY_MEMORY=");

    // A port already taken: start fails and leaves no pidfile nor process.
    let taken = TcpListener::bind(service.addr()).expect("take the port");
    let (code, text) = service.run("start");
    assert_eq!(code, 1, "start on a taken port: {text}");
    assert!(!service.pidfile().exists());
    assert!(service.log().contains("cannot listen"), "{}", service.log());
    drop(taken);
}

fn has(tool: &str) -> bool {
    Command::new(tool).arg("--help").output().is_ok()
}

fn check_shell(shell: &'static [&'static str], package: &str) {
    if !has(shell[0]) {
        super::support::unavailable(
            "START SCRIPT",
            "HTTPRELAY_REQUIRE_SHELLS",
            &format!("{} is not installed", shell[0]),
            &format!("deploy/httprelay.init was NOT run by {}.", shell.join(" ")),
            &format!("Run scripts/install-shells.sh (apt-get install {package})"),
        );
        return;
    }
    start_status_stop(shell);
}

#[test]
fn init_script_under_dash() {
    check_shell(&["dash"], "dash");
}

#[test]
fn init_script_under_busybox_sh() {
    check_shell(&["busybox", "sh"], "busybox");
}

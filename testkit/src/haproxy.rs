//! HAProxy in front of several relays: finding the binary, a port for it, and
//! the process itself.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::Supervised;

/// The `haproxy` binary: `$HTTPRELAY_HAPROXY`, else `haproxy` on `PATH`, else
/// `/usr/sbin/haproxy` (not on every user's `PATH`). `None` when there is none.
pub fn haproxy_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HTTPRELAY_HAPROXY") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for programs that cannot be
/// told to pick one themselves and report it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A running `haproxy -db -f CONFIG` (foreground); killed when dropped.
pub struct Haproxy(Supervised);

impl Haproxy {
    /// Starts haproxy on `config`, after `haproxy -c` accepted it. Does not wait for
    /// its listeners: the caller knows what to poll.
    pub fn start(binary: &Path, config: &Path) -> Haproxy {
        let check = Command::new(binary)
            .arg("-c")
            .arg("-f")
            .arg(config)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c rejects {}:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let mut command = Command::new(binary);
        command.arg("-db").arg("-f").arg(config);
        // Nobody waits for a line of haproxy's: its log is enough.
        let (process, _) = Supervised::spawn(command, None).expect("spawn haproxy");
        Haproxy(process)
    }

    /// Everything haproxy printed so far.
    pub fn output(&self) -> String {
        self.0.output()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.0.is_running()
    }
}

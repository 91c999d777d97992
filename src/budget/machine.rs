//! What the machine allows the relay: the memory limit of its cgroup (v2
//! `memory.max`, v1 `memory.limit_in_bytes`, the lowest on the way from its
//! own cgroup up to the hierarchy's root) and the machine's `MemTotal`. The
//! parsing is pure, over the files' text; [`Machine::read`] reads them.

use std::path::Path;

/// A v1 limit at or above this means none (v1 writes "unlimited" as
/// `PAGE_COUNTER_MAX` pages: 9223372036854771712 with 4 KiB pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// The figures a budget is read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    /// The lowest memory limit of the relay's cgroup and its ancestors.
    pub cgroup_limit: Option<u64>,
    /// `MemTotal` from `/proc/meminfo`, in bytes.
    pub mem_total: Option<u64>,
}

impl Machine {
    /// Reads `/proc/self/cgroup`, `/proc/self/mountinfo`, the cgroup files
    /// they lead to, and `/proc/meminfo`. Where a file is missing (not Linux,
    /// no cgroup file system mounted), the figure is `None`.
    pub fn read() -> Machine {
        let read = |path: &str| std::fs::read_to_string(Path::new(path)).ok();
        let cgroup_limit = match (read("/proc/self/cgroup"), read("/proc/self/mountinfo")) {
            (Some(cgroup), Some(mountinfo)) => cgroup_limit(&cgroup, &mountinfo, &read),
            _ => None,
        };
        Machine {
            cgroup_limit,
            mem_total: read("/proc/meminfo").as_deref().and_then(mem_total),
        }
    }
}

/// `MemTotal` in bytes from the text of `/proc/meminfo`.
pub fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line["MemTotal:".len()..].split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// The lowest memory limit on the path from the relay's cgroup (named in
/// `cgroup`, the text of `/proc/self/cgroup`) up to its hierarchy's mount
/// point (found in `mountinfo`, the text of `/proc/self/mountinfo`), in the
/// v2 hierarchy and the v1 memory one; `read` gives a file's text. `None`:
/// no limit anywhere.
pub fn cgroup_limit(
    cgroup: &str,
    mountinfo: &str,
    read: &dyn Fn(&str) -> Option<String>,
) -> Option<u64> {
    let mut lowest: Option<u64> = None;
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (mount, file) = if controllers.is_empty() {
            (mount_of(mountinfo, |fs, _| fs == "cgroup2"), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            let memory =
                |fs: &str, opts: &str| fs == "cgroup" && opts.split(',').any(|o| o == "memory");
            (mount_of(mountinfo, memory), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let Some((root, mount_point)) = mount else {
            continue;
        };
        for dir in up_from(path, root, mount_point) {
            let limit = read(&format!("{dir}/{file}")).and_then(|text| limit_of(&text));
            if let Some(limit) = limit {
                lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
            }
        }
    }
    lowest
}

/// A limit file's value: `None` for "max" (v2) or v1's unlimited.
fn limit_of(text: &str) -> Option<u64> {
    let n: u64 = text.trim().parse().ok()?;
    (n < V1_UNLIMITED).then_some(n)
}

/// The root and mount point of the first mount whose file-system type and
/// super options `wanted` accepts. A mountinfo line: `id parent dev root
/// mount-point options [optional fields] - type source super-options`.
fn mount_of(mountinfo: &str, wanted: impl Fn(&str, &str) -> bool) -> Option<(&str, &str)> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        let (fs, opts) = (
            *fields.get(dash + 1)?,
            fields.get(dash + 3).copied().unwrap_or(""),
        );
        (dash >= 5 && wanted(fs, opts)).then(|| (fields[3], fields[4]))
    })
}

/// The directories from the cgroup `path` up to the mount point. A path
/// outside the mount's root (a container that sees the host's path but has
/// only its own cgroup mounted) starts at the mount point itself.
fn up_from(path: &str, root: &str, mount_point: &str) -> Vec<String> {
    let relative = if root == "/" {
        path
    } else {
        path.strip_prefix(root).unwrap_or("")
    };
    let mut dirs = Vec::new();
    let mut rel = relative.trim_end_matches('/');
    loop {
        dirs.push(format!("{}{rel}", mount_point.trim_end_matches('/')));
        match rel.rfind('/') {
            Some(at) => rel = &rel[..at],
            None => break,
        }
    }
    dirs
}

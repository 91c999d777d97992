use std::collections::HashMap;

use super::machine::{cgroup_limit, mem_total};
use super::*;
use crate::config::{parse, Command};

const MIB: u64 = 1 << 20;

fn config(args: &[&str]) -> Config {
    match parse(args.iter().map(Into::into), None).unwrap() {
        Command::Run(c) => *c,
        other => panic!("{other:?}"),
    }
}

/// A file system of fixture files for [`cgroup_limit`].
fn files(entries: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = entries
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    move |path: &str| map.get(path).cloned()
}

const V2_MOUNT: &str = "\
22 1 0:21 / /proc rw,nosuid shared:12 - proc proc rw
25 24 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate
";
const V2_CGROUP: &str = "0::/system.slice/httprelay.service\n";

#[test]
fn v2_max_is_no_limit() {
    let read = files(&[
        (
            "/sys/fs/cgroup/system.slice/httprelay.service/memory.max",
            "max\n",
        ),
        ("/sys/fs/cgroup/system.slice/memory.max", "max\n"),
    ]);
    assert_eq!(cgroup_limit(V2_CGROUP, V2_MOUNT, &read), None);
}

#[test]
fn v2_a_number_is_the_limit_and_the_lowest_ancestor_wins() {
    let read = files(&[
        (
            "/sys/fs/cgroup/system.slice/httprelay.service/memory.max",
            "536870912\n",
        ),
        ("/sys/fs/cgroup/system.slice/memory.max", "max\n"),
    ]);
    assert_eq!(cgroup_limit(V2_CGROUP, V2_MOUNT, &read), Some(512 * MIB));
    let read = files(&[
        (
            "/sys/fs/cgroup/system.slice/httprelay.service/memory.max",
            "536870912\n",
        ),
        ("/sys/fs/cgroup/system.slice/memory.max", "268435456\n"),
    ]);
    assert_eq!(cgroup_limit(V2_CGROUP, V2_MOUNT, &read), Some(256 * MIB));
}

#[test]
fn v2_in_a_container_reads_its_own_root() {
    // docker run -m 64m: a cgroup namespace shows the container's cgroup as /.
    let mount = "30 25 0:26 / /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n";
    let read = files(&[("/sys/fs/cgroup/memory.max", "67108864\n")]);
    assert_eq!(cgroup_limit("0::/\n", mount, &read), Some(64 * MIB));
    // Without a namespace, the host's path is not under the mount's root.
    let mount = "30 25 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup rw\n";
    assert_eq!(
        cgroup_limit("0::/docker/abc\n", mount, &read),
        Some(64 * MIB)
    );
    assert_eq!(
        cgroup_limit("0::/elsewhere\n", mount, &read),
        Some(64 * MIB)
    );
}

/// A v1 machine (this is how a hybrid one looks: v2 mounted beside, without
/// the memory controller).
const V1_MOUNT: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
33 25 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
34 25 0:30 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
";
const V1_CGROUP: &str = "\
9:name=systemd:/
4:memory:/process_api/a99f
1:cpu:/
0::/
";

#[test]
fn v1_unlimited_is_no_limit() {
    let read = files(&[
        (
            "/sys/fs/cgroup/memory/process_api/a99f/memory.limit_in_bytes",
            "9223372036854771712\n",
        ),
        (
            "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes",
            "9223372036854771712\n",
        ),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        ),
    ]);
    assert_eq!(cgroup_limit(V1_CGROUP, V1_MOUNT, &read), None);
}

#[test]
fn v1_a_number_is_the_limit() {
    let read = files(&[
        (
            "/sys/fs/cgroup/memory/process_api/a99f/memory.limit_in_bytes",
            "9223372036854771712\n",
        ),
        (
            "/sys/fs/cgroup/memory/process_api/memory.limit_in_bytes",
            "134217728\n",
        ),
    ]);
    assert_eq!(cgroup_limit(V1_CGROUP, V1_MOUNT, &read), Some(128 * MIB));
    // The controller may share its hierarchy with others.
    let mount = "33 25 0:29 / /sys/fs/cgroup/mem rw - cgroup cgroup rw,cpu,memory\n";
    let read = files(&[("/sys/fs/cgroup/mem/x/memory.limit_in_bytes", "134217728")]);
    assert_eq!(
        cgroup_limit("3:cpu,memory:/x\n", mount, &read),
        Some(128 * MIB)
    );
}

#[test]
fn no_cgroup_is_no_limit() {
    let read = files(&[]);
    assert_eq!(cgroup_limit("", "", &read), None);
    assert_eq!(cgroup_limit(V2_CGROUP, "", &read), None);
    assert_eq!(cgroup_limit(V2_CGROUP, V2_MOUNT, &read), None);
    assert_eq!(cgroup_limit("garbage\n", V2_MOUNT, &read), None);
    let read = files(&[("/sys/fs/cgroup/memory.max", "nonsense")]);
    assert_eq!(cgroup_limit("0::/\n", V2_MOUNT, &read), None);
}

#[test]
fn meminfo_total() {
    let small = "MemTotal:          61440 kB\nMemFree:   1000 kB\n";
    assert_eq!(mem_total(small), Some(60 * MIB));
    let big = "MemTotal:       16384000 kB\nMemFree:        15000000 kB\n";
    assert_eq!(mem_total(big), Some(16_384_000 * 1024));
    assert_eq!(mem_total("MemFree: 1 kB\n"), None);
    assert_eq!(mem_total("MemTotal: lots kB\n"), None);
}

#[test]
fn the_budget_for_a_machine() {
    // A 64 MB gateway: a quarter of its 60 MiB is below the floor.
    let gateway = Budget::for_machine(None, Some(60 * MIB));
    assert_eq!(gateway.bytes, FLOOR);
    assert_eq!(
        gateway.to_string(),
        "16 MiB (a quarter of the machine's 60 MiB, at least 16 MiB)"
    );
    // A 256 MB one.
    assert_eq!(Budget::for_machine(None, Some(240 * MIB)).bytes, 60 * MIB);
    // 16 GB: the ceiling.
    let big = Budget::for_machine(None, Some(16_384_000 * 1024));
    assert_eq!(big.bytes, CEILING);
    assert_eq!(
        big.to_string(),
        "360 MiB (a quarter of the machine's 15.6 GiB, at most 360 MiB)"
    );
    // A unit's MemoryMax=256M on that machine: half of it.
    let unit = Budget::for_machine(Some(256 * MIB), Some(16_384_000 * 1024));
    assert_eq!(unit.bytes, 128 * MIB);
    assert_eq!(unit.source, Source::Cgroup { limit: 256 * MIB });
    assert_eq!(
        unit.to_string(),
        "128 MiB (half of the cgroup's limit of 256 MiB)"
    );
    // A cgroup limit above the machine's memory limits nothing.
    let loose = Budget::for_machine(Some(64 << 30), Some(1 << 30));
    assert_eq!(loose.source, Source::Meminfo { total: 1 << 30 });
    assert_eq!(loose.bytes, 256 * MIB);
    // Nothing known: the ceiling.
    assert_eq!(Budget::for_machine(None, None).bytes, CEILING);
    assert_eq!(Budget::flag(48 * MIB).to_string(), "48 MiB (--memory)");
}

#[test]
fn every_budget_fits_its_derived_flags() {
    for args in [&[][..], &["--data-dir", "/var/lib/httprelay"][..]] {
        every_budget_fits_its_derived_flags_with(args);
    }
}

fn every_budget_fits_its_derived_flags_with(args: &[&str]) {
    let mut budget = MIN_BUDGET;
    while budget <= 64 << 30 {
        let mut c = config(args);
        let fit = fit(&mut c, Budget::flag(budget));
        assert!(
            fit.bound.total() <= budget,
            "{budget}: {} over",
            fit.bound.total()
        );
        assert_eq!(fit.check(&c), Ok(()));
        assert_eq!(fit.derived, Limit::ALL, "every limit derived");
        // Most of the budget is used.
        assert!(
            fit.bound.total() >= budget / 100 * 95,
            "{budget}: {:?}",
            fit.bound
        );
        // A message that fits its limit fits its total.
        assert!(c.mcast_max_message <= c.mcast_total);
        assert!(c.mcast_max_message <= c.mcast_retain || c.mcast_retain == DEFAULT_MCAST_RETAIN);
        assert!(c.sync_max_body <= c.sync_total);
        assert!(c.inbox_max_message <= c.inbox_total);
        budget += budget / 7 + 12_345;
    }
}

#[test]
fn a_journal_leaves_room_for_its_rewrite_in_the_budget() {
    let (mut plain, mut journaled) = (config(&[]), config(&["--data-dir", "/x"]));
    fit(&mut plain, Budget::flag(128 * MIB));
    let fit = fit(&mut journaled, Budget::flag(128 * MIB));
    assert!(fit.bound.journal > 0);
    assert!(fit.bound.total() <= 128 * MIB);
    // A rewrite may hold as much inbox again: the inbox gets half.
    assert!(journaled.inbox_total <= plain.inbox_total / 2 + (64 << 10));
    assert!(journaled.max_channels < plain.max_channels);
}

#[test]
fn a_32_mib_budget_serves_128_connections_at_once() {
    let mut c = config(&[]);
    fit(&mut c, Budget::flag(32 * MIB));
    assert!(c.max_conns.unwrap() >= 150, "{:?}", c.max_conns);
    assert_eq!(c.max_head, 8192);
}

#[test]
fn given_flags_win_and_the_rest_share_what_they_leave() {
    let mut plain = config(&[]);
    fit(&mut plain, Budget::flag(64 * MIB));
    let mut c = config(&["--max-conns", "100", "--mcast-total", "1M"]);
    let fit = fit(&mut c, Budget::flag(64 * MIB));
    assert_eq!(c.max_conns, Some(100));
    assert_eq!(c.mcast_total, MIB as usize);
    assert!(!fit.derived.contains(&Limit::MaxConns));
    assert!(!fit.derived.contains(&Limit::McastTotal));
    // What the fewer connections leave goes to the other terms.
    assert!(c.sync_total > plain.sync_total);
    assert!(c.max_channels > plain.max_channels);
    assert!(fit.bound.total() <= 64 * MIB);
    assert_eq!(fit.check(&c), Ok(()));
}

#[test]
fn given_flags_over_the_budget_are_named() {
    let mut c = config(&[
        "--memory",
        "32M",
        "--max-conns",
        "2000",
        "--max-channels",
        "1000",
    ]);
    let fit = fit(&mut c, Budget::flag(32 * MIB));
    let over = fit.check(&c).unwrap_err();
    assert_eq!(over.flags, "--max-conns 2000 --max-channels 1000");
    assert_eq!(
        over.to_string(),
        format!(
            "--max-conns 2000 --max-channels 1000 need up to {} of memory, more than the budget: 32 MiB (--memory)",
            Size(fit.bound.total())
        )
    );
}

#[test]
fn the_ceiling_is_about_the_old_defaults_bound() {
    // The limits the relay had before it had a budget; a channel has cost 64
    // bytes more since it keeps its owner (2 MiB at 32,768 channels).
    let c = config(&[]);
    let old = MemoryBound::new(&c, crate::config::DEFAULT_MAX_CONNS).total();
    assert!(old.abs_diff(CEILING) <= 2 * MIB, "{old}");
}

#[test]
fn the_split_in_the_readme_is_the_split_of_its_budgets() {
    let readme = include_str!("../../README.md");
    for mib in [32u64, 64, 128, 512] {
        let mut c = config(&[]);
        fit(&mut c, Budget::flag(mib * MIB));
        let m = |b: usize| b as f64 / MIB as f64;
        let row = format!(
            "| `--memory {mib}M` | {} | {} KiB | {:.1} + {:.1} + {:.1} MiB | {} |",
            c.max_conns.unwrap(),
            c.max_head / 1024,
            m(c.mcast_total),
            m(c.sync_total),
            m(c.inbox_total),
            c.max_channels
        );
        assert!(readme.contains(&row), "README.md lacks {row}");
    }
}

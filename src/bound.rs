//! The relay's worst-case memory as a function of its flags (docs/memory.md,
//! "Memory bound"). Every term is a cap the code enforces; the figures per
//! connection and per channel are measured (`scripts/waiter-cost.py`) and
//! rounded up, and `tests/relay/memory.rs` checks the whole against a relay
//! driven by every kind of traffic that makes it hold memory.

use crate::config::Config;

/// A response buffer: held by a connection while it writes a response (a
/// head plus a slice of relayed body; 64 KiB keeps syscalls per relayed
/// megabyte low).
pub const OUTPUT_BUF_SIZE: usize = 64 * 1024;
/// Buffers of each size kept for reuse when no connection holds them.
pub const POOL_KEEP: usize = 64;
/// The process before any client: code, libc, tables, event buffers
/// (measured: 2.1 MiB resident at start), and the 1 MiB pass buffer that
/// Content-Length bodies go through (`sys/pass.rs`, resident once used).
pub const BASE: u64 = 4 << 20;
/// A connection's record, socket wrapper, timer and slab slot, and its entry
/// among its client address's connections (`server/clients.rs`, under 200 B),
/// with margin.
pub const CONNECTION_RECORD: u64 = 4 << 10;
/// What a connection holds in units of `--max-head`: the input buffer (or the
/// bytes it stashed while parked), and the request fields: copies of parts of
/// one head, the decoded path, the channel id, and a proxy or piping request's
/// copy of its head (or a piping form upload's part head, kept to `--max-head`). (The `HttpRelay-Query` form of a query is made in shared scratch
/// space when a response needs it.)
pub const HEADS_PER_CONNECTION: u64 = 6;
/// A TLS session's own memory (`--tls-cert`), on top of a connection's:
/// measured 8.6 KiB for an idle session after its handshake (state, keys,
/// a 4 KiB read buffer); at most one record arriving (18 KiB; a handshake
/// may send 16 KiB in all, `server/tls.rs`), one record's plaintext not
/// yet taken (18 KiB) and one record leaving (16.4 KiB) besides: about
/// 60 KiB, rounded up.
pub const TLS_SESSION: u64 = 64 << 10;
/// A remembered channel (record, key, claim, expiry entry, its share of the
/// table), measured at the cap: at most 354 B (a proxy id with a claim),
/// before its owner was kept: 16 B more in its table entry (32 B with the
/// table's slack) and, when every channel has another owner, an entry of the
/// owners' map each (at most 40 B).
pub const CHANNEL_COST: u64 = 448;

/// What a journal rewrite's snapshot holds per remembered channel (with
/// `--data-dir`): up to two records (an acknowledged inbox entry is its write
/// and its acknowledgement, 96 B each) and, while it is taken, the core's
/// list of what is live (64 B an entry), with margin. Bodies and content
/// types are shared with the inbox, not copied.
pub const SNAPSHOT_ENTRY: u64 = 320;
/// A rewrite's buffers (its writer's and a copy buffer, 64 KiB each) and
/// the replay's window at start (256 KiB), with margin. (The record a
/// rewrite encodes, up to `--inbox-max-message`, is counted apart.)
pub const JOURNAL_BUFFERS: u64 = 512 << 10;

/// The parts of the bound, in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBound {
    /// The process. (The buffer pools are within the connections' term: a
    /// pool keeps only buffers that connections gave back and hands them out
    /// before it allocates, so a pool's buffers, in use or kept, never
    /// outnumber the connections; `buf.rs` tests it.)
    pub fixed: u64,
    /// Connections × (output buffer + 6 × `--max-head` + record, and a TLS
    /// session when HTTPS is served: [`per_connection`]).
    pub connections: u64,
    /// 1.25 × (`--mcast-total` + `--sync-total` + `--inbox-total`): held
    /// bodies, and what the allocator may keep beside them.
    pub held: u64,
    /// `--max-channels` × [`CHANNEL_COST`].
    pub channels: u64,
    /// With `--data-dir`, a journal rewrite under way: its buffers and the
    /// record it encodes, a [`SNAPSHOT_ENTRY`] per channel, and the inbox
    /// bodies it shares, which
    /// stay until written even when the inbox has let go of them and taken
    /// others (1.25 × `--inbox-total`). Zero without `--data-dir`.
    pub journal: u64,
}

impl MemoryBound {
    pub fn new(config: &Config, max_conns: usize) -> MemoryBound {
        let held = (config.mcast_total as u64)
            .saturating_add(config.sync_total as u64)
            .saturating_add(config.inbox_total as u64);
        MemoryBound {
            fixed: BASE,
            connections: (max_conns as u64).saturating_mul(per_connection(config)),
            held: held.saturating_add(held / 4),
            channels: (config.max_channels as u64).saturating_mul(CHANNEL_COST),
            journal: if config.data_dir.is_some() {
                let inbox = config.inbox_total as u64;
                JOURNAL_BUFFERS
                    .saturating_add(config.inbox_max_message as u64)
                    .saturating_add(inbox.saturating_add(inbox / 4))
                    .saturating_add((config.max_channels as u64).saturating_mul(SNAPSHOT_ENTRY))
            } else {
                0
            },
        }
    }

    pub fn total(&self) -> u64 {
        self.fixed
            .saturating_add(self.connections)
            .saturating_add(self.held)
            .saturating_add(self.channels)
            .saturating_add(self.journal)
    }
}

/// What one connection may hold: its output buffer, `--max-head` six times
/// over, its record, and with HTTPS served a TLS session (any connection
/// may be one).
pub fn per_connection(config: &Config) -> u64 {
    let tls = if config.tls.is_some() { TLS_SESSION } else { 0 };
    OUTPUT_BUF_SIZE as u64 + HEADS_PER_CONNECTION * config.max_head as u64 + CONNECTION_RECORD + tls
}

impl std::fmt::Display for MemoryBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b.div_ceil(1 << 20);
        write!(
            f,
            "{} MiB (fixed {} MiB + connections {} MiB + held bodies {} MiB + channels {} MiB",
            mib(self.total()),
            mib(self.fixed),
            mib(self.connections),
            mib(self.held),
            mib(self.channels)
        )?;
        if self.journal > 0 {
            write!(f, " + journal rewrite {} MiB", mib(self.journal))?;
        }
        write!(f, ")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{fit, Budget};
    use crate::config::{parse, Command};

    fn config(args: &[&str]) -> Config {
        match parse(args.iter().map(Into::into), None).unwrap() {
            Command::Run(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_startup_lines_in_the_docs_are_those_of_a_23_gib_machine() {
        let docs = include_str!("../docs/memory.md");
        let mut c = config(&[]);
        let budget = Budget::for_machine(None, Some(24_683_784 * 1024));
        let fit = fit(&mut c, budget);
        let bound = MemoryBound::new(&c, c.max_conns.unwrap());
        for line in [
            format!("httprelay: {}", fit.startup_line(&c)),
            format!("httprelay: worst-case memory for these flags: {bound}"),
        ] {
            assert!(docs.contains(&line), "docs/memory.md lacks {line}");
        }
    }

    #[test]
    fn the_budget_rows_in_the_docs_are_the_split_of_their_budget() {
        let docs = include_str!("../docs/memory.md");
        let mut rows = 0;
        let budget_row = |l: &&str| l.starts_with("| ") && l.contains(" | `--max-conns ");
        for line in docs.lines().filter(budget_row) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let mib: u64 = cells[1].trim_end_matches(" MiB").parse().unwrap();
            let mut c = config(&[]);
            let fit = fit(&mut c, Budget::flag(mib << 20));
            let shown = fit.derived_flags(&c, &crate::budget::Limit::ALL[..6]);
            assert_eq!(cells[2], format!("`{shown}`"), "{line}");
            let total = fit.bound.total().div_ceil(1 << 20);
            assert_eq!(cells[3], format!("{total} MiB"), "{line}");
            assert!(fit.bound.total() <= mib << 20, "{line}");
            rows += 1;
        }
        assert_eq!(rows, 4, "the budget table has 32, 64, 128 and 512 MiB");
    }

    #[test]
    fn every_flag_moves_its_term() {
        let base = MemoryBound::new(&config(&[]), 100);
        let more = |args: &[&str], conns| MemoryBound::new(&config(args), conns);
        assert!(more(&[], 200).connections > base.connections);
        assert!(more(&["--max-head", "4096"], 100).connections < base.connections);
        assert!(more(&["--mcast-total", "1"], 100).held < base.held);
        assert!(more(&["--sync-total", "1"], 100).held < base.held);
        assert!(more(&["--inbox-total", "1"], 100).held < base.held);
        assert!(more(&["--max-channels", "10"], 100).channels < base.channels);
        assert_eq!(base.journal, 0, "nothing for a journal without --data-dir");
        let journaled = more(&["--data-dir", "/nonexistent"], 100);
        assert!(journaled.journal > 0);
        let more_inbox = more(&["--data-dir", "/x", "--inbox-total", "64M"], 100);
        assert!(more_inbox.journal > journaled.journal);
        let fewer_channels = more(&["--data-dir", "/x", "--max-channels", "10"], 100);
        assert!(fewer_channels.journal < journaled.journal);
        assert!(journaled.to_string().ends_with(" MiB)"));
        assert!(journaled.to_string().contains(" + journal rewrite "));
        assert!(!base.to_string().contains("journal"));
    }
}

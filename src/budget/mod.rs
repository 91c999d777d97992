//! One memory budget for the whole relay (`--memory`, or read from the
//! machine): every limit the flags leave unset is derived from it so that the
//! worst case ([`MemoryBound`]) fits within it. Pure: [`machine`] turns the
//! text of the cgroup and meminfo files into figures, [`fit`] turns a budget
//! into flags; only [`machine::Machine::read`] touches the file system.

pub mod machine;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::bound::{MemoryBound, BASE, CHANNEL_COST, JOURNAL_BUFFERS, SNAPSHOT_ENTRY};
use crate::config::{
    Config, DEFAULT_INBOX_MAX_MESSAGE, DEFAULT_MCAST_MAX_MESSAGE, DEFAULT_MCAST_RETAIN,
    DEFAULT_SYNC_MAX_BODY,
};
pub use crate::config::{Given, Limit};

const MIB: u64 = 1 << 20;

/// The smallest `--memory` accepted: the process, and a few connections.
pub const MIN_BUDGET: u64 = crate::config::MIN_MEMORY;
/// A budget read from the machine is at least this: the least that still
/// serves some 70 clients at once.
pub const FLOOR: u64 = 16 * MIB;
/// A budget read from the machine is at most this: the worst case of the
/// limits the relay had before it had a budget (1,024 connections, 144 MiB
/// of held bodies, 32,768 channels). Beyond it, `--memory` says so.
pub const CEILING: u64 = 360 * MIB;
/// Budgets below this get 8 KiB request heads (the most that nginx and
/// Apache accept by default), from it 16 KiB.
const SMALL_HEADS_BELOW: u64 = 128 * MIB;

/// Where a budget came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--memory`.
    Flag,
    /// Half of the memory limit of the cgroup the relay runs in: the cgroup
    /// is the service's own (a systemd unit's `MemoryMax=`, a container's
    /// `--memory`), and the kernel charges socket buffers and pipes to it too.
    Cgroup { limit: u64 },
    /// A quarter of the machine's memory (`MemTotal`): the relay shares it
    /// with the system and whatever else runs there.
    Meminfo { total: u64 },
    /// Neither could be read (not Linux): the ceiling.
    Unknown,
}

/// The most the relay may use at worst, and where that figure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub bytes: u64,
    pub source: Source,
}

impl Budget {
    /// `--memory`.
    pub fn flag(bytes: u64) -> Budget {
        Budget {
            bytes,
            source: Source::Flag,
        }
    }

    /// The budget for a machine whose cgroup allows `cgroup_limit` and which
    /// has `mem_total` bytes: half the cgroup's limit when it is below the
    /// machine's memory, else a quarter of the machine's, between [`FLOOR`]
    /// and [`CEILING`].
    pub fn for_machine(cgroup_limit: Option<u64>, mem_total: Option<u64>) -> Budget {
        let (source, share) = match (cgroup_limit, mem_total) {
            (Some(limit), total) if total.is_none_or(|t| limit < t) => {
                (Source::Cgroup { limit }, limit / 2)
            }
            (_, Some(total)) => (Source::Meminfo { total }, total / 4),
            (_, None) => (Source::Unknown, CEILING),
        };
        Budget {
            bytes: share.clamp(FLOOR, CEILING),
            source,
        }
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (", Size(self.bytes))?;
        let share = match self.source {
            Source::Flag => return f.write_str("--memory)"),
            Source::Unknown => return write!(f, "the machine's memory is unknown)"),
            Source::Cgroup { limit } => {
                write!(f, "half of the cgroup's limit of {}", Size(limit))?;
                limit / 2
            }
            Source::Meminfo { total } => {
                write!(f, "a quarter of the machine's {}", Size(total))?;
                total / 4
            }
        };
        if share < FLOOR {
            write!(f, ", at least {}", Size(FLOOR))?;
        } else if share > CEILING {
            write!(f, ", at most {}", Size(CEILING))?;
        }
        f.write_str(")")
    }
}

/// A byte count in the largest binary unit that keeps one decimal honest.
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 30 {
            write!(f, "{:.1} GiB", b as f64 / (1u64 << 30) as f64)
        } else if b % MIB == 0 || b >= 100 * MIB {
            write!(f, "{} MiB", b / MIB)
        } else {
            write!(f, "{:.1} MiB", b as f64 / MIB as f64)
        }
    }
}

/// The shares of what the budget leaves after the process itself, in
/// ninetieths: connections first (65 %), then held bodies (30 %: mcast and
/// sync 4/9 of it each, inbox 1/9, as the totals' defaults had it), then
/// remembered channels (5 %).
const SHARES: [(Limit, u64); 5] = [
    (Limit::MaxConns, 585),
    (Limit::McastTotal, 120),
    (Limit::SyncTotal, 120),
    (Limit::InboxTotal, 30),
    (Limit::MaxChannels, 45),
];

/// The least a derived limit gets, however small the budget's share.
const MIN_CONNS: u64 = 16;
const MIN_TOTAL: u64 = 64 << 10;
const MIN_CHANNELS: u64 = 256;
/// Derived totals are multiples of this (they print and read better).
const TOTAL_STEP: u64 = 64 << 10;

/// What applying a budget to a config did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fit {
    pub budget: Budget,
    /// The worst case of the flags now in the config.
    pub bound: MemoryBound,
    /// The limits the budget set, in [`Limit::ALL`] order.
    pub derived: Vec<Limit>,
}

/// Flags whose worst case passes the budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// The limits the command line set that enter the bound, as flags.
    pub flags: String,
    pub bound: u64,
    pub budget: Budget,
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = if self.flags.is_empty() {
            "the smallest limits"
        } else {
            &self.flags
        };
        write!(
            f,
            "{flags} need up to {} of memory, more than the budget: {}",
            Size(self.bound),
            self.budget
        )
    }
}

impl Fit {
    /// `Err` when the flags' worst case passes the budget.
    pub fn check(&self, config: &Config) -> Result<(), OverBudget> {
        let bound = self.bound.total();
        if bound <= self.budget.bytes {
            return Ok(());
        }
        let in_bound = &Limit::ALL[..6];
        let flags: Vec<String> = in_bound
            .iter()
            .filter(|l| config.given.has(**l))
            .map(|l| format!("--{} {}", l.flag(), l.value(config)))
            .collect();
        Err(OverBudget {
            flags: flags.join(" "),
            bound,
            budget: self.budget,
        })
    }

    /// The derived limits as flags (of `limits`, those derived).
    pub fn derived_flags(&self, config: &Config, limits: &[Limit]) -> String {
        let flags: Vec<String> = self
            .derived
            .iter()
            .filter(|l| limits.contains(l))
            .map(|l| format!("--{} {}", l.flag(), l.value(config)))
            .collect();
        flags.join(" ")
    }

    /// The startup line: the budget, where it came from, what it set.
    pub fn startup_line(&self, config: &Config) -> String {
        let derived = self.derived_flags(config, &Limit::ALL);
        if derived.is_empty() {
            format!("memory budget {}", self.budget)
        } else {
            format!("memory budget {}: {derived}", self.budget)
        }
    }
}

/// Sets every limit `config` was not given from `budget`: the request-head
/// size from the budget's size, then the terms of the bound from their
/// [`SHARES`] of what is left after the process and the limits given, then
/// each per-message limit from its total.
pub fn fit(config: &mut Config, budget: Budget) -> Fit {
    let given = config.given;
    let mut derived = Vec::new();
    let mut derive = |limit: Limit, value: u64, config: &mut Config| {
        if !given.has(limit) {
            set(config, limit, value);
            derived.push(limit);
        }
    };
    let head = if budget.bytes < SMALL_HEADS_BELOW {
        8 << 10
    } else {
        16 << 10
    };
    derive(Limit::MaxHead, head, config);

    let per_conn = crate::bound::per_connection(config);
    // With a journal, a rewrite may hold as much inbox again and a snapshot
    // entry per channel ([`MemoryBound::journal`]).
    let journaled = config.data_dir.is_some();
    let per_channel = CHANNEL_COST + if journaled { SNAPSHOT_ENTRY } else { 0 };
    // (`--inbox-max-message` is given or its default here: derived, it is no
    // more.)
    let fixed = BASE
        + if journaled {
            JOURNAL_BUFFERS + config.inbox_max_message as u64
        } else {
            0
        };
    let held_times = |limit: Limit| {
        if journaled && limit == Limit::InboxTotal {
            2
        } else {
            1
        }
    };
    let cost = |limit: Limit, config: &Config| {
        let v = limit.value(config);
        match limit {
            Limit::MaxConns => v.saturating_mul(per_conn),
            Limit::MaxChannels => v.saturating_mul(per_channel),
            _ => v.saturating_add(v / 4).saturating_mul(held_times(limit)),
        }
    };
    let left_for_derived = SHARES
        .iter()
        .filter(|(l, _)| given.has(*l))
        .fold(budget.bytes.saturating_sub(fixed), |left, (l, _)| {
            left.saturating_sub(cost(*l, config))
        });
    let weights: u64 = SHARES
        .iter()
        .filter(|(l, _)| !given.has(*l))
        .map(|(_, w)| w)
        .sum();
    for (limit, weight) in SHARES {
        let share = left_for_derived
            .checked_mul(weight)
            .map_or(u64::MAX, |s| s / weights.max(1));
        let value = match limit {
            Limit::MaxConns => (share / per_conn).max(MIN_CONNS),
            Limit::MaxChannels => (share / per_channel).max(MIN_CHANNELS),
            _ => (share / held_times(limit) / 5 * 4 / TOTAL_STEP * TOTAL_STEP).max(MIN_TOTAL),
        };
        derive(limit, value, config);
    }

    // A message never needs more than its total: past it, 413 rather than a
    // 503 no wait could end.
    let retain = config.mcast_total.min(DEFAULT_MCAST_RETAIN);
    derive(Limit::McastRetain, retain as u64, config);
    let message = config.mcast_total.min(DEFAULT_MCAST_MAX_MESSAGE);
    derive(Limit::McastMaxMessage, message as u64, config);
    let body = config.sync_total.min(DEFAULT_SYNC_MAX_BODY);
    derive(Limit::SyncMaxBody, body as u64, config);
    let inbox = config.inbox_total.min(DEFAULT_INBOX_MAX_MESSAGE);
    derive(Limit::InboxMaxMessage, inbox as u64, config);

    derived.sort_by_key(|l| Limit::ALL.iter().position(|a| a == l));
    let max_conns = config.max_conns.unwrap_or(crate::config::DEFAULT_MAX_CONNS);
    Fit {
        budget,
        bound: MemoryBound::new(config, max_conns),
        derived,
    }
}

fn set(config: &mut Config, limit: Limit, value: u64) {
    let v = usize::try_from(value).unwrap_or(usize::MAX);
    match limit {
        Limit::MaxConns => config.max_conns = Some(v),
        Limit::MaxHead => config.max_head = v,
        Limit::McastTotal => config.mcast_total = v,
        Limit::SyncTotal => config.sync_total = v,
        Limit::InboxTotal => config.inbox_total = v,
        Limit::MaxChannels => config.max_channels = v,
        Limit::McastMaxMessage => config.mcast_max_message = v,
        Limit::McastRetain => config.mcast_retain = v,
        Limit::SyncMaxBody => config.sync_max_body = v,
        Limit::InboxMaxMessage => config.inbox_max_message = v,
    }
}

//! What the relay acknowledged and must not forget, kept across restarts
//! (`--data-dir`): at start the journal is replayed into the core; while
//! running, what the core marks durable is appended, and the answers that
//! acknowledge it wait until it is (one `fdatasync` per turn with `--fsync
//! batch`). A journal that cannot be written turns those answers into `507`.

use std::collections::HashMap;

use super::conn::ConnId;
use super::store::{Fsync, Opened, Rewritten, Store};
use super::{unix_millis, Server, ServerError, CLOCK_BASE};
use crate::http::Status;
use crate::journal::Record;
use crate::relay::{Durable, InboxMessage, Kept, Key, Method, Millis, Relay};

/// A journal record's body is at most this (inbox messages are far smaller;
/// a longer length is garbage).
const MAX_RECORD: usize = 64 << 20;

/// The answer when the journal cannot be written.
const STORE_FAILED: &str = "507 relay storage failed: not kept, try again\n";

/// The relay and its journal, as `--data-dir` says.
pub(super) fn open(
    config: &crate::config::Config,
    seed: u64,
) -> Result<(Relay, Option<Store>), ServerError> {
    let Some(dir) = &config.data_dir else {
        return Ok((Relay::new(config.relay_settings(seed)), None));
    };
    crate::sys::signal::ignore_file_size_limit();
    let ttl = config.relay_settings(seed).inbox_ttl;
    let mut fold = Restore::new(unix_millis(), ttl);
    let opened = Store::open(dir, config.fsync, MAX_RECORD, seed, &mut |r| fold.add(r))
        .map_err(|e| ServerError::Store(dir.display().to_string(), e))?;
    let Opened {
        store,
        seed: kept_seed,
        ending,
        cut,
    } = opened;
    // Ids and secrets are kept as hashes under the journal's keys; job ids
    // still come from this run's randomness.
    let mut relay = Relay::new(config.relay_settings(kept_seed));
    relay.reseed(seed);
    relay.keep_durable();
    let restored = fold.apply(&mut relay, CLOCK_BASE);
    let mut store = store;
    store.set_max(config.data_max);
    // Begin from what is live (once the loop runs): expired entries,
    // superseded writes and any damage are gone from the file too.
    if !holds_only_its_header(&store) {
        store.ask_rewrite();
    }
    eprintln!(
        "httprelay: journal {}: {} inbox messages, {} acknowledged, {} claims restored; {} expired while down{}{}",
        store.path().display(),
        restored.messages,
        restored.acked,
        restored.claims,
        restored.expired,
        if cut > 0 { format!("; {cut} bytes of torn or corrupt tail cut") } else { String::new() },
        if ending.skipped.is_empty() {
            String::new()
        } else {
            format!("; {} corrupt stretches skipped", ending.skipped.len())
        },
    );
    Ok((relay, Some(store)))
}

/// Whether the journal holds nothing but its header (nothing to rewrite).
fn holds_only_its_header(store: &Store) -> bool {
    store.len() <= crate::journal::HEAD as u64 + 13
}

/// What the relay holds now (at core time `now`), as the records of a
/// journal rewritten to it.
fn snapshot(relay: &Relay, now: Millis) -> Vec<Record> {
    let mut kept = Vec::new();
    relay.durable_state(now, &mut kept);
    let unix_now = unix_millis();
    let acked = kept
        .iter()
        .filter(|k| matches!(k, Kept::Inbox { message: None, .. }))
        .count();
    let live = kept.iter().map(|k| match k {
        // An acknowledged entry is its write without the body (which is
        // gone), then its acknowledgement (below).
        Kept::Inbox {
            inbox,
            age,
            secret,
            message,
        } => inbox_put(
            *inbox,
            unix_now.saturating_sub(*age),
            *secret,
            message.as_deref(),
        ),
        Kept::Claim {
            method,
            channel,
            secret,
        } => claim(*method, *channel, *secret, unix_now),
    });
    let acks = kept.iter().filter_map(|k| match k {
        Kept::Inbox {
            inbox,
            message: None,
            ..
        } => Some(Record::InboxAck {
            inbox: inbox.to_bits(),
            at: unix_now,
        }),
        _ => None,
    });
    let mut records = Vec::with_capacity(kept.len() + acked);
    records.extend(live.chain(acks));
    records
}

/// The record of an inbox write at Unix time `at` (`message`: `None` for an
/// acknowledged entry, whose body is gone).
fn inbox_put(inbox: Key, at: u64, secret: Option<Key>, message: Option<&InboxMessage>) -> Record {
    Record::InboxPut {
        inbox: inbox.to_bits(),
        at,
        secret: secret.map(Key::to_bits),
        content_type: message.and_then(|m| m.content_type.clone()),
        body: message.map(|m| m.body.clone()).unwrap_or_default(),
    }
}

fn claim(method: Method, channel: Key, secret: Key, at: u64) -> Record {
    Record::Claim {
        method: method as u8,
        channel: channel.to_bits(),
        secret: secret.to_bits(),
        at,
    }
}

/// What a replay restored.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Restored {
    pub messages: usize,
    pub acked: usize,
    pub claims: usize,
    pub expired: usize,
}

/// An inbox entry as the journal leaves it.
struct Entry {
    at: u64,
    secret: Option<u128>,
    message: Option<crate::relay::MessageParts>,
}

/// The core's state rebuilt from the journal's records, folded one at a
/// time as the journal is read: the latest write of each inbox (its
/// acknowledgement, if one followed), every claim. What it holds at most is
/// what was live in the journal: a write drops the body it supersedes, and
/// one whose TTL is over keeps no body.
pub(super) struct Restore {
    inboxes: HashMap<u128, Entry>,
    claims: HashMap<(u8, u128), u128>,
    /// Unix time of the restart.
    unix_now: u64,
    ttl: Millis,
}

impl Restore {
    pub fn new(unix_now: u64, ttl: Millis) -> Restore {
        Restore {
            inboxes: HashMap::new(),
            claims: HashMap::new(),
            unix_now,
            ttl,
        }
    }

    pub fn add(&mut self, record: Record) {
        match record {
            Record::Header { .. } => {}
            Record::InboxPut {
                inbox,
                at,
                secret,
                content_type,
                body,
            } => {
                let live = self.unix_now.saturating_sub(at) < self.ttl;
                let message = live.then_some((body, content_type));
                self.inboxes.insert(
                    inbox,
                    Entry {
                        at,
                        secret,
                        message,
                    },
                );
            }
            Record::InboxAck { inbox, .. } => {
                if let Some(entry) = self.inboxes.get_mut(&inbox) {
                    entry.message = None;
                }
            }
            Record::Claim {
                method,
                channel,
                secret,
                ..
            } => {
                self.claims.insert((method, channel), secret);
            }
        }
    }

    /// Puts what was read into `relay`, at core time `now`.
    pub fn apply(self, relay: &mut Relay, now: Millis) -> Restored {
        let mut restored = Restored::default();
        for (inbox, entry) in self.inboxes {
            let acked = entry.message.is_none();
            let age = self.unix_now.saturating_sub(entry.at);
            let secret = entry.secret.map(Key::from_bits);
            if relay.restore_inbox(now, Key::from_bits(inbox), age, secret, entry.message) {
                if acked {
                    restored.acked += 1;
                } else {
                    restored.messages += 1;
                }
            } else {
                restored.expired += 1;
            }
        }
        for ((method, channel), secret) in self.claims {
            let Some(method) = Method::ALL.get(usize::from(method)).copied() else {
                continue;
            };
            relay.restore_claim(now, method, Key::from_bits(channel), Key::from_bits(secret));
            restored.claims += 1;
        }
        restored
    }
}

/// The record of what the core marked durable, at Unix time `at`.
fn record_of(durable: &Durable, at: u64) -> Record {
    match durable {
        Durable::InboxPut {
            inbox,
            secret,
            message,
        } => inbox_put(*inbox, at, *secret, Some(message)),
        Durable::InboxAck { inbox } => Record::InboxAck {
            inbox: inbox.to_bits(),
            at,
        },
        Durable::Claim {
            method,
            channel,
            secret,
        } => claim(*method, *channel, *secret, at),
    }
}

/// A journal record of an inbox message beyond its body and type.
pub(super) const INBOX_RECORD_OVERHEAD: u64 = 64;

impl Server {
    /// Whether the journal can take a record of `bytes` under `--data-max`.
    /// If not, a rewrite to what is live is begun (at the end of the turn),
    /// which may make room.
    pub(super) fn journal_room(&mut self, bytes: u64) -> bool {
        let Some(store) = &mut self.store else {
            return true;
        };
        if store.has_room(bytes) {
            return true;
        }
        if store.grew_since_rewrite() {
            store.ask_rewrite();
        }
        false
    }

    /// Finishes the rewrite whose pass is done, and begins one if the
    /// journal wants it (between turns: everything appended is committed).
    fn compact(&mut self) {
        let Some(store) = &mut self.store else {
            return;
        };
        match store.poll_rewrite() {
            Some(Rewritten::Done(took)) => {
                self.stats.compactions += 1;
                self.stats.compaction_seconds += took.as_secs_f64();
            }
            Some(Rewritten::Failed(e)) => eprintln!(
                "httprelay: journal {}: compaction failed (the journal is as it was): {e}",
                store.path().display()
            ),
            None => {}
        }
        if !store.wants_rewrite() {
            return;
        }
        let records = snapshot(&self.relay, self.now_millis());
        let Some(store) = &mut self.store else {
            return;
        };
        if let Err(e) = store.begin_rewrite(records) {
            eprintln!(
                "httprelay: journal {}: compaction could not begin: {e}",
                store.path().display()
            );
        }
    }

    /// The answer queued for `id` may acknowledge something the core marked
    /// durable this turn (see `send_output`): it leaves only once the journal
    /// has it (at once with `--fsync always`, at the end of the turn with
    /// `batch` and `off`).
    pub(super) fn hold_until_durable(&mut self, id: ConnId) {
        let Some(store) = &self.store else {
            return;
        };
        if store.fsync() == Fsync::Always {
            self.persist();
            return;
        }
        if let Some(conn) = self.conns.get_mut(id.0).filter(|c| !c.awaiting_sync) {
            conn.awaiting_sync = true;
            self.held_for_sync.push(id);
        }
    }

    /// Appends what the core marked durable since the last call, makes it
    /// durable, and lets the answers waiting for it go (or turns them into
    /// `507` if the journal could not be written).
    pub(super) fn persist(&mut self) {
        let Some(store) = &mut self.store else {
            return;
        };
        self.relay.take_durable(&mut self.durable);
        let at = unix_millis();
        for durable in self.durable.drain(..) {
            store.append(&record_of(&durable, at));
        }
        let failed = store.commit().err();
        if let Some(e) = &failed {
            self.stats.store_failures += 1;
            eprintln!("httprelay: journal {}: {e}", store.path().display());
        } else {
            self.compact();
        }
        for id in std::mem::take(&mut self.held_for_sync) {
            let Some(conn) = self.conns.get_mut(id.0) else {
                continue;
            };
            conn.awaiting_sync = false;
            if failed.is_some() {
                if let Some(output) = conn.output.as_mut() {
                    output.consume(output.len());
                }
                conn.req.keep_alive = false;
                self.respond_text(id, Status(507), STORE_FAILED, super::conn::After::Close);
            }
            self.ready.push(id);
        }
    }
}

//! The channels of one method, and the rules of how long each is kept:
//!
//! - a channel that holds nothing (no waiter, no upload, no claim, no
//!   message) is removed the moment an operation leaves it so;
//! - a channel that holds only a write-secret claim or retained messages is
//!   *remembered*: it counts against the cap on remembered channels and is
//!   forgotten once idle for the expiry time;
//! - a channel with a waiter or an upload in progress is *busy* and never
//!   expires.
//!
//! Expiry is a min-heap of deadlines with at most one live entry per channel
//! (pushed when a remembered channel goes idle, re-pushed when it fires early
//! because the channel was used since), so no operation scans the table.

use std::cmp::Reverse;
use std::collections::hash_map::Entry;
use std::collections::{BinaryHeap, HashMap};

use super::key::{Key, PassThrough};
use super::{Millis, WaiterId};

/// What the table needs to know about a channel of any method.
pub(super) trait Channel: Default {
    /// Requests counted as waiting (for metrics).
    fn waiting_len(&self) -> usize;
    /// A waiter or an upload in progress: kept whatever its age.
    fn is_busy(&self) -> bool;
    /// Holds a claim or messages: worth remembering while idle.
    fn is_remembered(&self) -> bool;
    fn last_active(&self) -> Millis;
    /// Removes every waiter (shutdown) into `out`.
    fn drain(&mut self, out: &mut Vec<WaiterId>);
    /// Empties a removed channel for reuse, keeping small allocations; returns
    /// false when it holds large ones that should be freed instead.
    fn recycle(&mut self) -> bool;
    /// The write-secret claim it holds (methods that have claims).
    fn claim(&self) -> Option<Key> {
        None
    }
    /// Holds the claim `secret` kept from before a restart, idle from `now`.
    fn restore_claim(&mut self, _now: Millis, _secret: Key) {}
}

/// The client address a remembered channel counts against (the low half of
/// its keyed hash).
pub(super) type Owner = u64;

/// A table entry. The channel lives in its own allocation, so that the table's
/// buckets (a power of two, up to twice the entries) stay small whatever the
/// size of a method's channel record.
struct Slot<C> {
    channel: Box<C>,
    /// Counted in `remembered` (mirrors `channel.is_remembered()` after each operation).
    counted: bool,
    /// The live expiry entry's epoch; 0 when the channel has none.
    epoch: u32,
    /// Whose share it counts in while it is remembered: the writer whose
    /// operation made it remembered.
    owner: Option<Owner>,
}

/// Emptied channel records kept for reuse, so that a busy relay creating and
/// removing channels all the time does not allocate for each.
const SPARE_KEEP: usize = 64;
/// Most expired channels removed by one call, so a burst of expiries is spread
/// over loop iterations instead of stalling one.
pub(super) const EXPIRE_BATCH: usize = 256;

pub(super) struct Table<C> {
    map: HashMap<Key, Slot<C>, PassThrough>,
    expiry: BinaryHeap<Reverse<(Millis, Key, u32)>>,
    next_epoch: u32,
    spare: Vec<Box<C>>,
    waiting: usize,
    remembered: usize,
    /// Remembered channels per owner (an owner with none has no entry).
    owned: HashMap<Owner, u32>,
    /// The owner of the operation running in [`Table::with_owner`].
    acting: Option<Owner>,
}

impl<C: Channel> Default for Table<C> {
    fn default() -> Self {
        Table {
            map: HashMap::with_hasher(PassThrough),
            expiry: BinaryHeap::new(),
            next_epoch: 1,
            spare: Vec::new(),
            waiting: 0,
            remembered: 0,
            owned: HashMap::new(),
            acting: None,
        }
    }
}

impl<C: Channel> Table<C> {
    /// Runs `op` on the channel `key` (created empty if absent), then settles
    /// the channel: counted, queued for expiry, or removed.
    pub fn with<R>(&mut self, key: Key, expiry: Millis, op: impl FnOnce(&mut C) -> R) -> R {
        let spare = &mut self.spare;
        let slot = self.map.entry(key).or_insert_with(|| Slot {
            channel: spare.pop().unwrap_or_default(),
            counted: false,
            epoch: 0,
            owner: None,
        });
        let before = slot.channel.waiting_len();
        let result = op(&mut slot.channel);
        self.waiting = self.waiting + slot.channel.waiting_len() - before;
        self.settle(key, expiry);
        result
    }

    /// Like [`Table::with`], for a writer of client address `owner`: if the
    /// operation makes the channel remembered, it counts in `owner`'s share.
    pub fn with_owner<R>(
        &mut self,
        key: Key,
        expiry: Millis,
        owner: Option<Owner>,
        op: impl FnOnce(&mut C) -> R,
    ) -> R {
        self.acting = owner;
        let result = self.with(key, expiry, op);
        self.acting = None;
        result
    }

    /// Remembered channels counted in `owner`'s share.
    pub fn owned_by(&self, owner: Owner) -> usize {
        self.owned.get(&owner).map_or(0, |&n| n as usize)
    }

    /// Owners with remembered channels.
    pub fn owners(&self) -> usize {
        self.owned.len()
    }

    /// Like [`Table::with`] for a channel that may not exist: nothing is created.
    pub fn with_existing<R>(
        &mut self,
        key: Key,
        expiry: Millis,
        op: impl FnOnce(&mut C) -> R,
    ) -> Option<R> {
        if !self.map.contains_key(&key) {
            return None;
        }
        Some(self.with(key, expiry, op))
    }

    fn settle(&mut self, key: Key, expiry: Millis) {
        let Entry::Occupied(mut entry) = self.map.entry(key) else {
            return;
        };
        let slot = entry.get_mut();
        let remembered = slot.channel.is_remembered();
        if remembered != slot.counted {
            slot.counted = remembered;
            if remembered {
                self.remembered += 1;
                slot.owner = self.acting;
                if let Some(owner) = slot.owner {
                    *self.owned.entry(owner).or_default() += 1;
                }
            } else {
                self.remembered -= 1;
                release(&mut self.owned, slot.owner.take());
            }
        }
        if slot.channel.is_busy() {
            return;
        }
        if !remembered {
            let (_, slot) = entry.remove_entry();
            self.recycle(slot.channel);
            return;
        }
        if slot.epoch == 0 {
            slot.epoch = self.next_epoch;
            self.next_epoch = self.next_epoch.wrapping_add(1).max(1);
            let due = slot.channel.last_active().saturating_add(expiry);
            self.expiry.push(Reverse((due, key, slot.epoch)));
        }
    }

    fn recycle(&mut self, mut channel: Box<C>) {
        if self.spare.len() < SPARE_KEEP && channel.recycle() {
            self.spare.push(channel);
        }
        // A burst of channels leaves a large table behind; give the memory back
        // once it is mostly empty (a shrink moves only the few entries left).
        let capacity = self.map.capacity();
        if capacity > 4096 && self.map.len() * 8 < capacity {
            self.map.shrink_to(self.map.len() * 2);
        }
    }

    /// When the earliest expiry entry is due.
    pub fn next_due(&self) -> Option<Millis> {
        self.expiry.peek().map(|Reverse((due, _, _))| *due)
    }

    /// Forgets remembered channels idle for `expiry`, at most `budget` entries
    /// looked at. Returns the entries looked at and the channels forgotten.
    /// (What a forgotten channel held is given back as its records drop: mcast
    /// messages settle the ledger themselves.)
    pub fn expire(&mut self, now: Millis, expiry: Millis, budget: usize) -> (usize, usize) {
        let (mut looked, mut forgotten) = (0, 0);
        while looked < budget {
            let Some(&Reverse((due, key, epoch))) = self.expiry.peek() else {
                break;
            };
            if due > now {
                break;
            }
            self.expiry.pop();
            looked += 1;
            let Some(slot) = self.map.get_mut(&key).filter(|s| s.epoch == epoch) else {
                continue; // removed, or a newer entry stands for it
            };
            if slot.channel.is_busy() {
                // Queued again when it next goes idle.
                slot.epoch = 0;
                continue;
            }
            let due = slot.channel.last_active().saturating_add(expiry);
            if due > now {
                // Used since the entry was pushed.
                self.expiry.push(Reverse((due, key, epoch)));
                continue;
            }
            let slot = self.map.remove(&key).expect("looked up above");
            if slot.counted {
                self.remembered -= 1;
                release(&mut self.owned, slot.owner);
            }
            forgotten += 1;
            self.recycle(slot.channel);
        }
        // After a burst of expiries the heap is mostly empty: give it back too.
        let capacity = self.expiry.capacity();
        if capacity > 4096 && self.expiry.len() * 8 < capacity {
            self.expiry.shrink_to(self.expiry.len() * 2);
        }
        (looked, forgotten)
    }

    pub fn drain(&mut self, out: &mut Vec<WaiterId>, expiry: Millis) {
        let keys: Vec<Key> = self.map.keys().copied().collect();
        for key in keys {
            self.with(key, expiry, |c| c.drain(out));
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn waiting(&self) -> usize {
        self.waiting
    }

    pub fn remembered(&self) -> usize {
        self.remembered
    }

    /// Every channel with its key (a journal's compaction, which visits the
    /// whole table).
    pub fn entries(&self) -> impl Iterator<Item = (Key, &C)> {
        self.map.iter().map(|(key, slot)| (*key, &*slot.channel))
    }

    /// Every channel (for tests and model checks: it visits the whole table).
    pub fn channels(&self) -> impl Iterator<Item = &C> {
        self.map.values().map(|s| &*s.channel)
    }
}

/// One remembered channel of `owner` is forgotten.
fn release(owned: &mut HashMap<Owner, u32>, owner: Option<Owner>) {
    let Some(owner) = owner else {
        return;
    };
    if let Entry::Occupied(mut count) = owned.entry(owner) {
        *count.get_mut() -= 1;
        if *count.get() == 0 {
            count.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A channel with a waiter count, a claim flag and an activity time.
    #[derive(Default, Debug)]
    struct Toy {
        waiters: usize,
        claim: bool,
        last: Millis,
    }

    impl Channel for Toy {
        fn waiting_len(&self) -> usize {
            self.waiters
        }
        fn is_busy(&self) -> bool {
            self.waiters > 0
        }
        fn is_remembered(&self) -> bool {
            self.claim
        }
        fn last_active(&self) -> Millis {
            self.last
        }
        fn drain(&mut self, out: &mut Vec<WaiterId>) {
            out.extend((0..self.waiters).map(WaiterId));
            self.waiters = 0;
        }
        fn recycle(&mut self) -> bool {
            *self = Toy::default();
            true
        }
    }

    fn key(n: u128) -> Key {
        super::super::key::Hashing::new(n as u64).key(0, b"t")
    }

    #[test]
    fn a_channel_that_holds_nothing_is_removed_at_once() {
        let mut t = Table::<Toy>::default();
        t.with(key(1), 100, |c| c.waiters = 1);
        assert_eq!((t.len(), t.waiting()), (1, 1));
        t.with(key(1), 100, |c| c.waiters = 0);
        assert_eq!((t.len(), t.waiting(), t.remembered()), (0, 0, 0));
        assert_eq!(t.next_due(), None, "nothing to expire");
        assert_eq!(
            t.with_existing(key(1), 100, |_| ()),
            None,
            "not created by a lookup"
        );
    }

    #[test]
    fn a_claimed_channel_is_remembered_until_idle_for_the_expiry() {
        let mut t = Table::<Toy>::default();
        t.with(key(1), 100, |c| {
            c.claim = true;
            c.waiters = 1;
        });
        assert_eq!(t.remembered(), 1);
        assert_eq!(t.next_due(), None, "busy: not queued");
        t.with(key(1), 100, |c| {
            c.waiters = 0;
            c.last = 10;
        });
        assert_eq!(t.next_due(), Some(110));
        // Used again at 50: the entry at 110 fires early and is pushed to 150.
        t.with(key(1), 100, |c| c.last = 50);
        assert_eq!(t.expire(110, 100, 10), (1, 0));
        assert_eq!((t.len(), t.next_due()), (1, Some(150)));
        assert_eq!(t.expire(150, 100, 10), (1, 1));
        assert_eq!((t.len(), t.remembered()), (0, 0));
    }

    #[test]
    fn a_channel_busy_when_its_entry_fires_is_queued_again_when_idle() {
        let mut t = Table::<Toy>::default();
        t.with(key(1), 100, |c| c.claim = true);
        t.with(key(1), 100, |c| {
            c.waiters = 1;
            c.last = 20;
        });
        assert_eq!(t.expire(100, 100, 10), (1, 0));
        assert_eq!(t.next_due(), None);
        t.with(key(1), 100, |c| {
            c.waiters = 0;
            c.last = 300;
        });
        assert_eq!(t.next_due(), Some(400));
        assert_eq!(t.expire(400, 100, 10), (1, 1));
    }

    #[test]
    fn expiry_is_done_in_batches() {
        let mut t = Table::<Toy>::default();
        for n in 0..10 {
            t.with(key(n), 100, |c| c.claim = true);
        }
        assert_eq!(t.expire(100, 100, 4), (4, 4));
        assert_eq!(t.expire(100, 100, 4), (4, 4));
        assert_eq!(t.expire(100, 100, 4), (2, 2));
        assert_eq!((t.len(), t.remembered()), (0, 0));
    }

    #[test]
    fn a_removed_channel_leaves_no_live_entry_behind() {
        let mut t = Table::<Toy>::default();
        t.with(key(1), 100, |c| c.claim = true);
        // It loses its claim (as an mcast channel loses an aborted message).
        t.with(key(1), 100, |c| c.claim = false);
        assert_eq!(t.len(), 0);
        // Re-created and claimed later: only the new entry counts.
        t.with(key(1), 100, |c| {
            c.claim = true;
            c.last = 60;
        });
        assert_eq!(t.expire(100, 100, 10), (1, 0), "the stale entry");
        assert_eq!(t.expire(160, 100, 10), (1, 1));
    }

    #[test]
    fn drain_takes_every_waiter_and_removes_what_is_left_empty() {
        let mut t = Table::<Toy>::default();
        t.with(key(1), 100, |c| c.waiters = 2);
        t.with(key(2), 100, |c| {
            c.waiters = 1;
            c.claim = true;
        });
        let mut out = Vec::new();
        t.drain(&mut out, 100);
        assert_eq!(out.len(), 3);
        assert_eq!((t.len(), t.waiting()), (1, 0), "the claimed one stays");
    }
}

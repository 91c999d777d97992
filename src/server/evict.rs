//! The connections waiting for a request head (fresh, idle keep-alive or
//! mid-head), oldest first: the candidates for eviction at the connection
//! limit. An intrusive doubly linked list threaded through the slab: each
//! member holds its neighbours' keys, so joining at the tail, leaving from
//! anywhere and finding the oldest are O(1) and allocate nothing.

use std::time::{Duration, Instant};

use slab::Slab;

/// Whether the connection that has waited longest for a head may be evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Eviction {
    Now,
    /// Not before this: it has not had its grace yet.
    At(Instant),
}

/// Every client gets `grace` to send its head before it may make room for
/// another: one that began waiting at `since` may be evicted from then on.
pub fn eviction(since: Instant, now: Instant, grace: Duration) -> Eviction {
    let at = since + grace;
    if at > now {
        Eviction::At(at)
    } else {
        Eviction::Now
    }
}

/// A slab entry's place in a [`Queue`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Link {
    prev: Option<usize>,
    next: Option<usize>,
    queued: bool,
}

impl Link {
    pub fn is_queued(&self) -> bool {
        self.queued
    }
}

/// A slab entry that can be queued.
pub trait Queued {
    fn link(&self) -> &Link;
    fn link_mut(&mut self) -> &mut Link;
}

/// Slab keys in the order they joined. Every operation takes the slab that
/// holds the members; a member must leave before it is removed from the slab.
#[derive(Debug, Default)]
pub struct Queue {
    head: Option<usize>,
    tail: Option<usize>,
}

impl Queue {
    /// The member that joined first.
    pub fn front(&self) -> Option<usize> {
        self.head
    }

    /// Appends `key` as the newest member. Returns false (and changes nothing)
    /// if it is a member already.
    pub fn push_back<T: Queued>(&mut self, slab: &mut Slab<T>, key: usize) -> bool {
        if slab[key].link().queued {
            return false;
        }
        *slab[key].link_mut() = Link {
            prev: self.tail,
            next: None,
            queued: true,
        };
        match self.tail {
            Some(tail) => slab[tail].link_mut().next = Some(key),
            None => self.head = Some(key),
        }
        self.tail = Some(key);
        true
    }

    /// Takes `key` out wherever it is. Returns false if it was no member.
    pub fn unlink<T: Queued>(&mut self, slab: &mut Slab<T>, key: usize) -> bool {
        let Some(entry) = slab.get_mut(key) else {
            return false;
        };
        let link = std::mem::take(entry.link_mut());
        if !link.queued {
            return false;
        }
        match link.prev {
            Some(prev) => slab[prev].link_mut().next = link.next,
            None => self.head = link.next,
        }
        match link.next {
            Some(next) => slab[next].link_mut().prev = link.prev,
            None => self.tail = link.prev,
        }
        true
    }

    /// Takes out and returns the member that joined first.
    pub fn pop_front<T: Queued>(&mut self, slab: &mut Slab<T>) -> Option<usize> {
        let key = self.head?;
        self.unlink(slab, key);
        Some(key)
    }

    /// The members, oldest first.
    #[cfg(test)]
    pub fn keys<'a, T: Queued>(&self, slab: &'a Slab<T>) -> impl Iterator<Item = usize> + 'a {
        std::iter::successors(self.head, |&key| slab[key].link().next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_evictable_only_after_its_grace() {
        // A virtual clock: instants as offsets from one base.
        let base = Instant::now();
        let ms = |n| base + Duration::from_millis(n);
        let grace = Duration::from_millis(500);
        assert_eq!(
            eviction(ms(0), ms(0), grace),
            Eviction::At(ms(500)),
            "just accepted"
        );
        assert_eq!(eviction(ms(0), ms(499), grace), Eviction::At(ms(500)));
        assert_eq!(eviction(ms(0), ms(500), grace), Eviction::Now);
        assert_eq!(
            eviction(ms(100), ms(10_000), grace),
            Eviction::Now,
            "idle long"
        );
    }

    #[derive(Default)]
    struct Item {
        link: Link,
    }

    impl Queued for Item {
        fn link(&self) -> &Link {
            &self.link
        }
        fn link_mut(&mut self) -> &mut Link {
            &mut self.link
        }
    }

    fn setup(n: usize) -> (Slab<Item>, Queue, Vec<usize>) {
        let mut slab = Slab::new();
        let mut queue = Queue::default();
        let keys: Vec<usize> = (0..n).map(|_| slab.insert(Item::default())).collect();
        for &k in &keys {
            assert!(queue.push_back(&mut slab, k));
        }
        (slab, queue, keys)
    }

    /// The list read forwards and backwards agrees with `expected`, and only
    /// the expected entries are marked as members.
    fn check(slab: &Slab<Item>, queue: &Queue, expected: &[usize]) {
        assert_eq!(queue.keys(slab).collect::<Vec<_>>(), expected);
        let backwards: Vec<usize> = std::iter::successors(queue.tail, |&k| slab[k].link.prev)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        assert_eq!(backwards, expected);
        assert_eq!(queue.front(), expected.first().copied());
        for (key, item) in slab {
            assert_eq!(item.link.is_queued(), expected.contains(&key), "key {key}");
            if !item.link.is_queued() {
                assert_eq!(item.link, Link::default(), "key {key}");
            }
        }
    }

    #[test]
    fn keeps_arrival_order() {
        let (slab, queue, keys) = setup(5);
        check(&slab, &queue, &keys);
    }

    #[test]
    fn empty_queue() {
        let mut slab: Slab<Item> = Slab::new();
        let mut queue = Queue::default();
        check(&slab, &queue, &[]);
        assert_eq!(queue.pop_front(&mut slab), None);
        let k = slab.insert(Item::default());
        assert!(!queue.unlink(&mut slab, k));
        assert!(!queue.unlink(&mut slab, k + 1), "a key not in the slab");
        check(&slab, &queue, &[]);
    }

    #[test]
    fn unlinks_middle_head_and_tail() {
        let (mut slab, mut queue, k) = setup(5);
        assert!(queue.unlink(&mut slab, k[2]));
        check(&slab, &queue, &[k[0], k[1], k[3], k[4]]);
        assert!(queue.unlink(&mut slab, k[0]));
        check(&slab, &queue, &[k[1], k[3], k[4]]);
        assert!(queue.unlink(&mut slab, k[4]));
        check(&slab, &queue, &[k[1], k[3]]);
        assert!(!queue.unlink(&mut slab, k[4]), "twice");
        check(&slab, &queue, &[k[1], k[3]]);
        assert!(queue.unlink(&mut slab, k[3]));
        assert!(queue.unlink(&mut slab, k[1]));
        check(&slab, &queue, &[]);
    }

    #[test]
    fn pops_oldest_first() {
        let (mut slab, mut queue, k) = setup(3);
        assert_eq!(queue.pop_front(&mut slab), Some(k[0]));
        check(&slab, &queue, &[k[1], k[2]]);
        assert_eq!(queue.pop_front(&mut slab), Some(k[1]));
        assert_eq!(queue.pop_front(&mut slab), Some(k[2]));
        assert_eq!(queue.pop_front(&mut slab), None);
        check(&slab, &queue, &[]);
    }

    #[test]
    fn rejoining_goes_to_the_back_and_joining_twice_changes_nothing() {
        let (mut slab, mut queue, k) = setup(3);
        assert!(!queue.push_back(&mut slab, k[0]));
        check(&slab, &queue, &[k[0], k[1], k[2]]);
        assert!(queue.unlink(&mut slab, k[0]));
        assert!(queue.push_back(&mut slab, k[0]));
        check(&slab, &queue, &[k[1], k[2], k[0]]);
    }

    #[test]
    fn a_reused_slab_key_joins_as_new() {
        let (mut slab, mut queue, k) = setup(3);
        assert!(queue.unlink(&mut slab, k[1]));
        slab.remove(k[1]);
        let again = slab.insert(Item::default());
        assert_eq!(again, k[1], "the slab reuses the freed key");
        check(&slab, &queue, &[k[0], k[2]]);
        assert!(queue.push_back(&mut slab, again));
        check(&slab, &queue, &[k[0], k[2], again]);
    }

    #[test]
    fn interleaved_operations_match_a_model() {
        let mut slab: Slab<Item> = Slab::new();
        let mut queue = Queue::default();
        let mut model: Vec<usize> = Vec::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 4 {
                0 | 1 => {
                    let k = slab.insert(Item::default());
                    assert!(queue.push_back(&mut slab, k));
                    model.push(k);
                }
                2 if !model.is_empty() => {
                    let k = model.remove((x >> 8) as usize % model.len());
                    assert!(queue.unlink(&mut slab, k));
                    slab.remove(k);
                }
                _ => {
                    let got = queue.pop_front(&mut slab);
                    let want = (!model.is_empty()).then(|| model.remove(0));
                    assert_eq!(got, want);
                    if let Some(k) = got {
                        slab.remove(k);
                    }
                }
            }
            assert_eq!(queue.front(), model.first().copied());
        }
        check(&slab, &queue, &model);
    }
}

//! Who holds the relay's connections: the connections admitted to a request,
//! counted per client address, so that no address takes more than its share
//! (`--max-conns-per-client`), and so that when the relay is full the address
//! holding the most, and its oldest connection, are found in O(1).
//!
//! Addresses live in a slab; a map finds an address's entry; each entry is in
//! the bucket of its connection count (a doubly linked list per count), so
//! the fullest bucket is the address holding the most, and counts move by
//! one. Each entry keeps its connections in the order they were admitted (a
//! linked list in a second slab). An address leaves the table when it holds
//! nothing.

use std::collections::HashMap;
use std::net::IpAddr;

use slab::Slab;

/// A client address as the limits count it: an IPv4 address, or the first
/// `prefix` bits of an IPv6 one (a /64 is what one subscriber usually gets).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(u32),
    V6(u128),
}

impl ClientKey {
    pub fn of(ip: IpAddr, v6_prefix: u8) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => {
                let mask = match v6_prefix {
                    0 => 0,
                    p => u128::MAX << (128 - u32::from(p.min(128))),
                };
                ClientKey::V6(u128::from(v6) & mask)
            }
        }
    }
}

impl ClientKey {
    /// As 128 bits: an IPv6 prefix, or an IPv4 address in its IPv4-mapped
    /// form (`::ffff:a.b.c.d`).
    pub fn bits(self) -> u128 {
        match self {
            ClientKey::V4(a) => 0xffff_0000_0000 | u128::from(a),
            ClientKey::V6(p) => p,
        }
    }
}

/// A connection's place in the table, handed back to [`Clients::release`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    pub key: ClientKey,
    entry: usize,
    member: usize,
}

struct Entry {
    key: ClientKey,
    conns: usize,
    /// Neighbours in the bucket of `conns`.
    prev: Option<usize>,
    next: Option<usize>,
    /// Its connections, oldest admitted first (keys of `members`).
    oldest: Option<usize>,
    newest: Option<usize>,
}

struct Member {
    conn: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

#[derive(Default)]
pub struct Clients {
    index: HashMap<ClientKey, usize>,
    entries: Slab<Entry>,
    members: Slab<Member>,
    /// `buckets[n]`: the first entry holding `n` connections.
    buckets: Vec<Option<usize>>,
    /// The highest count with a non-empty bucket (0 when none).
    most: usize,
}

impl Clients {
    /// Connections admitted for `key`.
    pub fn conns_of(&self, key: ClientKey) -> usize {
        self.index.get(&key).map_or(0, |&e| self.entries[e].conns)
    }

    /// Addresses holding at least one connection.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Counts connection `conn` for `key`, as its newest.
    pub fn admit(&mut self, key: ClientKey, conn: usize) -> Admission {
        let entry = match self.index.get(&key) {
            Some(&e) => e,
            None => {
                let e = self.entries.insert(Entry {
                    key,
                    conns: 0,
                    prev: None,
                    next: None,
                    oldest: None,
                    newest: None,
                });
                self.index.insert(key, e);
                e
            }
        };
        let newest = self.entries[entry].newest;
        let member = self.members.insert(Member {
            conn,
            prev: newest,
            next: None,
        });
        match newest {
            Some(n) => self.members[n].next = Some(member),
            None => self.entries[entry].oldest = Some(member),
        }
        self.entries[entry].newest = Some(member);
        let count = self.entries[entry].conns;
        if count > 0 {
            self.unbucket(entry);
        }
        self.entries[entry].conns = count + 1;
        self.bucket(entry);
        Admission { key, entry, member }
    }

    /// Uncounts an admitted connection; the address leaves the table when it
    /// holds nothing more.
    pub fn release(&mut self, admission: Admission) {
        let Admission { entry, member, .. } = admission;
        let Member { prev, next, .. } = self.members.remove(member);
        match prev {
            Some(p) => self.members[p].next = next,
            None => self.entries[entry].oldest = next,
        }
        match next {
            Some(n) => self.members[n].prev = prev,
            None => self.entries[entry].newest = prev,
        }
        self.unbucket(entry);
        let count = self.entries[entry].conns - 1;
        self.entries[entry].conns = count;
        if count == 0 {
            let gone = self.entries.remove(entry);
            self.index.remove(&gone.key);
        } else {
            self.bucket(entry);
        }
        // A count moves by one: if the fullest bucket emptied, the entry that
        // left it is one below (or it was the last, and none is left).
        if self.buckets[self.most].is_none() {
            self.most = self.most.saturating_sub(1);
        }
    }

    /// The address holding the most connections, and how many.
    pub fn most(&self) -> Option<(ClientKey, usize)> {
        let entry = (*self.buckets.get(self.most)?)?;
        Some((self.entries[entry].key, self.most))
    }

    /// The connections of `key`, oldest admitted first.
    pub fn conns(&self, key: ClientKey) -> impl Iterator<Item = usize> + '_ {
        let first = self.index.get(&key).and_then(|&e| self.entries[e].oldest);
        std::iter::successors(first, |&m| self.members[m].next).map(|m| self.members[m].conn)
    }

    fn bucket(&mut self, entry: usize) {
        let count = self.entries[entry].conns;
        if self.buckets.len() <= count {
            self.buckets.resize(count + 1, None);
        }
        let head = self.buckets[count];
        self.entries[entry].prev = None;
        self.entries[entry].next = head;
        if let Some(h) = head {
            self.entries[h].prev = Some(entry);
        }
        self.buckets[count] = Some(entry);
        self.most = self.most.max(count);
    }

    fn unbucket(&mut self, entry: usize) {
        let Entry {
            conns, prev, next, ..
        } = self.entries[entry];
        match prev {
            Some(p) => self.entries[p].next = next,
            None => self.buckets[conns] = next,
        }
        if let Some(n) = next {
            self.entries[n].prev = prev;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(last: u8) -> ClientKey {
        ClientKey::of(IpAddr::from([127, 0, 0, last]), 64)
    }

    #[test]
    fn ipv6_addresses_count_by_prefix_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::of(a, 64), ClientKey::of(b, 64));
        assert_ne!(ClientKey::of(a, 64), ClientKey::of(c, 64));
        assert_eq!(ClientKey::of(a, 48), ClientKey::of(c, 48));
        assert_ne!(ClientKey::of(a, 128), ClientKey::of(b, 128));
        let mapped: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        assert_eq!(ClientKey::of(mapped, 64), v4(2));
    }

    #[test]
    fn the_address_holding_the_most_and_its_oldest_connection() {
        let mut clients = Clients::default();
        let mut admitted = Vec::new();
        for conn in 0..5 {
            admitted.push(clients.admit(v4(2), conn));
        }
        admitted.push(clients.admit(v4(3), 10));
        admitted.push(clients.admit(v4(3), 11));
        assert_eq!(clients.most(), Some((v4(2), 5)));
        assert_eq!(clients.conns(v4(2)).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        clients.release(admitted[0]);
        clients.release(admitted[2]);
        assert_eq!(clients.conns(v4(2)).collect::<Vec<_>>(), [1, 3, 4]);
        clients.release(admitted[1]);
        // 2 and 2: either holds the most.
        assert_eq!(clients.most().map(|(_, n)| n), Some(2));
        clients.release(admitted[3]);
        assert_eq!(clients.most(), Some((v4(3), 2)));
        assert_eq!(clients.conns_of(v4(2)), 1);
        for a in [admitted[4], admitted[5], admitted[6]] {
            clients.release(a);
        }
        assert_eq!(clients.len(), 0, "an address holding nothing is forgotten");
        assert_eq!(clients.most(), None);
        assert_eq!(clients.conns_of(v4(2)), 0);
    }

    /// Against a model: counts per address and the most, after random steps.
    #[test]
    fn counts_and_the_most_follow_a_model() {
        let mut clients = Clients::default();
        let mut held: Vec<Admission> = Vec::new();
        let mut model: HashMap<ClientKey, usize> = HashMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for conn in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            if state % 3 != 0 || held.is_empty() {
                let key = v4((state >> 20) as u8 % 7);
                held.push(clients.admit(key, conn));
                *model.entry(key).or_default() += 1;
            } else {
                let a = held.swap_remove((state >> 30) as usize % held.len());
                clients.release(a);
                *model.get_mut(&a.key).unwrap() -= 1;
            }
            let most = model.values().copied().max().unwrap_or(0);
            assert_eq!(clients.most().map_or(0, |(_, n)| n), most);
            if let Some((key, n)) = clients.most() {
                assert_eq!(model[&key], n);
            }
        }
        for (key, n) in &model {
            assert_eq!(clients.conns_of(*key), *n);
            assert_eq!(clients.conns(*key).count(), *n);
        }
    }
}

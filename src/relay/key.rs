//! Fixed-size keys for channel ids and write secrets.
//!
//! The core never stores an id or a secret as sent: it stores a 128-bit keyed
//! hash of it (SipHash-2-4 under two random keys, one per 64-bit half). So a
//! remembered channel costs the same whatever the length of its id and secret,
//! no key is allocated when a channel is created, and no secret is kept in
//! memory in clear. Without the keys nobody can aim at a collision, and by
//! chance one takes about 2^64 channels.

use std::hash::{BuildHasher, Hasher};

/// A channel id or a write secret, hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(u128);

/// The hashing keys, drawn from the seed the shell supplies.
#[derive(Clone, Copy, Debug)]
pub struct Hashing {
    low: (u64, u64),
    high: (u64, u64),
}

impl Hashing {
    /// Hash keys derived from `seed` (splitmix64, so nearby seeds differ fully).
    pub fn new(seed: u64) -> Hashing {
        let mut state = seed;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        Hashing {
            low: (next(), next()),
            high: (next(), next()),
        }
    }

    /// The key of `bytes` in the domain `domain` (ids and secrets never share keys).
    pub fn key(&self, domain: u8, bytes: &[u8]) -> Key {
        let half = |(k0, k1): (u64, u64)| {
            // std's SipHasher is SipHash-2-4 with caller-chosen keys: exactly what
            // a keyed hash needs; it is deprecated only as a `HashMap` default.
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            h.write_u8(domain);
            h.write(bytes);
            h.finish()
        };
        Key((u128::from(half(self.high)) << 64) | u128::from(half(self.low)))
    }
}

/// Domain of channel ids.
pub const ID: u8 = 0;
/// Domain of write secrets.
pub const SECRET: u8 = 1;
/// Domain of client addresses (the owners of remembered channels).
pub const CLIENT: u8 = 2;

impl Key {
    /// Its low half: uniform and unpredictable like the whole.
    pub fn low(self) -> u64 {
        self.0 as u64
    }

    /// As stored (a journal keeps keys, never ids or secrets).
    pub fn to_bits(self) -> u128 {
        self.0
    }

    pub fn from_bits(bits: u128) -> Key {
        Key(bits)
    }
}

/// Maps keyed by [`Key`] need no second hash: the low half is already uniform
/// and unpredictable, so it is used as is.
#[derive(Clone, Copy, Debug, Default)]
pub struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

#[derive(Debug)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `Key` (it writes one u128); folded in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_hash_matches_the_reference_vector() {
        // SipHash-2-4 paper, appendix A: key 00..0f, message 00..0e.
        #[allow(deprecated)]
        let mut h = std::hash::SipHasher::new_with_keys(
            u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]),
            u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]),
        );
        h.write(&(0u8..15).collect::<Vec<u8>>());
        assert_eq!(h.finish(), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn keys_differ_by_bytes_domain_and_seed() {
        let a = Hashing::new(1);
        let b = Hashing::new(2);
        assert_eq!(a.key(ID, b"x"), a.key(ID, b"x"));
        assert_ne!(a.key(ID, b"x"), a.key(ID, b"y"));
        assert_ne!(a.key(ID, b"x"), a.key(SECRET, b"x"));
        assert_ne!(a.key(ID, b"x"), b.key(ID, b"x"));
        assert_ne!(a.key(ID, b""), a.key(ID, b"\0"), "length counts");
    }

    #[test]
    fn both_halves_are_used() {
        let k = Hashing::new(7).key(ID, b"id").0;
        assert_ne!(k >> 64, 0);
        assert_ne!(k as u64, 0);
    }
}

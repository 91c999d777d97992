//! A journal's bytes, arbitrary (torn, corrupt, garbage), read back.
//!
//! Invariants:
//! - replay never panics, and the end of its last good record is within the
//!   bytes;
//! - every record it returns re-encodes to bytes that decode to it;
//! - the bytes up to that end, replayed again, give the same records (what
//!   the relay keeps after cutting the tail reads back the same).
#![no_main]

use httprelay::journal::{decode, Decoded, Replay};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1 << 16;

fuzz_target!(|bytes: &[u8]| {
    let mut replay = Replay::new(bytes, MAX);
    let records: Vec<_> = replay.by_ref().collect();
    let ending = replay.finish();
    assert!(ending.good_len <= bytes.len());
    for record in &records {
        let mut framed = Vec::new();
        record.encode(&mut framed);
        assert_eq!(
            decode(&framed, MAX),
            Decoded::Record(record.clone(), framed.len())
        );
    }
    let mut again = Replay::new(&bytes[..ending.good_len], MAX);
    let kept: Vec<_> = again.by_ref().collect();
    assert_eq!(kept, records);
});

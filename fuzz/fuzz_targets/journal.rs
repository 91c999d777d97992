//! A journal's bytes, arbitrary (torn, corrupt, garbage), read back.
//!
//! Invariants:
//! - replay never panics, and the end of its last good record is within the
//!   bytes;
//! - every record it returns re-encodes to bytes that decode to it;
//! - the bytes up to that end, replayed again, give the same records (what
//!   the relay keeps after cutting the tail reads back the same);
//! - read in pieces of any size (as the relay reads its file), the bytes
//!   give the same records and the same ending, through a window never
//!   larger than a record needs.
#![no_main]

use httprelay::journal::{decode, Decoded, Next, Replay, Stream};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 1 << 16;

fuzz_target!(|bytes: &[u8]| {
    let mut replay = Replay::new(bytes, MAX);
    let records: Vec<_> = replay.by_ref().collect();
    let ending = replay.finish();
    assert!(ending.good_len <= bytes.len() as u64);
    for record in &records {
        let mut framed = Vec::new();
        record.encode(&mut framed);
        assert_eq!(
            decode(&framed, MAX),
            Decoded::Record(record.clone(), framed.len())
        );
    }
    let mut again = Replay::new(&bytes[..ending.good_len as usize], MAX);
    let kept: Vec<_> = again.by_ref().collect();
    assert_eq!(kept, records);

    let piece = 1 + bytes.first().map_or(0, |&b| usize::from(b));
    let mut stream = Stream::new(MAX);
    let mut pieces = Vec::new();
    let mut end = 0;
    loop {
        let from = stream.pos() as usize;
        assert!(end - from <= stream.max_window() + piece);
        match stream.next(&bytes[from..end], end == bytes.len()) {
            Next::Record(r) => pieces.push(r),
            Next::More => end = (end + piece).min(bytes.len()),
            Next::End => break,
        }
    }
    assert_eq!(pieces, records);
    assert_eq!(stream.finish(), ending);
});

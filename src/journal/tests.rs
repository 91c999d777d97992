use super::*;

const MAX: usize = 1 << 20;

fn records() -> Vec<Record> {
    vec![
        Record::Header {
            version: VERSION,
            seed: 0x1234_5678_9abc_def0,
        },
        Record::InboxPut {
            inbox: 7,
            at: 1_700_000_000_000,
            secret: Some(u128::MAX - 3),
            content_type: Some(b"text/plain".to_vec().into()),
            body: b"keep me".to_vec().into(),
        },
        Record::InboxPut {
            inbox: 8,
            at: 1_700_000_000_001,
            secret: None,
            content_type: None,
            body: Default::default(),
        },
        Record::Claim {
            method: 1,
            channel: 99,
            secret: 12345,
            at: 1_700_000_000_002,
        },
        Record::InboxAck {
            inbox: 7,
            at: 1_700_000_000_003,
        },
        Record::InboxPut {
            inbox: 9,
            at: 1_700_000_000_004,
            secret: None,
            content_type: None,
            body: vec![0xa5; 3000].into(),
        },
    ]
}

/// The records framed one after the other, and where each ends.
fn journal(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for r in records {
        r.encode(&mut bytes);
        ends.push(bytes.len());
    }
    (bytes, ends)
}

/// An [`Ending`] in offsets of the bytes in memory.
#[derive(Debug)]
struct Ended {
    good_len: usize,
    skipped: Vec<std::ops::Range<usize>>,
}

impl From<Ending> for Ended {
    fn from(e: Ending) -> Ended {
        let at = |o: u64| usize::try_from(o).unwrap();
        Ended {
            good_len: at(e.good_len),
            skipped: e.skipped.iter().map(|r| at(r.start)..at(r.end)).collect(),
        }
    }
}

fn replay(bytes: &[u8]) -> (Vec<Record>, Ended) {
    let mut replay = Replay::new(bytes, MAX);
    let records: Vec<Record> = replay.by_ref().collect();
    let whole = (records, Ended::from(replay.finish()));
    // Read in pieces (as the relay reads its file), the same.
    for piece in [1, 7, HEAD, 100] {
        let (records, ending) = replay_in_pieces(bytes, piece);
        assert_eq!(records, whole.0, "pieces of {piece}");
        assert_eq!(ending.good_len, whole.1.good_len, "pieces of {piece}");
        assert_eq!(ending.skipped, whole.1.skipped, "pieces of {piece}");
    }
    whole
}

/// A replay through a window that grows by `piece` bytes when the stream
/// asks for more, and drops what the stream has read.
fn replay_in_pieces(bytes: &[u8], piece: usize) -> (Vec<Record>, Ended) {
    let mut stream = Stream::new(MAX);
    let mut records = Vec::new();
    let mut end = 0;
    loop {
        let from = usize::try_from(stream.pos()).unwrap();
        assert!(
            end - from <= stream.max_window() + piece,
            "the window stays small"
        );
        match stream.next(&bytes[from..end], end == bytes.len()) {
            Next::Record(r) => records.push(r),
            Next::More => end = (end + piece).min(bytes.len()),
            Next::End => break,
        }
    }
    (records, Ended::from(stream.finish()))
}

#[test]
fn every_record_reads_back_as_written() {
    let records = records();
    let (bytes, ends) = journal(&records);
    let (read, ending) = replay(&bytes);
    assert_eq!(read, records);
    assert_eq!(ending.good_len, bytes.len());
    assert!(ending.skipped.is_empty());
    for (r, (start, end)) in records.iter().zip(
        std::iter::once(0)
            .chain(ends.iter().copied())
            .zip(ends.iter().copied()),
    ) {
        assert_eq!(r.encoded_len(), end - start);
        assert_eq!(
            decode(&bytes[start..], MAX),
            Decoded::Record(r.clone(), end - start)
        );
    }
}

#[test]
fn a_journal_cut_anywhere_gives_the_whole_records_before_the_cut() {
    let records = records();
    let (bytes, ends) = journal(&records);
    for cut in 0..=bytes.len() {
        let (read, ending) = replay(&bytes[..cut]);
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(read, records[..whole], "cut at {cut}");
        let good = if whole == 0 { 0 } else { ends[whole - 1] };
        assert_eq!(ending.good_len, good, "cut at {cut}");
    }
}

#[test]
fn a_flipped_byte_loses_only_its_record() {
    let records = records();
    let (bytes, ends) = journal(&records);
    let starts: Vec<usize> = std::iter::once(0).chain(ends.iter().copied()).collect();
    for at in 0..bytes.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut damaged = bytes.clone();
            damaged[at] ^= flip;
            let hit = starts.iter().rposition(|&s| s <= at).unwrap();
            let (read, ending) = replay(&damaged);
            let mut expected = records.clone();
            expected.remove(hit);
            assert_eq!(read, expected, "byte {at} ^ {flip:#x}");
            if hit + 1 < records.len() {
                assert_eq!(ending.skipped, vec![starts[hit]..starts[hit + 1]]);
                assert_eq!(ending.good_len, bytes.len());
            } else {
                // The last record damaged: the tail to cut.
                assert_eq!(ending.good_len, starts[hit]);
            }
        }
    }
}

#[test]
fn garbage_is_no_record_and_costs_no_allocation_of_its_claimed_size() {
    let mut bytes = vec![0xffu8; 64];
    bytes[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    bytes[4..8].copy_from_slice(&crc32c(&u32::MAX.to_le_bytes()).to_le_bytes());
    assert_eq!(
        decode(&bytes, MAX),
        Decoded::Corrupt,
        "a length past the limit"
    );
    let (read, ending) = replay(&[0u8; 100]);
    assert!(read.is_empty());
    assert_eq!(ending.good_len, 0);
    // A valid frame around a body of an unknown kind, or with bytes left over.
    let mut odd = Vec::new();
    Record::InboxAck { inbox: 1, at: 2 }.encode(&mut odd);
    odd[HEAD] = 77;
    let check = crc32c(&odd[HEAD..]);
    odd[8..12].copy_from_slice(&check.to_le_bytes());
    assert_eq!(decode(&odd, MAX), Decoded::Corrupt);
}

#[test]
fn the_fuzz_seeds_hold_what_their_names_say() {
    let whole = include_bytes!("../../fuzz/seeds/journal/whole");
    let (read, ending) = replay(whole);
    assert_eq!(read.len(), 4);
    assert_eq!(ending.good_len, whole.len());
    let (read, _) = replay(include_bytes!("../../fuzz/seeds/journal/torn"));
    assert_eq!(read.len(), 3);
    let (read, ending) = replay(include_bytes!("../../fuzz/seeds/journal/flipped"));
    assert_eq!((read.len(), ending.skipped.len()), (3, 1));
}

#[test]
fn a_stray_record_start_that_runs_past_the_end_is_skipped_when_records_follow() {
    let records = records();
    let mut bytes = Vec::new();
    records[0].encode(&mut bytes);
    // The head of a long record whose body never came (a stray start: its
    // length and length checksum are valid), then a whole record.
    let mut long = Vec::new();
    records[5].encode(&mut long);
    let stray_at = bytes.len();
    bytes.extend_from_slice(&long[..HEAD]);
    let ack_at = bytes.len();
    records[4].encode(&mut bytes);
    let (read, ending) = replay(&bytes);
    assert_eq!(read, [records[0].clone(), records[4].clone()]);
    assert_eq!(ending.skipped, vec![stray_at..ack_at]);
    assert_eq!(ending.good_len, bytes.len());
    // Replaying what is kept gives the same records (a restart after a cut).
    let (again, _) = replay(&bytes[..ending.good_len]);
    assert_eq!(again, read);
}

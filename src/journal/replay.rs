//! Reading a journal back: every whole, valid record in order. A record
//! whose checksum fails (a flipped bit, a sector that lost its write) is
//! skipped: the reader looks for the next offset where a valid record starts
//! (a record's length carries its own checksum, so garbage rarely looks like
//! a start, and then its body checksum fails too) and goes on from there. A
//! record cut by the end of the bytes (a torn last write) ends the journal;
//! so does any stretch after which no valid record starts.

use std::ops::Range;

use super::record::{decode, Decoded, Record};

/// The records of `bytes`, then (from [`Replay::finish`]) what was cut.
pub struct Replay<'a> {
    bytes: &'a [u8],
    pos: usize,
    max_body: usize,
    /// Just past the last whole record.
    good_len: usize,
    skipped: Vec<Range<usize>>,
}

/// What a replay found besides its records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ending {
    /// Bytes up to the end of the last whole record: the rest is a torn or
    /// corrupt tail to cut before appending.
    pub good_len: usize,
    /// Corrupt stretches skipped between valid records.
    pub skipped: Vec<Range<usize>>,
}

impl<'a> Replay<'a> {
    /// Reads `bytes`; a record body longer than `max_body` counts as corrupt.
    pub fn new(bytes: &'a [u8], max_body: usize) -> Replay<'a> {
        Replay {
            bytes,
            pos: 0,
            max_body,
            good_len: 0,
            skipped: Vec::new(),
        }
    }

    /// What was cut or skipped (call once the records are read).
    pub fn finish(self) -> Ending {
        Ending {
            good_len: self.good_len,
            skipped: self.skipped,
        }
    }

    /// The next offset after `from` where a whole valid record starts.
    fn resync(&self, from: usize) -> Option<usize> {
        (from + 1..self.bytes.len()).find(|&at| {
            matches!(
                decode(&self.bytes[at..], self.max_body),
                Decoded::Record(..)
            )
        })
    }
}

impl Iterator for Replay<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if self.pos >= self.bytes.len() {
                return None;
            }
            match decode(&self.bytes[self.pos..], self.max_body) {
                Decoded::Record(record, len) => {
                    self.pos += len;
                    self.good_len = self.pos;
                    return Some(record);
                }
                // A record cut by the end: a torn last write, unless a valid
                // record follows (then it was garbage that looked like the
                // start of a long record, and is skipped like any).
                Decoded::Incomplete | Decoded::Corrupt => match self.resync(self.pos) {
                    Some(at) => {
                        self.skipped.push(self.pos..at);
                        self.pos = at;
                    }
                    None => {
                        self.pos = self.bytes.len();
                        return None;
                    }
                },
            }
        }
    }
}

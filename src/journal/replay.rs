//! Reading a journal back: every whole, valid record in order. A record
//! whose checksum fails (a flipped bit, a sector that lost its write) is
//! skipped: the reader looks for the next offset where a valid record starts
//! (a record's length carries its own checksum, so garbage rarely looks like
//! a start, and then its body checksum fails too) and goes on from there. A
//! record cut by the end of the bytes (a torn last write) ends the journal;
//! so does any stretch after which no valid record starts.
//!
//! [`Stream`] reads a journal of any size through a window the caller fills
//! (the relay reads its file in pieces, so a replay holds one window, not
//! the file); [`Replay`] reads one that is all in memory.

use std::ops::Range;

use super::record::{decode, Decoded, Record, HEAD};

/// A replay fed piece by piece: the caller passes what it has of the journal
/// from [`Stream::pos`] on, and drops what comes before it.
pub struct Stream {
    /// Offset in the journal of the first byte not yet read.
    pos: u64,
    max_body: usize,
    /// Just past the last whole record.
    good_len: u64,
    /// Where the corrupt stretch being skipped began.
    skipping_from: Option<u64>,
    skipped: Vec<Range<u64>>,
}

/// What [`Stream::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Record(Record),
    /// The window ends before the next record can be told: call again with
    /// more of the journal (or with `eof`, if there is no more).
    More,
    /// No record follows.
    End,
}

/// What a replay found besides its records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ending {
    /// Bytes up to the end of the last whole record: the rest is a torn or
    /// corrupt tail to cut before appending.
    pub good_len: u64,
    /// Corrupt stretches skipped between valid records.
    pub skipped: Vec<Range<u64>>,
}

impl Stream {
    /// A record body longer than `max_body` counts as corrupt (so a window
    /// never needs more than `max_body` + [`HEAD`] bytes).
    pub fn new(max_body: usize) -> Stream {
        Stream {
            pos: 0,
            max_body,
            good_len: 0,
            skipping_from: None,
            skipped: Vec::new(),
        }
    }

    /// The offset in the journal where the next call's window must begin.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// The largest window a record can need.
    pub fn max_window(&self) -> usize {
        self.max_body + HEAD
    }

    /// The next record in `window` (the journal's bytes from [`Stream::pos`];
    /// `eof`: nothing follows them).
    pub fn next(&mut self, window: &[u8], eof: bool) -> Next {
        let mut at = 0;
        loop {
            if at >= window.len() {
                self.pos += at as u64;
                return if eof { Next::End } else { Next::More };
            }
            match decode(&window[at..], self.max_body) {
                Decoded::Record(record, len) => {
                    if let Some(from) = self.skipping_from.take() {
                        self.skipped.push(from..self.pos + at as u64);
                    }
                    self.pos += (at + len) as u64;
                    self.good_len = self.pos;
                    return Next::Record(record);
                }
                // A record cut by the window: more of the journal may hold
                // the rest.
                Decoded::Incomplete if !eof => {
                    self.pos += at as u64;
                    return Next::More;
                }
                // Cut by the end: a torn last write, unless a valid record
                // follows (then it was garbage that looked like the start of
                // a long record, and is skipped like any).
                Decoded::Incomplete | Decoded::Corrupt => {
                    self.skipping_from.get_or_insert(self.pos + at as u64);
                    at += 1;
                }
            }
        }
    }

    /// What was cut or skipped (call once [`Next::End`] came).
    pub fn finish(self) -> Ending {
        Ending {
            good_len: self.good_len,
            skipped: self.skipped,
        }
    }
}

/// The records of a journal held whole in memory, then (from
/// [`Replay::finish`]) what was cut.
pub struct Replay<'a> {
    bytes: &'a [u8],
    stream: Stream,
}

impl<'a> Replay<'a> {
    /// Reads `bytes`; a record body longer than `max_body` counts as corrupt.
    pub fn new(bytes: &'a [u8], max_body: usize) -> Replay<'a> {
        Replay {
            bytes,
            stream: Stream::new(max_body),
        }
    }

    /// What was cut or skipped (call once the records are read).
    pub fn finish(self) -> Ending {
        self.stream.finish()
    }
}

impl Iterator for Replay<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        let from = usize::try_from(self.stream.pos())
            .map_or(self.bytes.len(), |p| p.min(self.bytes.len()));
        match self.stream.next(&self.bytes[from..], true) {
            Next::Record(record) => Some(record),
            Next::More | Next::End => None,
        }
    }
}

//! The journal's records and their framing (sans-IO: bytes in, bytes out).
//!
//! A record on disk:
//!
//! ```text
//! len: u32 LE          bytes of the body
//! len_check: u32 LE    crc32c(len), so a resync finds record starts without
//!                      checksumming garbage lengths
//! body_check: u32 LE   crc32c(body)
//! body: kind u8, then its fields (integers little-endian; byte strings as
//!       u32 LE length + bytes; an absent option as tag 0, present as 1)
//! ```
//!
//! Ids and secrets are stored as the relay's 128-bit keyed hashes, never in
//! clear; times are Unix milliseconds (a restart's clock is another).

use std::sync::Arc;

use super::crc::crc32c;

/// Bytes before a record's body.
pub const HEAD: usize = 12;

/// What the journal remembers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// The first record of every journal file: the format, and the seed of
    /// the relay's keyed hashes (stored ids and secrets are hashes, which the
    /// same keys must reproduce after a restart).
    Header { version: u32, seed: u64 },
    /// An inbox message stored at `at` (replacing any earlier one), by a
    /// writer that presented `secret` (which then holds the inbox).
    InboxPut {
        inbox: u128,
        at: u64,
        secret: Option<u128>,
        /// Both shared with the relay's copy of the message.
        content_type: Option<Arc<[u8]>>,
        body: Arc<[u8]>,
    },
    /// The inbox's message was acknowledged at `at` (its body is gone).
    InboxAck { inbox: u128, at: u64 },
    /// A write-secret claim of a channel of `method` (the relay's method
    /// number), made or last confirmed at `at`.
    Claim {
        method: u8,
        channel: u128,
        secret: u128,
        at: u64,
    },
}

const HEADER: u8 = 1;
const INBOX_PUT: u8 = 2;
const INBOX_ACK: u8 = 3;
const CLAIM: u8 = 4;

/// The current format.
pub const VERSION: u32 = 1;

impl Record {
    /// Appends the record, framed, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEAD]);
        match self {
            Record::Header { version, seed } => {
                out.push(HEADER);
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(&seed.to_le_bytes());
            }
            Record::InboxPut {
                inbox,
                at,
                secret,
                content_type,
                body,
            } => {
                out.push(INBOX_PUT);
                out.extend_from_slice(&inbox.to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
                match secret {
                    Some(s) => {
                        out.push(1);
                        out.extend_from_slice(&s.to_le_bytes());
                    }
                    None => out.push(0),
                }
                match content_type {
                    Some(t) => {
                        out.push(1);
                        bytes(out, t);
                    }
                    None => out.push(0),
                }
                bytes(out, body);
            }
            Record::InboxAck { inbox, at } => {
                out.push(INBOX_ACK);
                out.extend_from_slice(&inbox.to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
            }
            Record::Claim {
                method,
                channel,
                secret,
                at,
            } => {
                out.push(CLAIM);
                out.push(*method);
                out.extend_from_slice(&channel.to_le_bytes());
                out.extend_from_slice(&secret.to_le_bytes());
                out.extend_from_slice(&at.to_le_bytes());
            }
        }
        let len = (out.len() - start - HEAD) as u32;
        let body_check = crc32c(&out[start + HEAD..]);
        out[start..start + 4].copy_from_slice(&len.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc32c(&len.to_le_bytes()).to_le_bytes());
        out[start + 8..start + 12].copy_from_slice(&body_check.to_le_bytes());
    }

    /// Its framed size.
    pub fn encoded_len(&self) -> usize {
        let mut v = Vec::new();
        self.encode(&mut v);
        v.len()
    }
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// What the bytes at an offset hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// A whole record, and its framed length.
    Record(Record, usize),
    /// The start of a record whose rest is not there (a torn write), or too
    /// few bytes to tell.
    Incomplete,
    /// Not a valid record.
    Corrupt,
}

/// Decodes the record at the start of `buf`; a body longer than `max_body`
/// is corrupt (no valid record is that large).
pub fn decode(buf: &[u8], max_body: usize) -> Decoded {
    if buf.len() < HEAD {
        return Decoded::Incomplete;
    }
    let word = |at: usize| u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    let (len, len_check, body_check) = (word(0), word(4), word(8));
    if crc32c(&buf[0..4]) != len_check || len as usize > max_body || len == 0 {
        return Decoded::Corrupt;
    }
    let end = HEAD + len as usize;
    if buf.len() < end {
        return Decoded::Incomplete;
    }
    let body = &buf[HEAD..end];
    if crc32c(body) != body_check {
        return Decoded::Corrupt;
    }
    match parse(body) {
        Some(record) => Decoded::Record(record, end),
        None => Decoded::Corrupt,
    }
}

/// A body's fields, read in order.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u128(&mut self) -> Option<u128> {
        Some(u128::from_le_bytes(self.take(16)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<Box<[u8]>> {
        let n = self.u32()? as usize;
        Some(self.take(n)?.into())
    }
    fn option<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.u8()? {
            0 => Some(None),
            1 => Some(Some(read(self)?)),
            _ => None,
        }
    }
}

fn parse(body: &[u8]) -> Option<Record> {
    let mut f = Fields(body);
    let record = match f.u8()? {
        HEADER => Record::Header {
            version: f.u32()?,
            seed: f.u64()?,
        },
        INBOX_PUT => Record::InboxPut {
            inbox: f.u128()?,
            at: f.u64()?,
            secret: f.option(Fields::u128)?,
            content_type: f.option(Fields::bytes)?.map(Arc::from),
            body: f.bytes()?.into(),
        },
        INBOX_ACK => Record::InboxAck {
            inbox: f.u128()?,
            at: f.u64()?,
        },
        CLAIM => Record::Claim {
            method: f.u8()?,
            channel: f.u128()?,
            secret: f.u128()?,
            at: f.u64()?,
        },
        _ => return None,
    };
    // Nothing may follow the fields.
    f.0.is_empty().then_some(record)
}

//! The journal behind `--data-dir`: what the relay acknowledged and must not
//! forget (inbox messages and their acknowledgements, write-secret claims),
//! as an append-only sequence of checksummed records. This module is sans-IO:
//! records to bytes and back, and replay that survives torn and corrupt
//! stretches.

mod crc;
pub mod record;
pub mod replay;
#[cfg(test)]
mod tests;

pub use crc::crc32c;
pub use record::{decode, Decoded, Record, HEAD, VERSION};
pub use replay::{Ending, Next, Replay, Stream};

/// When appended records are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// After each record, before its answer.
    Always,
    /// Once per loop turn, before any of the turn's answers that need it.
    Batch,
    /// Never by the relay: the kernel writes back within its own delay
    /// (about 30 s on Linux), and a power cut loses what it had not.
    Off,
}

//! The journal's rewrite, off the loop. Writing every live record anew and
//! making it durable takes as long as the disk needs (half a second for
//! 80 MB here, more on a card), so a helper thread does it while the loop
//! goes on serving and appending to the old journal. The loop stays the only
//! owner of the relay's state: it hands the thread a snapshot of the live
//! records (ids and claims copied; inbox bodies and types shared as the
//! immutable `Arc`s the inbox holds, never written by either side) and the
//! offset in the old journal where the snapshot ends, and the thread never
//! touches the old journal but to read what the loop has committed past
//! that offset.
//!
//! A pass: write the snapshot to `journal.new`, copy what the loop committed
//! since (as long as more than [`CATCH_UP`] is behind), make the file
//! durable, wake the loop. The loop then copies the last few records itself,
//! makes them durable, renames the file over the journal and makes the
//! directory durable, all between two turns: no record can be appended in
//! between. If more than [`LOOP_COPY_MAX`] is behind by then (appends faster
//! than the disk), another pass catches up first.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use mio::Waker;

use crate::journal::{Record, VERSION};

/// A pass stops catching up once no more than this is behind.
const CATCH_UP: u64 = 256 << 10;

/// The most the loop copies itself when a pass is done: past it, another
/// pass catches up.
pub const LOOP_COPY_MAX: u64 = 1 << 20;

/// What a pass is given.
pub struct Pass {
    /// `journal.new`.
    pub path: PathBuf,
    /// The first pass writes the header and the snapshot; later ones go on
    /// with the file the previous one wrote.
    pub start: Start,
    /// The old journal, read at offsets (never appended to by the pass).
    pub source: File,
    /// How far the old journal is copied: the snapshot's end at first.
    pub copied_to: u64,
    /// The old journal's committed length, kept by the loop.
    pub committed: Arc<AtomicU64>,
    pub waker: Arc<Waker>,
}

pub enum Start {
    Snapshot { seed: u64, records: Vec<Record> },
    Continue(Written),
}

/// What a pass leaves: the new journal, durable up to the old journal's
/// `copied_to`.
pub struct Written {
    pub file: File,
    pub copied_to: u64,
    /// The new journal's length.
    pub len: u64,
    /// Its length without what was copied from the old journal: the live
    /// records when the rewrite began.
    pub snapshot_len: u64,
}

/// A pass under way.
pub struct Running {
    result: mpsc::Receiver<io::Result<Written>>,
    /// When the rewrite began (its first pass).
    pub began: Instant,
}

impl Running {
    /// The pass's result, if it is done.
    pub fn done(&self) -> Option<io::Result<Written>> {
        match self.result.try_recv() {
            Ok(result) => Some(result),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(io::Error::other(
                "the compaction thread ended without a result",
            ))),
        }
    }
}

/// Starts `pass` on a thread of its own.
pub fn spawn(pass: Pass, began: Instant) -> io::Result<Running> {
    let (tell, result) = mpsc::channel();
    std::thread::Builder::new()
        .name("httprelay-compaction".into())
        .spawn(move || {
            let waker = Arc::clone(&pass.waker);
            let path = pass.path.clone();
            let written = run(pass);
            if written.is_err() {
                // Leave the disk as the rewrite found it.
                let _ = std::fs::remove_file(&path);
            }
            let _ = tell.send(written);
            let _ = waker.wake();
        })?;
    Ok(Running { result, began })
}

fn run(pass: Pass) -> io::Result<Written> {
    let mut written = match pass.start {
        Start::Snapshot { seed, records } => {
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&pass.path)?;
            let mut out = BufWriter::with_capacity(64 << 10, file);
            let mut bytes = Vec::new();
            Record::Header {
                version: VERSION,
                seed,
            }
            .encode(&mut bytes);
            out.write_all(&bytes)?;
            let mut len = bytes.len() as u64;
            // Each record is dropped once written: the snapshot shrinks as
            // the file grows.
            for record in records {
                bytes.clear();
                record.encode(&mut bytes);
                out.write_all(&bytes)?;
                len += bytes.len() as u64;
            }
            let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
            Written {
                file,
                copied_to: pass.copied_to,
                len,
                snapshot_len: len,
            }
        }
        Start::Continue(written) => written,
    };
    loop {
        let committed = pass.committed.load(Ordering::Acquire);
        if committed.saturating_sub(written.copied_to) <= CATCH_UP {
            break;
        }
        copy(&pass.source, &mut written, committed)?;
    }
    written.file.sync_all()?;
    Ok(written)
}

/// Closes the old journal, renamed over, off the loop: its last close frees
/// its blocks, which took 50 ms for 100 MB here.
pub fn release(old: File) {
    let spawned = std::thread::Builder::new()
        .name("httprelay-compaction".into())
        .spawn(move || drop(old));
    // Without a thread it is closed here, which only takes longer.
    drop(spawned);
}

/// Appends the old journal's bytes from `written.copied_to` up to `to` to the
/// new journal.
pub fn copy(source: &File, written: &mut Written, to: u64) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    while written.copied_to < to {
        let want = (to - written.copied_to).min(buf.len() as u64) as usize;
        let n = source.read_at(&mut buf[..want], written.copied_to)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the journal is shorter than what was committed",
            ));
        }
        written.file.write_all_at(&buf[..n], written.len)?;
        written.copied_to += n as u64;
        written.len += n as u64;
    }
    Ok(())
}

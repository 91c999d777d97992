//! The journal on disk (`--data-dir`): opened and replayed at start, appended
//! to as the relay acknowledges what it must not forget, made durable once
//! per loop turn (`--fsync batch`: one `fdatasync` for all the turn's
//! records, before any of their answers leave), after each record
//! (`always`), or when the kernel likes (`off`). The records and their replay
//! are [`crate::journal`]; this is the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Waker;

use super::compaction::{self, Pass, Running, Start, Written, LOOP_COPY_MAX};

pub use crate::journal::Fsync;

/// Room under `--data-max` kept for acknowledgements and claims.
pub const RESERVE: u64 = 64 << 10;

/// Growth over the last rewrite that never triggers one (small journals are
/// not worth rewriting).
const COMPACT_SLACK: u64 = 1 << 20;

/// After a rewrite failed, the next waits this long (a full disk is not
/// emptier a moment later).
const RETRY_REWRITE: Duration = Duration::from_secs(10);
use crate::journal::{Ending, Next, Record, Stream, VERSION};

/// How much of the journal a replay reads at a time: the replay holds this
/// window (or one record, if a record is longer), never the file.
const READ_PIECE: usize = 256 << 10;

pub struct Store {
    file: File,
    path: PathBuf,
    fsync: Fsync,
    /// The seed kept in the header (a rewrite keeps it).
    seed: u64,
    /// The journal's size after its last rewrite: it is rewritten again when
    /// it has grown past twice that (plus [`COMPACT_SLACK`]).
    compacted: u64,
    /// Bytes in the file.
    len: u64,
    /// `--data-max`.
    max: Option<u64>,
    /// Records encoded and not yet written.
    pending: Vec<u8>,
    /// `len`, for a rewrite's thread (which copies what was committed after
    /// its snapshot).
    committed: Arc<AtomicU64>,
    /// Wakes the loop when a rewrite's pass is done.
    waker: Option<Arc<Waker>>,
    /// A rewrite under way.
    rewrite: Option<Running>,
    /// No rewrite begins before this (one failed).
    retry_at: Option<Instant>,
    /// A rewrite was asked for (the journal is full).
    asked: bool,
    /// A rewrite renamed its file and the directory is not yet durable.
    dir_unsynced: bool,
}

/// A rewrite that ended.
pub enum Rewritten {
    /// The journal is now the new file; it took this long.
    Done(Duration),
    Failed(io::Error),
}

/// A store opened: its seed, and what was cut or skipped.
pub struct Opened {
    pub store: Store,
    /// The seed of the relay's keyed hashes, kept in the journal's header.
    pub seed: u64,
    pub ending: Ending,
    /// Bytes cut from the end (a torn or corrupt tail).
    pub cut: u64,
}

impl Store {
    /// Opens (or makes) `dir/journal`. A new journal gets a header with
    /// `new_seed`; an existing one is replayed into `restore`, a record at a
    /// time, and its torn or corrupt tail cut. A journal whose header is
    /// unreadable is set aside (renamed) and a new one begun: the relay
    /// starts whatever the disk holds.
    pub fn open(
        dir: &Path,
        fsync: Fsync,
        max_body: usize,
        new_seed: u64,
        restore: &mut dyn FnMut(Record),
    ) -> io::Result<Opened> {
        fs::create_dir_all(dir)?;
        let path = dir.join("journal");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let mut stream = Stream::new(max_body);
        let mut window: Vec<u8> = Vec::new();
        // The journal's offset of `window[0]`.
        let mut window_at = 0u64;
        let mut eof = false;
        let mut seed = None;
        loop {
            let from = (stream.pos() - window_at) as usize;
            match stream.next(&window[from..], eof) {
                Next::Record(record) => match (seed, record) {
                    (None, Record::Header { version, seed: s }) if version == VERSION => {
                        seed = Some(s);
                    }
                    (None, _) => break,
                    (Some(_), record) => restore(record),
                },
                Next::More => {
                    window.drain(..from);
                    window_at = stream.pos();
                    let have = window.len();
                    window.resize(have + READ_PIECE, 0);
                    let n = read_full(&mut file, &mut window[have..])?;
                    window.truncate(have + n);
                    eof = n == 0;
                }
                Next::End => break,
            }
        }
        drop(window);
        let Some(seed) = seed else {
            if file.metadata()?.len() > 0 {
                let aside = dir.join("journal.unreadable");
                fs::rename(&path, &aside)?;
                eprintln!(
                    "httprelay: {} has no readable header: set aside as {}, starting a new journal",
                    path.display(),
                    aside.display()
                );
            }
            return Store::create(dir, fsync, new_seed);
        };
        let ending = stream.finish();
        let cut = file.metadata()?.len().saturating_sub(ending.good_len);
        if cut > 0 {
            file.set_len(ending.good_len)?;
            file.sync_all()?;
        }
        let store = Store::new(file, path, fsync, seed, ending.good_len);
        Ok(Opened {
            store,
            seed,
            ending,
            cut,
        })
    }

    /// A new journal holding only its header, durable with its directory.
    fn create(dir: &Path, fsync: Fsync, seed: u64) -> io::Result<Opened> {
        let path = dir.join("journal");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.set_len(0)?;
        let mut header = Vec::new();
        Record::Header {
            version: VERSION,
            seed,
        }
        .encode(&mut header);
        file.write_all(&header)?;
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        let store = Store::new(file, path, fsync, seed, header.len() as u64);
        Ok(Opened {
            store,
            seed,
            ending: Ending::default(),
            cut: 0,
        })
    }

    fn new(file: File, path: PathBuf, fsync: Fsync, seed: u64, len: u64) -> Store {
        Store {
            file,
            path,
            fsync,
            seed,
            compacted: len,
            len,
            max: None,
            pending: Vec::new(),
            committed: Arc::new(AtomicU64::new(len)),
            waker: None,
            rewrite: None,
            retry_at: None,
            asked: false,
            dir_unsynced: false,
        }
    }

    /// The waker a rewrite's thread wakes the loop with (no rewrite begins
    /// without one).
    pub fn set_waker(&mut self, waker: Arc<Waker>) {
        self.waker = Some(waker);
    }

    pub fn fsync(&self) -> Fsync {
        self.fsync
    }

    /// Queues `record` for the next [`Store::commit`].
    pub fn append(&mut self, record: &Record) {
        record.encode(&mut self.pending);
    }

    /// Writes the queued records and, unless `--fsync off`, makes them
    /// durable. On an error the records are dropped (their answers say so)
    /// and the file is cut back to its last whole record.
    pub fn commit(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let written = self.file.write_all(&self.pending).and_then(|()| {
            if self.fsync == Fsync::Off {
                Ok(())
            } else {
                self.file.sync_data()?;
                self.sync_dir()
            }
        });
        match written {
            Ok(()) => {
                self.len += self.pending.len() as u64;
                self.committed.store(self.len, Ordering::Release);
                self.pending.clear();
                Ok(())
            }
            Err(e) => {
                self.pending.clear();
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }

    /// Bytes in the journal.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Caps the journal at `max` bytes (`--data-max`).
    pub fn set_max(&mut self, max: Option<u64>) {
        self.max = max;
    }

    /// Whether a record of `bytes` fits under `--data-max`, with
    /// [`RESERVE`] left for acknowledgements and claims (which are never
    /// refused for room: they are a few dozen bytes).
    pub fn has_room(&self, bytes: u64) -> bool {
        let after = self.len + self.pending.len() as u64 + bytes + RESERVE;
        self.max.is_none_or(|max| after <= max)
    }

    /// Whether the journal has grown enough past its live records to be
    /// rewritten: past twice its size after the last rewrite (plus
    /// [`COMPACT_SLACK`]), or, under `--data-max`, past half of it with an
    /// eighth of it written since (so a small cap is rewritten before it is
    /// reached).
    pub fn wants_rewrite(&self) -> bool {
        let grown = self.len
            > self
                .compacted
                .saturating_mul(2)
                .saturating_add(COMPACT_SLACK);
        let near_max = self
            .max
            .is_some_and(|max| self.len > max / 2 && self.len > self.compacted + max / 8);
        (grown || near_max || self.asked) && self.may_rewrite()
    }

    /// Asks for a rewrite at the next [`Store::wants_rewrite`] (at start; or
    /// the journal is full, and records written since the last rewrite may
    /// be dead).
    pub fn ask_rewrite(&mut self) {
        self.asked = true;
    }

    /// Whether records were written since the last rewrite.
    pub fn grew_since_rewrite(&self) -> bool {
        self.len > self.compacted
    }

    /// Whether a rewrite may begin now: none under way, none failed lately.
    fn may_rewrite(&self) -> bool {
        self.rewrite.is_none()
            && self.waker.is_some()
            && self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    pub fn rewriting(&self) -> bool {
        self.rewrite.is_some()
    }

    /// Begins replacing the journal with `records`, what is live as of its
    /// length now (every record appended is committed: call between
    /// turns), on a thread of its own ([`compaction`]): the journal goes on
    /// taking records meanwhile, and [`Store::poll_rewrite`] finishes it.
    pub fn begin_rewrite(&mut self, records: Vec<Record>) -> io::Result<()> {
        debug_assert!(self.pending.is_empty() && self.rewrite.is_none());
        let Some(waker) = &self.waker else {
            return Ok(());
        };
        let pass = Pass {
            path: self.fresh_path(),
            start: Start::Snapshot {
                seed: self.seed,
                records,
            },
            source: self.file.try_clone()?,
            copied_to: self.len,
            committed: Arc::clone(&self.committed),
            waker: Arc::clone(waker),
        };
        self.asked = false;
        match compaction::spawn(pass, Instant::now()) {
            Ok(pass) => {
                self.rewrite = Some(pass);
                Ok(())
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + RETRY_REWRITE);
                Err(e)
            }
        }
    }

    /// Finishes a rewrite whose pass is done (call between turns, when every
    /// record appended is committed): copies the last records the pass did
    /// not, makes them durable, renames the new journal over the old one and
    /// makes the directory durable. A crash before the rename leaves the old
    /// journal whole (and a stale `journal.new`, overwritten next time);
    /// after it, the new one.
    pub fn poll_rewrite(&mut self) -> Option<Rewritten> {
        debug_assert!(self.pending.is_empty());
        let rewrite = self.rewrite.as_ref()?;
        let began = rewrite.began;
        let result = rewrite.done()?;
        self.rewrite = None;
        let finished = result.and_then(|written| {
            if self.len - written.copied_to > LOOP_COPY_MAX {
                // Appends outran the pass: another one catches up.
                self.next_pass(written, began)?;
                return Ok(None);
            }
            self.switch_to(written).map(Some)
        });
        match finished {
            Ok(None) => None,
            Ok(Some(())) => Some(Rewritten::Done(began.elapsed())),
            Err(e) => {
                let _ = fs::remove_file(self.fresh_path());
                self.retry_at = Some(Instant::now() + RETRY_REWRITE);
                Some(Rewritten::Failed(e))
            }
        }
    }

    fn next_pass(&mut self, written: Written, began: Instant) -> io::Result<()> {
        let Some(waker) = &self.waker else {
            return Err(io::Error::other("no waker"));
        };
        let pass = Pass {
            path: self.fresh_path(),
            copied_to: written.copied_to,
            start: Start::Continue(written),
            source: self.file.try_clone()?,
            committed: Arc::clone(&self.committed),
            waker: Arc::clone(waker),
        };
        let pass = compaction::spawn(pass, began)?;
        self.rewrite = Some(pass);
        Ok(())
    }

    /// The new journal takes the old one's place.
    fn switch_to(&mut self, mut written: Written) -> io::Result<()> {
        compaction::copy(&self.file, &mut written, self.len)?;
        written.file.sync_data()?;
        drop(written.file);
        // Opened before the rename, so that nothing can fail between the
        // rename and the switch.
        let fresh = self.fresh_path();
        let appender = OpenOptions::new().read(true).append(true).open(&fresh)?;
        fs::rename(&fresh, &self.path)?;
        compaction::release(std::mem::replace(&mut self.file, appender));
        self.len = written.len;
        self.committed.store(self.len, Ordering::Release);
        self.compacted = written.snapshot_len;
        // Until the directory is durable, a crash could bring the old
        // journal back: the next commit succeeds only once it is (so a
        // failure here is that commit's to report; the switch is done).
        self.dir_unsynced = true;
        let _ = self.sync_dir();
        Ok(())
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        if self.dir_unsynced {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            File::open(dir)?.sync_all()?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    fn fresh_path(&self) -> PathBuf {
        self.path.with_file_name("journal.new")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads until `buf` is full or the file ends; the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

//! The journal on disk (`--data-dir`): opened and replayed at start, appended
//! to as the relay acknowledges what it must not forget, made durable once
//! per loop turn (`--fsync batch`: one `fdatasync` for all the turn's
//! records, before any of their answers leave), after each record
//! (`always`), or when the kernel likes (`off`). The records and their replay
//! are [`crate::journal`]; this is the file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

pub use crate::journal::Fsync;

/// Room under `--data-max` kept for acknowledgements and claims.
pub const RESERVE: u64 = 64 << 10;

/// Growth over the last rewrite that never triggers one (small journals are
/// not worth rewriting).
const COMPACT_SLACK: u64 = 1 << 20;
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
        let store = Store {
            file,
            path,
            fsync,
            seed,
            compacted: ending.good_len,
            len: ending.good_len,
            max: None,
            pending: Vec::new(),
        };
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
        let store = Store {
            file,
            path,
            fsync,
            seed,
            compacted: header.len() as u64,
            len: header.len() as u64,
            max: None,
            pending: Vec::new(),
        };
        Ok(Opened {
            store,
            seed,
            ending: Ending::default(),
            cut: 0,
        })
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
                self.file.sync_data()
            }
        });
        match written {
            Ok(()) => {
                self.len += self.pending.len() as u64;
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

    /// Forgets the records not yet written: a rewrite of everything live
    /// holds them already.
    pub fn drop_pending(&mut self) {
        self.pending.clear();
    }

    /// Whether the journal has grown enough past its live records to be
    /// rewritten.
    pub fn wants_rewrite(&self) -> bool {
        self.len
            > self
                .compacted
                .saturating_mul(2)
                .saturating_add(COMPACT_SLACK)
    }

    /// Replaces the journal with `records` (what is live now), crash-safe at
    /// every point: they go to `journal.new`, which is made durable, then
    /// renamed over the journal, and the directory made durable. A crash
    /// before the rename leaves the old journal whole (and a stale
    /// `journal.new`, overwritten next time); after it, the new one.
    pub fn rewrite(&mut self, records: impl Iterator<Item = Record>) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let fresh = dir.join("journal.new");
        let mut bytes = Vec::new();
        Record::Header {
            version: VERSION,
            seed: self.seed,
        }
        .encode(&mut bytes);
        for record in records {
            record.encode(&mut bytes);
        }
        let mut file = File::create(&fresh)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&fresh, &self.path)?;
        File::open(dir)?.sync_all()?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        self.len = bytes.len() as u64;
        self.compacted = self.len;
        Ok(())
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

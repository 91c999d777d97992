//! Fixed-size byte buffers and the pool they come from. A connection holds a
//! buffer only while it reads or relays; parked and idle connections give theirs
//! back, so memory follows activity, not the number of connections.

/// A fixed-capacity byte buffer with a read cursor: bytes `start..end` are pending.
pub struct Buf {
    data: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Buf {
    pub fn pending(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn capacity(&self) -> usize {
        self.data.len()
    }

    /// Marks `n` pending bytes as used.
    pub fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.len());
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space at the end, after moving pending bytes to the front when the
    /// tail has become small.
    pub fn spare(&mut self) -> &mut [u8] {
        self.split_spare().0
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.data.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// Free space at the end without compacting.
    pub fn spare_len(&self) -> usize {
        self.data.len() - self.end + self.start
    }

    /// [`Buf::spare`] and what commits bytes written into it, borrowed
    /// apart, so that a writer can hold the room and commit when it is done.
    pub fn split_spare(&mut self) -> (&mut [u8], Commit<'_>) {
        if self.data.len() - self.end < self.data.len() / 2 {
            self.compact();
        }
        let capacity = self.data.len();
        let spare = &mut self.data[self.end..];
        let commit = Commit {
            end: &mut self.end,
            capacity,
        };
        (spare, commit)
    }

    /// Marks `n` bytes written into [`Buf::spare`] as pending.
    pub fn commit(&mut self, n: usize) {
        debug_assert!(self.end + n <= self.data.len());
        self.end += n;
    }

    /// Appends `bytes`; returns false (appending nothing) if they do not fit.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if self.spare_len() < bytes.len() {
            return false;
        }
        if self.data.len() - self.end < bytes.len() {
            self.compact();
        }
        self.data[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
        true
    }
}

/// Makes room in `v` for `additional` more bytes. A body held whole grows by
/// an eighth (at least 4 KiB) rather than doubling, and never past `limit`, so
/// its allocation stays within an eighth of what it holds and of the totals
/// that count it.
pub fn reserve_body(v: &mut Vec<u8>, additional: usize, limit: usize) {
    let needed = v.len() + additional;
    if needed <= v.capacity() {
        return;
    }
    let target = needed
        .max(v.len() + v.len() / 8)
        .max(v.len() + 4096)
        .min(limit.max(needed));
    v.reserve_exact(target - v.len());
}

/// Commits bytes written into a buffer's spare room ([`Buf::split_spare`]).
pub struct Commit<'a> {
    end: &'a mut usize,
    capacity: usize,
}

impl Commit<'_> {
    pub fn commit(self, n: usize) {
        debug_assert!(*self.end + n <= self.capacity);
        *self.end += n;
    }
}

/// Hands out buffers of one size, keeping up to `keep` returned ones for reuse so
/// that the hot path does not allocate.
pub struct BufPool {
    size: usize,
    keep: usize,
    free: Vec<Box<[u8]>>,
    /// Buffers currently handed out (for metrics and leak tests).
    outstanding: usize,
}

impl BufPool {
    pub fn new(size: usize, keep: usize) -> BufPool {
        BufPool {
            size,
            keep,
            free: Vec::with_capacity(keep),
            outstanding: 0,
        }
    }

    pub fn take(&mut self) -> Buf {
        self.outstanding += 1;
        let data = self
            .free
            .pop()
            .unwrap_or_else(|| vec![0; self.size].into_boxed_slice());
        Buf {
            data,
            start: 0,
            end: 0,
        }
    }

    pub fn give(&mut self, buf: Buf) {
        self.outstanding -= 1;
        if self.free.len() < self.keep {
            self.free.push(buf.data);
        }
    }

    /// Returns `slot`'s buffer to the pool if it holds no pending bytes.
    pub fn give_if_empty(&mut self, slot: &mut Option<Buf>) {
        if slot.as_ref().is_some_and(Buf::is_empty) {
            if let Some(buf) = slot.take() {
                self.give(buf);
            }
        }
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Gives `slot`'s buffer back, keeping its pending bytes (if any) in an
    /// allocation of their own size: a request that waits costs what it sent,
    /// not a whole buffer.
    pub fn stash(&mut self, slot: &mut Option<Buf>) -> Box<[u8]> {
        let Some(buf) = slot.take() else {
            return Box::default();
        };
        let kept: Box<[u8]> = buf.pending().into();
        self.give(buf);
        kept
    }

    /// Undoes [`BufPool::stash`]: the kept bytes go back into a buffer, ahead of
    /// anything the slot holds already.
    pub fn unstash(&mut self, kept: &mut Box<[u8]>, slot: &mut Option<Buf>) {
        if kept.is_empty() {
            return;
        }
        let mut buf = self.take();
        let mut pushed = buf.push(kept);
        if let Some(old) = slot.take() {
            pushed &= buf.push(old.pending());
            self.give(old);
        }
        debug_assert!(pushed, "stashed bytes came from one buffer");
        *slot = Some(buf);
        *kept = Box::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_spare_and_compaction() {
        let mut pool = BufPool::new(8, 1);
        let mut buf = pool.take();
        assert!(buf.push(b"abcdef"));
        buf.consume(4);
        assert_eq!(buf.pending(), b"ef");
        assert_eq!(buf.spare_len(), 6);
        assert!(buf.push(b"ghij"), "compaction makes room");
        assert_eq!(buf.pending(), b"efghij");
        assert!(!buf.push(b"klm"));
        buf.consume(6);
        assert!(buf.is_empty());
        assert_eq!(buf.spare().len(), 8);
        pool.give(buf);
        assert_eq!(pool.outstanding(), 0);
    }

    #[test]
    fn stash_keeps_only_the_pending_bytes_and_unstash_restores_them() {
        let mut pool = BufPool::new(16, 2);
        let mut slot = Some(pool.take());
        slot.as_mut().unwrap().push(b"headbody");
        slot.as_mut().unwrap().consume(4);
        let mut kept = pool.stash(&mut slot);
        assert!(slot.is_none());
        assert_eq!(&kept[..], b"body");
        assert_eq!(pool.outstanding(), 0, "the buffer went back");
        pool.unstash(&mut kept, &mut slot);
        assert_eq!(slot.as_ref().unwrap().pending(), b"body");
        assert!(kept.is_empty());
        // Nothing stashed: nothing taken.
        let mut empty = Some(pool.take());
        let mut kept = pool.stash(&mut empty);
        assert!(kept.is_empty());
        pool.unstash(&mut kept, &mut empty);
        assert!(empty.is_none());
        pool.give(slot.take().unwrap());
        assert_eq!(pool.outstanding(), 0);
    }

    #[test]
    fn a_held_body_grows_by_an_eighth_up_to_its_limit() {
        let mut v = Vec::new();
        reserve_body(&mut v, 10, 1 << 20);
        assert!(v.capacity() >= 4096 && v.capacity() < 8192);
        v.resize(100_000, 0);
        v.shrink_to_fit();
        reserve_body(&mut v, 1, 1 << 20);
        assert!(
            v.capacity() >= 112_500 && v.capacity() < 120_000,
            "{}",
            v.capacity()
        );
        reserve_body(&mut v, 1, 100_001);
        v.shrink_to_fit();
        reserve_body(&mut v, 1, 100_001);
        assert!(v.capacity() <= 100_001 + 16, "never past the limit");
        reserve_body(&mut v, 50, 100_001);
        assert!(v.capacity() >= 100_050, "what is needed always fits");
    }

    /// The memory bound counts pooled buffers within the connections' term:
    /// a pool's buffers, out or kept, never outnumber the most ever out at once.
    #[test]
    fn a_pool_never_holds_more_buffers_than_were_ever_out_at_once() {
        let mut pool = BufPool::new(16, 64);
        let mut out: Vec<Buf> = Vec::new();
        let (mut most_out, mut state) = (0usize, 0x2545_f491_4f6c_dd1du64);
        for step in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Drift between few and many out, as load comes and goes.
            let cap = if step / 1000 % 2 == 0 { 100 } else { 5 };
            if out.len() < cap && state & 3 != 0 {
                out.push(pool.take());
            } else if let Some(buf) = out.pop() {
                pool.give(buf);
            }
            most_out = most_out.max(out.len());
            assert!(pool.outstanding() + pool.free.len() <= most_out.max(1));
        }
        assert!(most_out > 64, "the test drove the pool past its keep");
    }

    #[test]
    fn pool_reuses_up_to_keep() {
        let mut pool = BufPool::new(4, 1);
        let a = pool.take();
        let b = pool.take();
        let a_ptr = a.data.as_ptr();
        pool.give(a);
        pool.give(b);
        assert_eq!(pool.free.len(), 1);
        assert_eq!(pool.take().data.as_ptr(), a_ptr);
    }
}

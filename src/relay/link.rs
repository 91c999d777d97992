//! link: one producer to one consumer, matched first come first served.

use std::collections::VecDeque;

use super::secret::{Presented, WriteSecret};
use super::table::Channel;
use super::{Millis, RelayError, Role, WaiterId};

/// What became of an arriving link request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkArrival {
    /// Nobody of the other role is waiting: the request waits in the queue.
    Parked,
    /// Paired with this waiter of the other role, which left the queue.
    Paired(WaiterId),
}

/// One link channel. Only one role can be waiting at a time: an arrival of the
/// other role is paired at once, so a single queue and its role suffice.
#[derive(Default, Debug)]
pub struct LinkChannel {
    waiting: VecDeque<WaiterId>,
    waiting_role: Option<Role>,
    secret: WriteSecret,
    last_active: Millis,
}

/// Queue capacity a recycled channel may keep.
const RECYCLE_CAPACITY: usize = 8;

impl LinkChannel {
    pub(super) fn arrive(
        &mut self,
        now: Millis,
        role: Role,
        waiter: WaiterId,
        secret: Presented,
        room: bool,
    ) -> Result<LinkArrival, RelayError> {
        self.last_active = now;
        if role == Role::Producer {
            self.secret.admit(secret, room)?;
        }
        if self.waiting_role.is_some_and(|r| r != role) {
            if let Some(counterpart) = self.waiting.pop_front() {
                if self.waiting.is_empty() {
                    self.waiting_role = None;
                }
                return Ok(LinkArrival::Paired(counterpart));
            }
        }
        self.waiting.push_back(waiter);
        self.waiting_role = Some(role);
        Ok(LinkArrival::Parked)
    }

    pub(super) fn leave(&mut self, now: Millis, waiter: WaiterId) -> bool {
        let Some(at) = self.waiting.iter().position(|&w| w == waiter) else {
            return false;
        };
        self.waiting.remove(at);
        if self.waiting.is_empty() {
            self.waiting_role = None;
        }
        self.last_active = now;
        true
    }
}

impl Channel for LinkChannel {
    fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    fn is_busy(&self) -> bool {
        !self.waiting.is_empty()
    }

    fn is_remembered(&self) -> bool {
        self.secret.is_claimed()
    }

    fn last_active(&self) -> Millis {
        self.last_active
    }

    fn drain(&mut self, out: &mut Vec<WaiterId>) {
        out.extend(self.waiting.drain(..));
        self.waiting_role = None;
    }

    fn recycle(&mut self) -> bool {
        let keep = self.waiting.capacity() <= RECYCLE_CAPACITY;
        self.waiting.clear();
        self.waiting_role = None;
        self.secret = WriteSecret::default();
        self.last_active = 0;
        keep
    }
}

//! Write secrets: the first writer that presents a non-empty secret claims the
//! channel; afterwards every writer must present the same one. The claim is
//! kept as a keyed hash ([`super::key`]), never as sent.

use super::key::Key;
use super::ClaimError;

#[derive(Default, Debug)]
pub struct WriteSecret {
    claimed: Option<Key>,
}

/// A writer's secret as the core sees it: `None` when none was presented.
pub type Presented = Option<Key>;

impl WriteSecret {
    /// Checks a writer's secret, claiming the channel if it is unclaimed and a
    /// secret is presented. A new claim needs `room` (the cap on remembered
    /// channels): a claim is never forgotten early to make room.
    pub fn admit(&mut self, presented: Presented, room: bool) -> Result<(), ClaimError> {
        match (self.claimed, presented) {
            (Some(claimed), Some(p)) if claimed == p => Ok(()),
            (Some(_), _) => Err(ClaimError::WrongSecret),
            (None, None) => Ok(()),
            (None, Some(_)) if !room => Err(ClaimError::NoRoom),
            (None, Some(p)) => {
                self.claimed = Some(p);
                Ok(())
            }
        }
    }

    /// Whether a writer presenting `presented` may write, claiming nothing.
    pub fn check(&self, presented: Presented) -> Result<(), ClaimError> {
        match self.claimed {
            Some(claimed) if presented != Some(claimed) => Err(ClaimError::WrongSecret),
            _ => Ok(()),
        }
    }

    pub fn is_claimed(&self) -> bool {
        self.claimed.is_some()
    }

    /// The claim's keyed hash, if claimed.
    pub fn claim(&self) -> Option<Key> {
        self.claimed
    }

    /// Claims with a secret kept from before a restart.
    pub fn restore(&mut self, claimed: Key) {
        self.claimed = Some(claimed);
    }
}

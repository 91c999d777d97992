//! Write secrets: the first writer that presents a non-empty secret claims the
//! channel; afterwards every writer must present the same one.

use super::RelayError;

#[derive(Default, Debug)]
pub struct WriteSecret {
    claimed: Option<Box<[u8]>>,
}

impl WriteSecret {
    /// Checks a writer's secret, claiming the channel if it is unclaimed and the
    /// secret is non-empty.
    pub fn admit(&mut self, presented: &[u8]) -> Result<(), RelayError> {
        match &self.claimed {
            Some(claimed) if **claimed == *presented => Ok(()),
            Some(_) => Err(RelayError::WrongSecret),
            None if presented.is_empty() => Ok(()),
            None => {
                self.claimed = Some(presented.into());
                Ok(())
            }
        }
    }
}

//! Why the core refuses an operation: one small error type per kind of
//! operation, and how they relate.

/// Why a writer may not use a channel (link producers, mcast producers,
/// `SERVE`s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// The channel was claimed with a different write secret.
    WrongSecret,
    /// The request would make the relay remember one more channel (a claim,
    /// a first mcast message) and the cap on remembered channels is reached.
    NoRoom,
    /// Likewise, and the writer's client address has its share of the cap
    /// remembered already.
    ClientFull,
}

/// Why an mcast upload may not start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PublishError {
    Claim(ClaimError),
    /// The message's record alone would pass the total of all messages.
    Full,
}

/// Why uploaded bytes were refused (nothing of them was appended).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendError {
    /// The message would grow past its limit.
    TooLarge,
    /// All messages together would pass their total.
    Full,
}

/// Why a proxy result was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultError {
    Claim(ClaimError),
    /// No job by that id awaits a result (unknown, not delivered yet, answered,
    /// or its client left).
    UnknownJob,
}

impl From<PublishError> for Option<ClaimError> {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Claim(c) => Some(c),
            PublishError::Full => None,
        }
    }
}

impl From<ResultError> for Option<ClaimError> {
    fn from(e: ResultError) -> Self {
        match e {
            ResultError::Claim(c) => Some(c),
            ResultError::UnknownJob => None,
        }
    }
}

impl From<ClaimError> for PublishError {
    fn from(e: ClaimError) -> Self {
        PublishError::Claim(e)
    }
}

impl From<ClaimError> for ResultError {
    fn from(e: ClaimError) -> Self {
        ResultError::Claim(e)
    }
}

impl std::fmt::Display for ClaimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClaimError::WrongSecret => "wrong write secret",
            ClaimError::NoRoom => "relay remembers too many channels",
            ClaimError::ClientFull => "your address holds its share of remembered channels",
        })
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublishError::Claim(e) => e.fmt(f),
            PublishError::Full => f.write_str("relay storage for messages is full"),
        }
    }
}

impl std::fmt::Display for AppendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AppendError::TooLarge => "message too large",
            AppendError::Full => "relay storage for messages is full",
        })
    }
}

impl std::fmt::Display for ResultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResultError::Claim(e) => e.fmt(f),
            ResultError::UnknownJob => f.write_str("unknown or already answered job"),
        }
    }
}

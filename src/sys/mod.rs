//! The raw system calls the shell makes through libc, in one place: zero-copy
//! pipes, the pass buffer, the signal pipe, socket options, process limits and randomness.
//! Everything above this module uses safe wrappers.

#[cfg(target_os = "linux")]
pub mod pass;
pub mod process;
pub mod signal;
pub mod socket;
#[cfg(target_os = "linux")]
pub mod splice;

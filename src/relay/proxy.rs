//! proxy: a "server" (typically a browser tab) long-polls with `SERVE`; every
//! other request on its id becomes a job handed to exactly one waiting `SERVE`,
//! and the job's result, sent with a later `SERVE`, answers the client.

use std::collections::{HashMap, VecDeque};

use super::secret::{Presented, WriteSecret};
use super::table::Channel;
use super::{ClaimError, Millis, ResultError, WaiterId};

/// A job id: 8 characters from `[0-9a-zA-Z]`.
pub type JobId = [u8; 8];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobState {
    /// Waiting for a `SERVE` to pick it up.
    Queued,
    /// Its request is being sent to a `SERVE`; a result is not accepted yet.
    Dispatched,
    /// Its request was delivered; the client waits for the result.
    AwaitingResult,
}

#[derive(Debug)]
struct Job {
    client: WaiterId,
    state: JobState,
}

/// A job handed to a server, or a request left waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyDispatch {
    /// `job` pairs the client with the `SERVE` request `counterpart`.
    Dispatched { job: JobId, counterpart: WaiterId },
    /// Nobody to pair with yet: the request waits.
    Parked,
}

#[derive(Default, Debug)]
pub struct ProxyChannel {
    /// `SERVE` requests waiting for a job, first come first served.
    servers: VecDeque<WaiterId>,
    /// Jobs not yet handed out, oldest first.
    queued: VecDeque<JobId>,
    jobs: HashMap<JobId, Job>,
    /// Jobs in `JobState::Dispatched` (not counted as waiting).
    dispatched: usize,
    secret: WriteSecret,
    last_active: Millis,
}

impl ProxyChannel {
    /// A client request arrives; `job` is a fresh id for it.
    pub(super) fn request(&mut self, now: Millis, client: WaiterId, job: JobId) -> ProxyDispatch {
        self.last_active = now;
        if let Some(server) = self.servers.pop_front() {
            self.dispatched += 1;
            self.jobs.insert(
                job,
                Job {
                    client,
                    state: JobState::Dispatched,
                },
            );
            return ProxyDispatch::Dispatched {
                job,
                counterpart: server,
            };
        }
        self.jobs.insert(
            job,
            Job {
                client,
                state: JobState::Queued,
            },
        );
        self.queued.push_back(job);
        ProxyDispatch::Parked
    }

    pub(super) fn has_job(&self, job: &JobId) -> bool {
        self.jobs.contains_key(job)
    }

    /// A `SERVE` request is ready for a job.
    pub(super) fn serve(
        &mut self,
        now: Millis,
        server: WaiterId,
        secret: Presented,
        room: bool,
    ) -> Result<ProxyDispatch, ClaimError> {
        self.last_active = now;
        self.secret.admit(secret, room)?;
        while let Some(job) = self.queued.pop_front() {
            if let Some(entry) = self.jobs.get_mut(&job) {
                entry.state = JobState::Dispatched;
                self.dispatched += 1;
                return Ok(ProxyDispatch::Dispatched {
                    job,
                    counterpart: entry.client,
                });
            }
        }
        self.servers.push_back(server);
        Ok(ProxyDispatch::Parked)
    }

    /// The job's request reached its server: a result may now arrive.
    pub(super) fn delivered(&mut self, now: Millis, job: &JobId) {
        self.last_active = now;
        if let Some(entry) = self.jobs.get_mut(job) {
            if entry.state == JobState::Dispatched {
                self.dispatched -= 1;
            }
            entry.state = JobState::AwaitingResult;
        }
    }

    /// A `SERVE` brings the result of `job`: returns the client to answer.
    pub(super) fn result(
        &mut self,
        now: Millis,
        secret: Presented,
        room: bool,
        job: &JobId,
    ) -> Result<WaiterId, ResultError> {
        self.last_active = now;
        self.secret.admit(secret, room)?;
        match self.jobs.get(job) {
            Some(entry) if entry.state == JobState::AwaitingResult => {
                let client = entry.client;
                self.jobs.remove(job);
                Ok(client)
            }
            _ => Err(ResultError::UnknownJob),
        }
    }

    /// A client went away (waiting, or being served): its job is forgotten.
    pub(super) fn client_leave(&mut self, now: Millis, job: &JobId) -> bool {
        self.last_active = now;
        let Some(gone) = self.jobs.remove(job) else {
            return false;
        };
        match gone.state {
            JobState::Queued => self.queued.retain(|j| j != job),
            JobState::Dispatched => self.dispatched -= 1,
            JobState::AwaitingResult => {}
        }
        true
    }

    /// A waiting `SERVE` went away.
    pub(super) fn server_leave(&mut self, now: Millis, server: WaiterId) -> bool {
        self.last_active = now;
        let before = self.servers.len();
        self.servers.retain(|&s| s != server);
        before != self.servers.len()
    }
}

impl Channel for ProxyChannel {
    fn claim(&self) -> Option<super::key::Key> {
        self.secret.claim()
    }
    fn restore_claim(&mut self, now: Millis, secret: super::key::Key) {
        self.secret.restore(secret);
        self.last_active = now;
    }

    fn waiting_len(&self) -> usize {
        self.servers.len() + self.jobs.len() - self.dispatched
    }

    fn is_busy(&self) -> bool {
        !self.servers.is_empty() || !self.jobs.is_empty()
    }

    fn is_remembered(&self) -> bool {
        self.secret.is_claimed()
    }

    fn last_active(&self) -> Millis {
        self.last_active
    }

    fn drain(&mut self, out: &mut Vec<WaiterId>) {
        out.extend(self.servers.drain(..));
        for job in self.queued.drain(..) {
            if let Some(entry) = self.jobs.remove(&job) {
                out.push(entry.client);
            }
        }
        self.jobs.retain(|_, j| {
            let awaiting = j.state == JobState::AwaitingResult;
            if awaiting {
                out.push(j.client);
            }
            !awaiting
        });
    }

    fn recycle(&mut self) -> bool {
        *self = ProxyChannel::default();
        true
    }
}

#[cfg(test)]
mod tests {
    use crate::relay::*;

    fn dispatched(d: ProxyDispatch) -> (JobId, WaiterId) {
        match d {
            ProxyDispatch::Dispatched { job, counterpart } => (job, counterpart),
            ProxyDispatch::Parked => panic!("expected a dispatch"),
        }
    }

    #[test]
    fn job_ids_are_eight_alphanumerics_and_differ() {
        let mut relay = Relay::new(Settings::default());
        let mut seen = std::collections::HashSet::new();
        for n in 0..1000 {
            let (job, _) = relay.proxy_request(0, b"p", WaiterId(n));
            assert!(job.iter().all(u8::is_ascii_alphanumeric), "{job:?}");
            assert!(seen.insert(job), "duplicate job id");
        }
    }

    #[test]
    fn a_waiting_server_takes_the_next_request() {
        let mut relay = Relay::new(Settings::default());
        assert_eq!(
            relay.proxy_serve(0, b"p", WaiterId(1), b"").unwrap(),
            ProxyDispatch::Parked
        );
        let (job, d) = relay.proxy_request(0, b"p", WaiterId(2));
        assert_eq!(dispatched(d), (job, WaiterId(1)));
        assert_eq!(
            relay.proxy_result(0, b"p", b"", &job),
            Err(ResultError::UnknownJob),
            "not delivered yet"
        );
        relay.proxy_delivered(0, b"p", &job);
        assert_eq!(relay.proxy_result(0, b"p", b"", &job), Ok(WaiterId(2)));
        assert_eq!(
            relay.proxy_result(0, b"p", b"", &job),
            Err(ResultError::UnknownJob),
            "answered once"
        );
    }

    #[test]
    fn queued_jobs_go_to_servers_in_order_one_each() {
        let mut relay = Relay::new(Settings::default());
        let (j1, _) = relay.proxy_request(0, b"p", WaiterId(1));
        let (j2, _) = relay.proxy_request(0, b"p", WaiterId(2));
        assert_eq!(
            dispatched(relay.proxy_serve(0, b"p", WaiterId(10), b"").unwrap()),
            (j1, WaiterId(1))
        );
        assert_eq!(
            dispatched(relay.proxy_serve(0, b"p", WaiterId(11), b"").unwrap()),
            (j2, WaiterId(2))
        );
        assert_eq!(
            relay.proxy_serve(0, b"p", WaiterId(12), b"").unwrap(),
            ProxyDispatch::Parked
        );
    }

    #[test]
    fn a_client_that_leaves_takes_its_job_along() {
        let mut relay = Relay::new(Settings::default());
        let (queued, _) = relay.proxy_request(0, b"p", WaiterId(1));
        assert!(relay.proxy_client_leave(0, b"p", &queued));
        assert_eq!(
            relay.proxy_serve(0, b"p", WaiterId(10), b"").unwrap(),
            ProxyDispatch::Parked
        );
        let (job, _) = relay.proxy_request(0, b"p", WaiterId(2));
        relay.proxy_delivered(0, b"p", &job);
        relay.proxy_client_leave(0, b"p", &job);
        assert_eq!(
            relay.proxy_result(0, b"p", b"", &job),
            Err(ResultError::UnknownJob),
            "late result"
        );
    }

    #[test]
    fn a_server_that_leaves_gets_no_job() {
        let mut relay = Relay::new(Settings::default());
        relay.proxy_serve(0, b"p", WaiterId(10), b"").unwrap();
        assert!(relay.proxy_server_leave(0, b"p", WaiterId(10)));
        assert_eq!(
            relay.proxy_request(0, b"p", WaiterId(1)).1,
            ProxyDispatch::Parked
        );
    }

    #[test]
    fn serve_secret() {
        let mut relay = Relay::new(Settings::default());
        relay.proxy_serve(0, b"p", WaiterId(10), b"k").unwrap();
        assert_eq!(
            relay.proxy_serve(0, b"p", WaiterId(11), b"x"),
            Err(ClaimError::WrongSecret)
        );
        let (job, _) = relay.proxy_request(0, b"p", WaiterId(1));
        relay.proxy_delivered(0, b"p", &job);
        assert_eq!(
            relay.proxy_result(0, b"p", b"x", &job),
            Err(ResultError::Claim(ClaimError::WrongSecret))
        );
        assert_eq!(relay.proxy_result(0, b"p", b"k", &job), Ok(WaiterId(1)));
    }

    #[test]
    fn drain_returns_servers_and_waiting_clients() {
        let mut relay = Relay::new(Settings::default());
        relay.proxy_serve(0, b"c", WaiterId(10), b"").unwrap();
        relay.proxy_request(0, b"b", WaiterId(1));
        relay.proxy_serve(0, b"a", WaiterId(11), b"").unwrap();
        let (job, d) = relay.proxy_request(0, b"a", WaiterId(2));
        assert_eq!(
            dispatched(d),
            (job, WaiterId(11)),
            "server 11 is busy, not waiting"
        );
        relay.proxy_delivered(0, b"a", &job);
        let mut out = Vec::new();
        relay.drain_waiters(&mut out);
        out.sort();
        assert_eq!(out, vec![WaiterId(1), WaiterId(2), WaiterId(10)]);
    }
}

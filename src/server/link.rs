//! link: one producer (`POST`/`PUT`) hands its body to one consumer (`GET`).

use super::respond::Guarded;
use super::{Server, Step};
use crate::conn::{ConnId, Transfer, Wait};
use crate::http::Status;
use crate::relay::{LinkArrival, Role, WaiterId};

impl Server {
    pub(super) fn handle_link(&mut self, id: ConnId) -> Step {
        let role = match self.conns[id.0].req.method.as_slice() {
            b"GET" => Role::Consumer,
            b"POST" | b"PUT" => Role::Producer,
            _ => {
                return self.refuse(
                    id,
                    Status(405),
                    "405 method not allowed: link takes GET, POST and PUT\n",
                )
            }
        };
        self.load_secret(id);
        let now = self.now_millis();
        let conn = &self.conns[id.0];
        match self
            .relay
            .link_arrive(now, &conn.channel, role, WaiterId(id.0), &self.secret)
        {
            Err(e) => self.refuse_claim(id, e, Guarded::Channel),
            Ok(LinkArrival::Parked) => {
                self.continue_body(id);
                self.park(id, Wait::Link(role))
            }
            Ok(LinkArrival::Paired(WaiterId(other))) => {
                self.continue_body(id);
                let other = ConnId(other);
                match role {
                    Role::Producer => self.start_transfer(id, other, Transfer::Link),
                    Role::Consumer => self.start_transfer(other, id, Transfer::Link),
                }
                Step::Again
            }
        }
    }
}

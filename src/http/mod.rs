//! HTTP/1.1 as the relay speaks it: request heads (httparse), request body
//! framing, response heads, and the small text formats the protocol needs.
//! Sans-IO: everything here works on byte slices.

mod body;
mod date;
mod head;
mod query;
mod response;

pub use body::{BodyDecoder, BodyError, Decoded};
pub use date::HttpDate;
pub use head::{parse_request, Framing, HeadError, Request, Target};
pub use query::{find_param, QueryFilter};
pub use response::{chunk_header, HeadWriter, Status};

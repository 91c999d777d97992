//! HTTP/1.1 as the relay speaks it: request heads (httparse), request body
//! framing, response heads, and the small text formats the protocol needs.
//! Sans-IO: everything here works on byte slices.

mod body;
mod date;
mod head;
mod query;
mod response;

pub use body::{BodyDecoder, BodyError, Decoded};
pub use date::{format_rfc3339, HttpDate};
pub(crate) use head::trim;
pub use head::{
    parse_request, parse_seqid, trim_capacity, Framing, HeadError, Request, Target,
    MAX_HEADER_FIELDS,
};
pub use query::{find_param, QueryFilter};
pub use response::{
    chunk_header, chunk_header_fixed, format_decimal, HeadWriter, Status, FIXED_CHUNK_HEADER,
};

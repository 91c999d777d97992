//! HTTP/1.1 as the relay speaks it: request heads (httparse), request body
//! framing, response heads, response body framing, and the small text formats
//! the protocol needs.
//! Sans-IO: everything here works on byte slices.

mod body;
mod date;
mod encode;
mod head;
mod multipart;
mod query;
mod response;
pub mod sse;

pub use body::{BodyDecoder, BodyError, Decoded};
pub use date::{format_rfc3339, HttpDate};
pub use encode::{
    response_framing, BodyFraming, BodySize, Encoder, Exchange, FramingHeader, ResponseFraming,
    CHUNK_OVERHEAD,
};
pub use head::{
    parse_request, parse_seqid, trim_capacity, Framing, HeadError, Request, Target,
    MAX_HEADER_FIELDS,
};
pub(crate) use head::{percent_decode, trim};
pub use multipart::{Event as MultipartEvent, MultipartDecoder, MultipartError, MAX_DELIMITER};
pub use query::{find_param, QueryFilter};
pub use response::{format_decimal, HeadWriter, Status};

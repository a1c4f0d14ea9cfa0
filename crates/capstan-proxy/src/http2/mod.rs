//! Our HTTP/2 codec, pure: HPACK, frames and the server connection's state machine; the server
//! that replaces `h2` wires them (issue 10).

pub(crate) mod conn;
pub(crate) mod frame;
mod head;
pub(crate) mod hpack;

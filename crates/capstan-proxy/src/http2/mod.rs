//! Our HTTP/2 codec, pure: HPACK and frames; the server that replaces `h2` wires them (issue 10).

pub(crate) mod frame;
pub(crate) mod hpack;

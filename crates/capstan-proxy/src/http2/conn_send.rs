//! The response side of [`Conn`]: heads, trailers and body within the peer's flow-control
//! windows, resets and GOAWAY.

use super::{frame, Conn, ErrorCode, SendError, StreamId};
use http::{HeaderMap, StatusCode};

impl Conn {
    fn open_for_send(&self, stream: StreamId) -> Result<usize, SendError> {
        self.position(stream)
            .filter(|&i| self.streams[i].send_open)
            .ok_or(SendError::StreamClosed)
    }

    /// Sends the response head; an informational (1xx) status may precede the final one.
    pub(crate) fn send_headers(
        &mut self,
        stream: StreamId,
        status: StatusCode,
        headers: &HeaderMap,
        end_stream: bool,
    ) -> Result<(), SendError> {
        let index = self.open_for_send(stream)?;
        let informational = status.is_informational();
        if self.streams[index].head_sent || (informational && end_stream) {
            return Err(SendError::OutOfOrder);
        }
        self.encoder
            .encode(status, headers, &mut self.block_scratch);
        self.write_block(stream, end_stream);
        if !informational {
            self.streams[index].head_sent = true;
        }
        if end_stream {
            self.close_send(index);
        }
        Ok(())
    }

    /// Sends trailers, which end the response.
    pub(crate) fn send_trailers(
        &mut self,
        stream: StreamId,
        headers: &HeaderMap,
    ) -> Result<(), SendError> {
        let index = self.open_for_send(stream)?;
        if !self.streams[index].head_sent {
            return Err(SendError::OutOfOrder);
        }
        self.encoder
            .encode_trailers(headers, &mut self.block_scratch);
        self.write_block(stream, true);
        self.close_send(index);
        Ok(())
    }

    fn write_block(&mut self, stream: StreamId, end_stream: bool) {
        frame::encode_headers(
            &mut self.out,
            stream,
            &self.block_scratch,
            end_stream,
            self.peer_max_frame_size,
        );
        self.block_scratch.clear();
    }

    /// Whether a response may still be sent on `stream` (it is neither reset nor ended).
    pub(crate) fn can_send(&self, stream: StreamId) -> bool {
        self.open_for_send(stream).is_ok()
    }

    /// How many body bytes `stream` may send now, within its window and the connection's.
    pub(crate) fn send_capacity(&self, stream: StreamId) -> usize {
        self.position(stream).map_or(0, |i| self.capacity_of(i))
    }

    fn capacity_of(&self, index: usize) -> usize {
        self.streams[index].send_window.min(self.send_window).max(0) as usize
    }

    /// Sends as much of `data` as the flow-control windows allow, END_STREAM with its last
    /// byte if `end_stream`, and says how much: the caller keeps the rest for after an
    /// [`Event::WindowOpened`]. An empty `data` with `end_stream` ends the body.
    pub(crate) fn send_data(
        &mut self,
        stream: StreamId,
        data: &[u8],
        end_stream: bool,
    ) -> Result<usize, SendError> {
        let index = self.open_for_send(stream)?;
        if !self.streams[index].head_sent {
            return Err(SendError::OutOfOrder);
        }
        let n = data.len().min(self.capacity_of(index));
        let ends = end_stream && n == data.len();
        if n == 0 && !ends {
            return Ok(0);
        }
        frame::encode_data(
            &mut self.out,
            stream,
            &data[..n],
            ends,
            self.peer_max_frame_size,
        );
        self.send_window -= n as i64;
        self.streams[index].send_window -= n as i64;
        if ends {
            self.close_send(index);
        }
        Ok(n)
    }

    /// Resets a stream (RST_STREAM with `code`); nothing if it is already gone.
    pub(crate) fn reset(&mut self, stream: StreamId, code: ErrorCode) {
        if let Some(index) = self.position(stream) {
            self.streams.swap_remove(index);
            self.send_reset(stream, code);
        }
    }

    /// Starts a graceful shutdown (§6.8): GOAWAY naming the last stream we took; streams the
    /// client opens afterwards are refused. See [`Conn::is_drained`].
    pub(crate) fn go_away(&mut self, code: ErrorCode) {
        frame::encode_goaway(&mut self.out, self.last_client_stream, code, &[]);
        self.going_away = true;
    }
}

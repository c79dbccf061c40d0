//! The prediction log's standard output sink: the pending JSON lines, taken by the writer
//! thread, written to standard output in one go.

use std::io::Write as _;

use super::{Counters, Pending, Shared};

/// Standard output's pipe capacity asked for: a poll's records (of about 250 bytes) at
/// 200,000 a second, and the most an unprivileged process may ask for by default
/// (`/proc/sys/fs/pipe-max-size`).
pub(super) const STDOUT_PIPE_BYTES: usize = 1 << 20;

/// The stdout writer: every [`POLL`](super::POLL) it takes what is pending and writes it in
/// one go.
pub(super) fn write_stdout(shared: &Shared, counters: &Counters) {
    widen_stdout_pipe();
    let mut taken = Pending::default();
    loop {
        let closed = shared.wait_and_take(&mut taken);
        if taken.records > 0 {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&taken.lines).and_then(|()| stdout.flush()) {
                Ok(()) => counters.written.inc_by(taken.records),
                Err(_) => counters.failed.inc_by(taken.records),
            };
        }
        taken.clear();
        if closed {
            return;
        }
    }
}

/// Ask for a standard output pipe that holds a poll's records, so a write seldom waits for
/// the reader to make room (each wait is a sleep and a wake-up on the server's core). Standard
/// output may be a file or a terminal, or the pipe may stay small (a per-user limit): either
/// way the log works as before.
fn widen_stdout_pipe() {
    match widen_pipe(std::io::stdout()) {
        Ok(bytes) => tracing::debug!(bytes, "prediction log: standard output pipe widened"),
        Err(error) => tracing::debug!(%error, "prediction log: standard output pipe kept as it is"),
    }
}

/// Set a pipe's capacity to [`STDOUT_PIPE_BYTES`]; the capacity it has now.
pub(super) fn widen_pipe(pipe: impl std::os::fd::AsFd) -> std::io::Result<usize> {
    Ok(rustix::pipe::fcntl_setpipe_size(pipe, STDOUT_PIPE_BYTES)?)
}

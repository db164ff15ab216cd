//! Waiting on a child with a deadline: its output read line by line on a
//! thread of its own (qemu's serial console, the comparison's workload in a
//! box), and its exit.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Waits for `child` to exit until `deadline`; None if it still runs.
/// Polled every 5 ms: the comparison times a VM's power-off with it.
pub fn wait_until(child: &mut Child, deadline: Instant) -> std::io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Why a wait for a line ended without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    /// The deadline passed.
    TimedOut,
    /// The writer closed its end: the child exited.
    Exited,
}

pub struct Lines {
    receive: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
}

impl Lines {
    /// Starts reading `stream`; invalid UTF-8 is replaced, the line end
    /// dropped.
    pub fn spawn(stream: impl Read + Send + 'static) -> Self {
        let (send, receive) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stream);
            let mut buffer = Vec::new();
            while reader.read_until(b'\n', &mut buffer).is_ok_and(|n| n > 0) {
                let line = String::from_utf8_lossy(&buffer)
                    .trim_end_matches('\n')
                    .to_owned();
                buffer.clear();
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            receive,
            reader: Some(reader),
        }
    }

    /// The next line, if it comes before `deadline`.
    pub fn next_before(&self, deadline: Instant) -> Result<String, Missed> {
        let left = deadline.saturating_duration_since(Instant::now());
        self.receive.recv_timeout(left).map_err(|err| match err {
            mpsc::RecvTimeoutError::Timeout => Missed::TimedOut,
            mpsc::RecvTimeoutError::Disconnected => Missed::Exited,
        })
    }

    /// Every line still unread, once the writer has closed its end.
    pub fn rest(&mut self) -> Vec<String> {
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        self.receive.try_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn lines_come_in_order_then_the_end_is_seen() {
        let mut lines = Lines::spawn(&b"first\nsecond\r\nno end"[..]);
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(lines.next_before(soon).unwrap(), "first");
        assert_eq!(lines.next_before(soon).unwrap(), "second\r");
        assert_eq!(lines.rest(), ["no end"]);
        assert_eq!(lines.next_before(soon), Err(Missed::Exited));
    }

    #[test]
    fn a_silent_writer_times_out() {
        let (read, _write) = std::os::unix::net::UnixStream::pair().unwrap();
        let lines = Lines::spawn(read);
        let err = lines.next_before(Instant::now() + Duration::from_millis(50));
        assert_eq!(err, Err(Missed::TimedOut));
    }
}

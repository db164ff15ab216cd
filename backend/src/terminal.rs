//! The page's terminal: one shell command at a time, run inside the box by a
//! `__box-enter` helper, its output streamed back. Bounded in time and size;
//! Ctrl-C sends SIGINT to the command's process group.

use damda_protocol::{OutputStream, ServerMessage};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// The longest a command may run.
pub const TIME_LIMIT: Duration = Duration::from_secs(120);
/// The most output streamed back per command.
pub const OUTPUT_LIMIT: usize = 256 * 1024;

/// A running command: its process group, for Ctrl-C and for ending it.
pub struct Running {
    group: Pid,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn interrupt(&self) {
        let _ = killpg(self.group, Signal::SIGINT);
    }

    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = killpg(self.group, Signal::SIGKILL);
        self.task.abort();
    }
}

async fn pump<T: From<ServerMessage>>(
    mut from: impl tokio::io::AsyncRead + Unpin,
    stream: OutputStream,
    out: mpsc::Sender<T>,
    budget: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::Ordering;
    let mut buf = vec![0u8; 4096];
    // Bytes of a UTF-8 character split across two reads wait for the rest.
    let mut pending: Vec<u8> = Vec::new();
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let left = budget.fetch_sub(n.min(budget.load(Ordering::Relaxed)), Ordering::Relaxed);
        if left == 0 {
            continue; // keep draining so the command does not block
        }
        pending.extend_from_slice(&buf[..n.min(left)]);
        let complete = match std::str::from_utf8(&pending) {
            Ok(_) => pending.len(),
            Err(err) if err.error_len().is_none() => err.valid_up_to(),
            Err(_) => pending.len(),
        };
        let rest = pending.split_off(complete);
        let data = String::from_utf8_lossy(&pending).into_owned();
        pending = rest;
        let chunk = ServerMessage::Output { stream, data };
        if !is_empty_chunk(&chunk) && out.send(chunk.into()).await.is_err() {
            break;
        }
    }
}

fn is_empty_chunk(chunk: &ServerMessage) -> bool {
    matches!(chunk, ServerMessage::Output { data, .. } if data.is_empty())
}

/// Starts `command` (a prepared `__box-enter` command) and streams it as
/// messages into `out`.
pub fn start<T: From<ServerMessage> + Send + 'static>(
    command: std::process::Command,
    out: mpsc::Sender<T>,
) -> std::io::Result<Running> {
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let group = Pid::from_raw(child.id().unwrap_or(0) as i32);
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(OUTPUT_LIMIT));
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let task = tokio::spawn(async move {
        let pumps = futures::future::join(
            pump(stdout, OutputStream::Stdout, out.clone(), budget.clone()),
            pump(stderr, OutputStream::Stderr, out.clone(), budget.clone()),
        );
        let status = match tokio::time::timeout(TIME_LIMIT, async {
            pumps.await;
            child.wait().await
        })
        .await
        {
            Ok(Ok(status)) => status,
            Ok(Err(_)) | Err(_) => {
                let _ = killpg(group, Signal::SIGKILL);
                let note = format!("\n[damda: stopped after {} s]\n", TIME_LIMIT.as_secs());
                let _ = out
                    .send(
                        ServerMessage::Output {
                            stream: OutputStream::Stderr,
                            data: note,
                        }
                        .into(),
                    )
                    .await;
                child.wait().await.unwrap_or_default()
            }
        };
        if budget.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            let _ = out
                .send(
                    ServerMessage::Output {
                        stream: OutputStream::Stderr,
                        data: format!("\n[damda: output cut at {} KiB]\n", OUTPUT_LIMIT / 1024),
                    }
                    .into(),
                )
                .await;
        }
        use std::os::unix::process::ExitStatusExt;
        let _ = out
            .send(
                ServerMessage::Exited {
                    code: status.code(),
                    signal: status.signal(),
                }
                .into(),
            )
            .await;
    });
    Ok(Running { group, task })
}

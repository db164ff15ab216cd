//! The helper's side: a single-threaded loop that applies steps to itself.

use super::{InsideFacts, Reply, Request, CONTROL_FD, MAX_PACKET};
use crate::kernel::LiveKernel;
use crate::observe::own_hostname;
use crate::steps::{self, BoxSpec};
use nix::sys::socket::{recv, send, MsgFlags};
use std::os::fd::RawFd;

fn inside_facts() -> InsideFacts {
    InsideFacts {
        hostname: own_hostname(),
    }
}

fn handle(kernel: &LiveKernel, request: Request) -> Reply {
    match request {
        Request::Inspect => Reply::Inspected {
            inside: inside_facts(),
        },
        Request::Apply {
            step,
            rootfs,
            hostname,
        } => {
            let Some(step) = steps::find(step) else {
                return Reply::Refused {
                    message: format!("step {step} is not available in this build"),
                };
            };
            let spec = BoxSpec { rootfs, hostname };
            match step.apply(kernel, &spec) {
                Ok(()) => Reply::Applied {
                    syscalls: kernel.take_log(),
                    inside: inside_facts(),
                },
                Err(err) => Reply::Failed {
                    syscalls: kernel.take_log(),
                    error: err.to_step_error(),
                },
            }
        }
    }
}

fn reply(fd: RawFd, reply: &Reply) -> nix::Result<()> {
    let bytes = serde_json::to_vec(reply).expect("replies serialise");
    send(fd, &bytes, MsgFlags::empty()).map(|_| ())
}

/// Serves requests until the server closes the socket, then exits.
pub fn run() -> ! {
    let kernel = LiveKernel::default();
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let len = match recv(CONTROL_FD, &mut buf, MsgFlags::empty()) {
            Ok(0) => std::process::exit(0),
            Ok(len) => len,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(1),
        };
        let answer = match serde_json::from_slice::<Request>(&buf[..len]) {
            Ok(request) => handle(&kernel, request),
            Err(err) => Reply::Refused {
                message: format!("malformed request: {err}"),
            },
        };
        if reply(CONTROL_FD, &answer).is_err() {
            std::process::exit(1);
        }
    }
}

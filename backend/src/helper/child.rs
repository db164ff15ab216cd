//! The helper's side: a single-threaded loop that applies steps to itself.

use super::{InsideFacts, Reply, Request, CONTROL_FD, MAX_PACKET};
use crate::kernel::LiveKernel;
use crate::observe::{self, own_hostname};
use crate::steps;
use damda_protocol::{LinkState, ProcessRow};
use nix::sys::socket::{recv, send, MsgFlags};
use std::collections::BTreeMap;
use std::os::fd::RawFd;

/// Interfaces and their addresses as getifaddrs(3) reports them here.
fn links() -> Vec<LinkState> {
    let mut by_name: BTreeMap<String, LinkState> = BTreeMap::new();
    for ifaddr in nix::ifaddrs::getifaddrs().into_iter().flatten() {
        let link = by_name
            .entry(ifaddr.interface_name.clone())
            .or_insert_with(|| LinkState {
                name: ifaddr.interface_name.clone(),
                up: ifaddr.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP),
                addresses: Vec::new(),
            });
        let address = ifaddr.address.as_ref();
        if let Some(v4) = address.and_then(|a| a.as_sockaddr_in()) {
            link.addresses.push(v4.ip().to_string());
        } else if let Some(v6) = address.and_then(|a| a.as_sockaddr_in6()) {
            link.addresses.push(v6.ip().to_string());
        }
    }
    by_name.into_values().collect()
}

/// What `ps` would list: the numeric entries of this process's /proc.
fn processes() -> (Vec<ProcessRow>, usize) {
    let mut rows: Vec<ProcessRow> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            Some(ProcessRow {
                pid,
                comm: comm.trim().to_owned(),
            })
        })
        .collect();
    rows.sort_by_key(|row| row.pid);
    let total = rows.len();
    rows.truncate(observe::MAX_PROCESS_ROWS);
    (rows, total)
}

fn inside_facts(queue: Option<&str>) -> (InsideFacts, usize) {
    let (processes, total) = processes();
    let facts = InsideFacts {
        hostname: own_hostname(),
        pid: std::process::id(),
        queue_visible: queue.map(crate::mqueue::exists),
        links: links(),
        processes,
        files: observe::PROC_FILES
            .iter()
            .map(|path| (path.to_string(), observe::read_proc_file(path)))
            .collect(),
    };
    (facts, total)
}

fn handle(kernel: &LiveKernel, request: Request) -> Reply {
    match request {
        Request::Inspect { queue } => {
            let (inside, total) = inside_facts(queue.as_deref());
            Reply::Inspected { inside, total }
        }
        Request::Apply { step, phase, spec } => {
            let Some(step) = steps::find(step) else {
                return Reply::Refused {
                    message: format!("step {step} is not available in this build"),
                };
            };
            match step.apply(kernel, &spec, phase) {
                Ok(()) => Reply::Applied {
                    syscalls: kernel.take_log(),
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

/// Sets the command name `ps` shows; exec'd from a memfd, it would be the
/// fd number.
pub fn name_process(name: &str) {
    if let Ok(name) = std::ffi::CString::new(name) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of up to 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    }
}

/// The parent half of the PID namespace's fork: the child carries on as the
/// box; this process only waits for it and exits with it.
pub fn wait_and_exit(child: nix::unistd::Pid) -> ! {
    use nix::sys::wait::{waitpid, WaitStatus};
    // The control socket (if any) is the child's now; holding it would keep
    // the server from seeing the box end.
    let _ = nix::unistd::close(CONTROL_FD);
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => std::process::exit(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => std::process::exit(128 + signal as i32),
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
            Err(_) => std::process::exit(1),
        }
    }
}

/// Starts the image's command as a child: the box's main process stays its
/// PID 1 and reaps it, as `docker run --init` does. Its standard streams go
/// to /dev/null and it inherits no other fd. A close-on-exec pipe tells
/// whether the exec happened: it closes on success, and carries the errno
/// otherwise.
pub fn spawn_service(argv: &[String]) -> nix::Result<()> {
    use nix::unistd::{fork, ForkResult};
    use std::ffi::CString;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    let args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| nix::errno::Errno::EINVAL))
        .collect::<nix::Result<_>>()?;
    let program = args.first().ok_or(nix::errno::Errno::EINVAL)?.clone();
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: the helper is single-threaded; the child only execs or exits.
    match unsafe { fork() }? {
        ForkResult::Child => {
            drop(read_end);
            if let Ok(null) = nix::fcntl::open(
                "/dev/null",
                nix::fcntl::OFlag::O_RDWR,
                nix::sys::stat::Mode::empty(),
            ) {
                for target in 0..3 {
                    // SAFETY: dup2 onto the standard streams.
                    unsafe { libc::dup2(null.as_raw_fd(), target) };
                }
            }
            // Above the standard streams; the pipe's write end stays open
            // until the exec.
            let _ = super::cloexec_from(3);
            let errno = nix::unistd::execv(&program, &args).unwrap_err();
            let _ = std::fs::File::from(write_end).write_all(&(errno as i32).to_ne_bytes());
            std::process::exit(127);
        }
        ForkResult::Parent { .. } => {
            drop(write_end);
            let mut reported = Vec::new();
            let _ = std::fs::File::from(read_end).read_to_end(&mut reported);
            match <[u8; 4]>::try_from(reported.as_slice()) {
                Ok(bytes) => Err(nix::errno::Errno::from_raw(i32::from_ne_bytes(bytes))),
                Err(_) => Ok(()),
            }
        }
    }
}

/// Reaps every child that has ended: the box's main process is PID 1 of its
/// namespace, and orphans (a daemon a terminal command left) come to it.
fn reap_children() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Serves requests until the server closes the socket, then exits.
pub fn run() -> ! {
    name_process("damda-box");
    let kernel = LiveKernel::default();
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let len = match recv(CONTROL_FD, &mut buf, MsgFlags::empty()) {
            Ok(0) => std::process::exit(0),
            Ok(len) => len,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(1),
        };
        reap_children();
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

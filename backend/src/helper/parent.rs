//! The server's side: starting a helper and talking to it.

use super::{Reply, Request, CONTROL_FD, HELPER_ARG, MAX_PACKET};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{
    recvmsg, send, setsockopt, socketpair, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixCredentials,
};
use nix::sys::time::TimeVal;
use nix::unistd::Pid;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("copying the damda binary into a sealed memfd: {0}")]
    SealExe(std::io::Error),
    #[error("socketpair(AF_UNIX, SOCK_SEQPACKET): {0}")]
    Socketpair(nix::errno::Errno),
    #[error("starting the box helper: {0}")]
    Spawn(std::io::Error),
    #[error("sending to the box helper (pid {pid}): {errno}")]
    Send { pid: u32, errno: nix::errno::Errno },
    #[error("receiving from the box helper (pid {pid}): {errno}")]
    Receive { pid: u32, errno: nix::errno::Errno },
    #[error("the box helper (pid {pid}) exited")]
    Gone { pid: u32 },
    #[error("the box helper (pid {pid}) sent a malformed reply: {reason}")]
    Malformed { pid: u32, reason: String },
}

/// How long the server waits for one reply before calling the helper hung.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// A sealed, in-memory copy of the damda binary that helpers are started from.
///
/// A box's root process could otherwise reach the host's binary through
/// /proc/<helper>/exe and overwrite it (CVE-2019-5736, runc's fix): the copy
/// is sealed against writes, and the host binary is never exec'd into a box.
///
/// Every helper is forked from one long-lived thread: PR_SET_PDEATHSIG fires
/// when the *thread* that forked a child exits, and the server's blocking
/// threads come and go.
pub struct HelperExe {
    memfd: OwnedFd,
    spawner: std::sync::Mutex<std::sync::mpsc::Sender<SpawnJob>>,
}

type SpawnJob = (Command, std::sync::mpsc::Sender<std::io::Result<Child>>);

impl HelperExe {
    /// Seals a copy of `binary` — /proc/self/exe for the damda binary itself;
    /// tests and the benchmark name the damda binary.
    pub fn seal(binary: &std::path::Path) -> Result<Self, HelperError> {
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        let memfd = memfd_create(
            "damda-helper",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(|e| HelperError::SealExe(e.into()))?;
        let mut source = File::open(binary).map_err(HelperError::SealExe)?;
        let mut target = File::from(memfd.try_clone().map_err(HelperError::SealExe)?);
        std::io::copy(&mut source, &mut target).map_err(HelperError::SealExe)?;
        let seals = SealFlag::F_SEAL_SEAL
            | SealFlag::F_SEAL_SHRINK
            | SealFlag::F_SEAL_GROW
            | SealFlag::F_SEAL_WRITE;
        fcntl(&memfd, FcntlArg::F_ADD_SEALS(seals)).map_err(|e| HelperError::SealExe(e.into()))?;
        // Keep it clear of the low numbers a child's stdio and control socket
        // are moved to before exec.
        let high = fcntl(&memfd, FcntlArg::F_DUPFD_CLOEXEC(100))
            .map_err(|e| HelperError::SealExe(e.into()))?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new fd that nothing else owns.
        let memfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) };
        let (jobs, queue) = std::sync::mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("damda-spawner".into())
            .spawn(move || {
                for (mut command, reply) in queue {
                    let _ = reply.send(command.spawn());
                }
            })
            .map_err(HelperError::SealExe)?;
        Ok(HelperExe {
            memfd,
            spawner: std::sync::Mutex::new(jobs),
        })
    }

    /// Spawns `command` on the spawner thread.
    pub fn spawn(&self, command: Command) -> std::io::Result<Child> {
        let (reply, answer) = std::sync::mpsc::channel();
        let gone = || std::io::Error::other("the spawner thread is gone");
        self.spawner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((command, reply))
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }

    fn path(&self) -> String {
        format!("/proc/self/fd/{}", self.memfd.as_raw_fd())
    }

    /// A command that runs the sealed copy with `args`, with an empty
    /// environment, every fd above `keep` closed at exec, and death with the
    /// server. Callers add their stdio.
    pub fn command(&self, args: &[&str], keep: i32) -> Command {
        let server_pid = nix::unistd::getpid();
        let mut command = Command::new(self.path());
        command
            .arg0("damda-box")
            .args(args)
            .env_clear()
            .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin");
        // SAFETY: between fork and exec only async-signal-safe calls are made.
        unsafe {
            command.pre_exec(move || close_above_and_tie(keep, server_pid));
        }
        command
    }
}

/// A running helper. Its main process is the helper itself until the PID
/// namespace's fork, then the child that carries on.
pub struct HelperProcess {
    child: Child,
    control: OwnedFd,
    /// The host pid of whoever answers on the control socket: the kernel
    /// tells us with every reply (SCM_CREDENTIALS), translated to our PID
    /// namespace.
    main_pid: u32,
    /// Held so the box's stdin stays an open pipe rather than a file.
    _stdin: ChildStdin,
}

impl HelperProcess {
    pub fn spawn(exe: &HelperExe) -> Result<Self, HelperError> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(HelperError::Socketpair)?;
        let timeout = TimeVal::new(REPLY_TIMEOUT.as_secs() as i64, 0);
        setsockopt(&ours, sockopt::ReceiveTimeout, &timeout).map_err(HelperError::Socketpair)?;
        setsockopt(&ours, sockopt::SendTimeout, &timeout).map_err(HelperError::Socketpair)?;
        setsockopt(&ours, sockopt::PassCred, &true).map_err(HelperError::Socketpair)?;

        let their_fd = theirs.as_raw_fd();
        let mut command = exe.command(&[HELPER_ARG], CONTROL_FD);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only async-signal-safe calls are made.
        unsafe {
            command.pre_exec(move || install_control(their_fd));
        }
        let mut child = exe.spawn(command).map_err(HelperError::Spawn)?;
        drop(theirs);
        let pid = child.id();
        let stdin = child.stdin.take().expect("stdin is piped");
        if let Some(out) = child.stdout.take() {
            forward_output(pid, out);
        }
        if let Some(err) = child.stderr.take() {
            forward_output(pid, err);
        }
        Ok(HelperProcess {
            child,
            control: ours,
            main_pid: pid,
            _stdin: stdin,
        })
    }

    /// The host pid of the box's main process.
    pub fn pid(&self) -> u32 {
        self.main_pid
    }

    /// The host pid of the process the server started.
    pub fn helper_pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one request and waits for its reply.
    pub fn request(&mut self, request: &Request) -> Result<Reply, HelperError> {
        let pid = self.pid();
        let bytes = serde_json::to_vec(request).expect("requests serialise");
        send(self.control.as_raw_fd(), &bytes, MsgFlags::MSG_NOSIGNAL)
            .map_err(|errno| HelperError::Send { pid, errno })?;
        let mut buf = vec![0u8; MAX_PACKET];
        let (len, sender) = loop {
            match receive_with_sender(self.control.as_raw_fd(), &mut buf) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.map_err(|errno| HelperError::Receive { pid, errno })?,
            }
        };
        if len == 0 {
            return Err(HelperError::Gone { pid });
        }
        if let Some(sender) = sender {
            self.main_pid = sender;
        }
        serde_json::from_slice(&buf[..len]).map_err(|e| HelperError::Malformed {
            pid,
            reason: e.to_string(),
        })
    }
}

/// One packet and the pid of the process that sent it.
fn receive_with_sender(fd: i32, buf: &mut [u8]) -> nix::Result<(usize, Option<u32>)> {
    let mut space = nix::cmsg_space!(UnixCredentials);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let message = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let sender = message.cmsgs()?.find_map(|cmsg| match cmsg {
        ControlMessageOwned::ScmCredentials(creds) => u32::try_from(creds.pid()).ok(),
        _ => None,
    });
    Ok((message.bytes, sender))
}

impl Drop for HelperProcess {
    fn drop(&mut self) {
        // The forked main process dies with the helper (PDEATHSIG); kill it
        // too so nothing depends on that alone.
        for pid in [self.main_pid, self.child.id()] {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// In the forked child, before exec: the control socket becomes fd 3.
fn install_control(control: i32) -> std::io::Result<()> {
    // SAFETY: plain syscalls on integers; async-signal-safe.
    let result = unsafe {
        if control == CONTROL_FD {
            libc::fcntl(CONTROL_FD, libc::F_SETFD, 0)
        } else {
            libc::dup2(control, CONTROL_FD)
        }
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// In the forked child, before exec: every fd above `keep` is marked
/// close-on-exec, and the child dies with its server.
fn close_above_and_tie(keep: i32, server_pid: Pid) -> std::io::Result<()> {
    // The sealed exe fd must live until exec.
    super::cloexec_from((keep + 1) as u32)?;
    // SAFETY: plain syscalls on integers; async-signal-safe.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // The server may have died between fork and prctl.
        if libc::getppid() != server_pid.as_raw() {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// Logs what a helper prints; the thread ends when the helper does.
fn forward_output(pid: u32, stream: impl std::io::Read + Send + 'static) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            tracing::info!(box_pid = pid, "{line}");
        }
    });
}

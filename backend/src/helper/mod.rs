//! The box helper: the process a box is made of.
//!
//! The server is multi-threaded, and namespaces and chroot must not be applied
//! in it (unshare of some namespaces is refused in a threaded process, and a
//! chroot would move every thread). So each box is a small single-threaded
//! process: the server re-executes its own binary from a sealed copy (see
//! [`parent::HelperExe`]) with only stdio and one SOCK_SEQPACKET control socket
//! open, and the helper applies steps to itself on request.
//!
//! The wire format is one JSON object per packet.

pub mod child;
pub mod enter;
pub mod parent;

use crate::steps::{BoxSpec, Phase};
use damda_protocol::{LinkState, ProcessRow, StepError, StepId};
use serde::{Deserialize, Serialize};

/// The fd number the control socket has in the helper.
pub const CONTROL_FD: i32 = 3;

/// The argument that makes `damda` run as a box helper.
pub const HELPER_ARG: &str = "__box-helper";

/// The largest packet either side sends.
pub const MAX_PACKET: usize = 256 * 1024;

/// Marks every fd from `first` up close-on-exec (marked rather than closed:
/// an fd the exec itself needs, or one that reports its failure, stays
/// open until then). Async-signal-safe: for a forked child before exec.
pub(crate) fn cloexec_from(first: u32) -> std::io::Result<()> {
    // SAFETY: a plain syscall on integers.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Apply one phase of a step to the helper itself.
    Apply {
        step: StepId,
        phase: Phase,
        spec: Box<BoxSpec>,
    },
    /// Report facts only visible from inside the box's namespaces.
    Inspect {
        /// A POSIX message queue the server made on the host, to look for.
        queue: Option<String>,
    },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Applied {
        syscalls: Vec<String>,
    },
    Failed {
        syscalls: Vec<String>,
        error: StepError,
    },
    Inspected {
        inside: InsideFacts,
        /// How many processes the box's /proc lists in all.
        total: usize,
    },
    /// The request could not be understood or is not allowed.
    Refused {
        message: String,
    },
}

/// What the box sees from inside its own namespaces.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct InsideFacts {
    pub hostname: String,
    /// getpid() inside: 1 once the box is its PID namespace's init.
    pub pid: u32,
    /// Whether the server's message queue can be opened from inside.
    pub queue_visible: Option<bool>,
    /// Network interfaces as getifaddrs(3) shows them inside.
    pub links: Vec<LinkState>,
    /// What `ps` inside would list: the pids under the box's /proc.
    pub processes: Vec<ProcessRow>,
    /// Files of /proc (and the hostname) as the box reads them.
    pub files: Vec<(String, String)>,
}

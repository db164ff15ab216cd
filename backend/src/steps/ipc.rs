//! `ipc`: unshare(CLONE_NEWIPC). System V IPC objects (shared memory,
//! semaphores, message queues) and POSIX message queues live in an IPC
//! namespace: the queue damda made on the host for this box is visible before
//! the step and gone after it.

use super::{unshare_early, BoxSpec, Phase, Step};
use crate::kernel::{Kernel, SysError};
use damda_protocol::{NsKind, StepId};
use nix::sched::CloneFlags;

pub struct Ipc;

impl Step for Ipc {
    fn id(&self) -> StepId {
        StepId::Ipc
    }

    fn separates(&self) -> &'static [NsKind] {
        &[NsKind::Ipc]
    }

    fn apply(&self, kernel: &dyn Kernel, _spec: &BoxSpec, phase: Phase) -> Result<(), SysError> {
        unshare_early(kernel, phase, CloneFlags::CLONE_NEWIPC)
    }

    fn commands(&self, _spec: &BoxSpec, pid: u32) -> Vec<String> {
        vec![
            "ipcmk -Q; ipcs -q             # on the host: a System V queue".to_owned(),
            "unshare -i /bin/sh            # inside the box shell".to_owned(),
            "ipcs -q                       # empty: a new IPC namespace".to_owned(),
            "cat /proc/sysvipc/msg".to_owned(),
            format!("nsenter -t {pid} -i ipcs -q   # from the host, in the box's IPC namespace"),
        ]
    }
}

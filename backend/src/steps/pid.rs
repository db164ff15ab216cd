//! `pid`: unshare(CLONE_NEWPID), then fork. The new namespace applies to the
//! caller's children only, so the box continues as the child: PID 1 inside,
//! another pid on the host (the NSpid line of /proc/PID/status). `ps` inside
//! still lists every host process, because /proc is still the host's — the
//! `mnt` step mounts one of the box's own.

use super::{unshare_early, BoxSpec, Phase, Step};
use crate::kernel::{Kernel, SysError};
use damda_protocol::{NsKind, StepId};
use nix::sched::CloneFlags;

pub struct Pid;

impl Step for Pid {
    fn id(&self) -> StepId {
        StepId::Pid
    }

    fn separates(&self) -> &'static [NsKind] {
        &[NsKind::Pid]
    }

    fn apply(&self, kernel: &dyn Kernel, _spec: &BoxSpec, phase: Phase) -> Result<(), SysError> {
        unshare_early(kernel, phase, CloneFlags::CLONE_NEWPID)?;
        match phase {
            Phase::Early => kernel.fork_into_child(),
            Phase::Late => Ok(()),
        }
    }

    fn commands(&self, _spec: &BoxSpec, pid: u32) -> Vec<String> {
        vec![
            "unshare -p -f /bin/sh   # inside the box shell: -f forks the new PID 1".to_owned(),
            "echo $$                 # 1".to_owned(),
            "ps                      # still every host process: /proc is the host's".to_owned(),
            format!("grep NSpid /proc/{pid}/status   # from the host: two pids"),
            format!("readlink /proc/{pid}/ns/pid /proc/self/ns/pid"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Call, RecordingKernel};

    #[test]
    fn unshares_then_forks() {
        let kernel = RecordingKernel::default();
        Pid.apply(&kernel, &super::super::test_spec(), Phase::Early)
            .unwrap();
        assert_eq!(
            *kernel.calls.borrow(),
            vec![Call::Unshare(CloneFlags::CLONE_NEWPID), Call::Fork]
        );
    }
}

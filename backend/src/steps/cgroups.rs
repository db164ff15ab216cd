//! `cgroups`: the box gets a cgroup of its own, with limits on memory, CPU,
//! processes (and I/O and devices where the host allows), and is moved into
//! it. The host side — mkdir, the limit files, cgroup.procs — is done by the
//! engine between the phases (the `cgroups` module). Late, the box unshares
//! its cgroup namespace once more: the namespace made at `cgroupns` is
//! rooted where the box stood then, so after the move /proc/self/cgroup
//! inside would read `/../damda-…`; a new one is rooted at the box's own
//! cgroup and reads `/` again.

use super::{BoxSpec, Phase, Step};
use crate::kernel::{Kernel, SysError};
use damda_protocol::{NsKind, StepId};
use nix::sched::CloneFlags;

pub struct Cgroups;

impl Step for Cgroups {
    fn id(&self) -> StepId {
        StepId::Cgroups
    }

    fn separates(&self) -> &'static [NsKind] {
        &[NsKind::Cgroup]
    }

    fn apply(&self, kernel: &dyn Kernel, _spec: &BoxSpec, phase: Phase) -> Result<(), SysError> {
        match phase {
            Phase::Early => Ok(()),
            Phase::Late => kernel.unshare(CloneFlags::CLONE_NEWCGROUP),
        }
    }

    fn commands(&self, _spec: &BoxSpec, pid: u32) -> Vec<String> {
        vec![
            format!("cat /proc/{pid}/cgroup          # from the host: the box's own cgroup"),
            "cat /proc/self/cgroup           # inside, before the re-root: /../damda-…".to_owned(),
            "unshare -C /bin/sh              # inside: a cgroup namespace rooted here".to_owned(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Call, RecordingKernel};

    #[test]
    fn host_work_early_re_root_late() {
        let kernel = RecordingKernel::default();
        let spec = super::super::test_spec();
        Cgroups.apply(&kernel, &spec, Phase::Early).unwrap();
        assert!(kernel.calls.borrow().is_empty());
        Cgroups.apply(&kernel, &spec, Phase::Late).unwrap();
        assert_eq!(
            *kernel.calls.borrow(),
            vec![Call::Unshare(CloneFlags::CLONE_NEWCGROUP)]
        );
    }
}

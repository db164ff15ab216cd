//! `cgroupns`: unshare(CLONE_NEWCGROUP). /proc/self/cgroup inside now reads
//! `/`: the namespace is rooted at the cgroup the box stood in at that
//! moment, hiding the path above it.

use super::{unshare_early, BoxSpec, Phase, Step};
use crate::kernel::{Kernel, SysError};
use damda_protocol::{NsKind, StepId};
use nix::sched::CloneFlags;

pub struct Cgroupns;

impl Step for Cgroupns {
    fn id(&self) -> StepId {
        StepId::Cgroupns
    }

    fn separates(&self) -> &'static [NsKind] {
        &[NsKind::Cgroup]
    }

    fn apply(&self, kernel: &dyn Kernel, _spec: &BoxSpec, phase: Phase) -> Result<(), SysError> {
        unshare_early(kernel, phase, CloneFlags::CLONE_NEWCGROUP)
    }

    fn commands(&self, _spec: &BoxSpec, pid: u32) -> Vec<String> {
        vec![
            "cat /proc/self/cgroup      # inside, before: the full path".to_owned(),
            "unshare -C /bin/sh         # inside the box shell".to_owned(),
            "cat /proc/self/cgroup      # now /".to_owned(),
            format!("cat /proc/{pid}/cgroup   # from the host: the real path"),
        ]
    }
}

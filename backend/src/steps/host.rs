//! `host`: nothing applied yet. The box is an ordinary process, and it
//! already lives in namespaces and cgroups — the init ones, shared with the
//! host — which is what this step lets the learner see.

use super::{BoxSpec, Phase, Step};
use crate::kernel::{Kernel, SysError};
use damda_protocol::{NsKind, StepId};

pub struct Host;

impl Step for Host {
    fn id(&self) -> StepId {
        StepId::Host
    }

    fn separates(&self) -> &'static [NsKind] {
        &[]
    }

    fn apply(&self, _kernel: &dyn Kernel, _spec: &BoxSpec, _phase: Phase) -> Result<(), SysError> {
        Ok(())
    }

    fn commands(&self, _spec: &BoxSpec, pid: u32) -> Vec<String> {
        vec![
            format!("ls -l /proc/{pid}/ns"),
            format!("cat /proc/{pid}/cgroup"),
            format!("lsns -p {pid}"),
            "ls -l /proc/self/ns   # your own shell: the same inodes".to_owned(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::RecordingKernel;

    #[test]
    fn host_makes_no_call() {
        let kernel = RecordingKernel::default();
        Host.apply(&kernel, &super::super::test_spec(), Phase::Early)
            .unwrap();
        assert!(kernel.calls.borrow().is_empty());
    }
}

//! `uts`: unshare(CLONE_NEWUTS), then sethostname. The box gets its own
//! copy of the names uname(2) reports (nodename, domainname); changing it
//! no longer changes the host's.

use super::{BoxSpec, Phase, Step};
use crate::kernel::{Kernel, SysError};
use damda_protocol::{NsKind, StepId};
use nix::sched::CloneFlags;

pub struct Uts;

impl Step for Uts {
    fn id(&self) -> StepId {
        StepId::Uts
    }

    fn separates(&self) -> &'static [NsKind] {
        &[NsKind::Uts]
    }

    fn apply(&self, kernel: &dyn Kernel, spec: &BoxSpec, phase: Phase) -> Result<(), SysError> {
        if phase == Phase::Late {
            return Ok(());
        }
        kernel.unshare(CloneFlags::CLONE_NEWUTS)?;
        kernel.sethostname(&spec.hostname)
    }

    fn commands(&self, spec: &BoxSpec, pid: u32) -> Vec<String> {
        vec![
            "unshare -u /bin/sh   # inside the chroot shell (busybox unshare)".to_owned(),
            format!("hostname {}", spec.hostname),
            "hostname             # the box's name".to_owned(),
            "exit; hostname       # the host kept its own".to_owned(),
            format!("readlink /proc/{pid}/ns/uts /proc/self/ns/uts"),
            format!("nsenter -t {pid} -u hostname"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Call, RecordingKernel};

    #[test]
    fn unshares_uts_then_names_the_box() {
        let kernel = RecordingKernel::default();
        let spec = super::super::test_spec();
        Uts.apply(&kernel, &spec, Phase::Early).unwrap();
        Uts.apply(&kernel, &spec, Phase::Late).unwrap();
        assert_eq!(
            *kernel.calls.borrow(),
            vec![
                Call::Unshare(CloneFlags::CLONE_NEWUTS),
                Call::Sethostname("damda-box".into()),
            ]
        );
        assert_eq!(Uts.separates(), &[NsKind::Uts]);
    }
}

//! `mnt`: unshare(CLONE_NEWNS), make every mount private so nothing the box
//! mounts propagates back to the host (most hosts mount / shared), then mount
//! a fresh proc at /proc: it shows the box's PID namespace, so `ps` inside now
//! lists only the box. The host's mount table is untouched.

use super::{BoxSpec, Phase, Step};
use crate::kernel::{Kernel, Mount, SysError};
use damda_protocol::{NsKind, StepId};
use nix::mount::MsFlags;
use nix::sched::CloneFlags;

pub struct Mnt;

impl Step for Mnt {
    fn id(&self) -> StepId {
        StepId::Mnt
    }

    fn separates(&self) -> &'static [NsKind] {
        &[NsKind::Mnt]
    }

    fn apply(&self, kernel: &dyn Kernel, _spec: &BoxSpec, phase: Phase) -> Result<(), SysError> {
        match phase {
            Phase::Early => {
                kernel.unshare(CloneFlags::CLONE_NEWNS)?;
                kernel.mount(&Mount {
                    source: None,
                    target: "/".into(),
                    fstype: None,
                    flags: MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    data: None,
                })
            }
            // After the PID namespace's fork, so proc shows the box's pids.
            Phase::Late => kernel.mount(&Mount {
                source: Some("proc".into()),
                target: "/proc".into(),
                fstype: Some("proc"),
                flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                data: None,
            }),
        }
    }

    fn commands(&self, _spec: &BoxSpec, pid: u32) -> Vec<String> {
        vec![
            "unshare -m /bin/sh          # inside the box shell".to_owned(),
            "mount --make-rprivate /".to_owned(),
            "mount -t proc proc /proc".to_owned(),
            "ps                          # only the box now".to_owned(),
            format!("cat /proc/{pid}/mountinfo   # from the host: the box's mount table"),
            "cat /proc/self/mountinfo    # the host's: no new proc mount".to_owned(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Call, RecordingKernel};

    #[test]
    fn private_root_early_proc_late() {
        let kernel = RecordingKernel::default();
        let spec = super::super::test_spec();
        Mnt.apply(&kernel, &spec, Phase::Early).unwrap();
        assert_eq!(kernel.calls.borrow().len(), 2);
        Mnt.apply(&kernel, &spec, Phase::Late).unwrap();
        let calls = kernel.calls.borrow();
        assert_eq!(calls[0], Call::Unshare(CloneFlags::CLONE_NEWNS));
        assert!(matches!(&calls[1], Call::Mount(m) if m.flags.contains(MsFlags::MS_PRIVATE)));
        assert!(matches!(&calls[2], Call::Mount(m) if m.fstype == Some("proc")));
    }
}

//! `chroot`: chroot(2) into the box's copy of the rootfs, then chdir("/") so
//! the working directory is inside it too. Only the root directory changes:
//! PIDs, network, hostname and users stay shared, and a root process can
//! still climb out — chroot is not isolation.
//!
//! The copy is first bind-mounted onto itself, so the box's `/` is the root
//! of a mount: the `mnt` step can then make it private (mount(2) refuses
//! MS_PRIVATE on a directory that is not a mount's root, with EINVAL). The
//! host's /proc is bound inside, as chroot users do, so tools in the box work
//! and show the host's processes until the `mnt` step mounts the box's own.

use super::{BoxSpec, Phase, Step};
use crate::kernel::{Kernel, Mount, SysError};
use damda_protocol::{NsKind, StepId};
use nix::mount::MsFlags;
use std::path::Path;

pub struct Chroot;

impl Step for Chroot {
    fn id(&self) -> StepId {
        StepId::Chroot
    }

    fn separates(&self) -> &'static [NsKind] {
        &[]
    }

    fn apply(&self, kernel: &dyn Kernel, spec: &BoxSpec, phase: Phase) -> Result<(), SysError> {
        // A box built for the `overlay` step enters its root by pivot_root
        // there; a chroot now would make that refuse.
        if phase == Phase::Late || spec.overlay.is_some() {
            return Ok(());
        }
        kernel.mount(&Mount {
            source: Some(spec.root.clone()),
            target: spec.root.clone(),
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
        })?;
        kernel.mount(&Mount {
            source: Some("/proc".into()),
            target: spec.root.join("proc"),
            fstype: None,
            flags: MsFlags::MS_BIND | MsFlags::MS_REC,
            data: None,
        })?;
        // chdir first, so the cwd cannot be left outside the new root
        // (the classic chroot mistake, and CVE-2024-21626's lesson).
        kernel.chdir(&spec.root)?;
        kernel.chroot(&spec.root)?;
        kernel.chdir(Path::new("/"))
    }

    fn commands(&self, spec: &BoxSpec, pid: u32) -> Vec<String> {
        let root = spec.root.display();
        vec![
            format!("mount --bind {root} {root}"),
            format!("mount --rbind /proc {root}/proc"),
            format!("chroot {root} /bin/sh"),
            "ls /            # the box's root: only busybox".to_owned(),
            format!("readlink /proc/{pid}/root   # from the host"),
            format!("lsns -p {pid}   # no namespace changed"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Call, RecordingKernel};
    use nix::errno::Errno;

    #[test]
    fn enters_the_box_root_and_its_root() {
        let kernel = RecordingKernel::default();
        let spec = super::super::test_spec();
        Chroot.apply(&kernel, &spec, Phase::Early).unwrap();
        let calls = kernel.calls.borrow();
        assert!(
            matches!(&calls[0], Call::Mount(m) if m.flags == MsFlags::MS_BIND && m.target == spec.root)
        );
        assert!(matches!(&calls[1], Call::Mount(m) if m.target == spec.root.join("proc")));
        assert_eq!(
            calls[2..],
            [
                Call::Chdir(spec.root.clone()),
                Call::Chroot(spec.root.clone()),
                Call::Chdir("/".into()),
            ]
        );
    }

    #[test]
    fn a_refused_chroot_stops_the_step() {
        let kernel = RecordingKernel::failing("chroot", Errno::EPERM);
        let err = Chroot
            .apply(&kernel, &super::super::test_spec(), Phase::Early)
            .unwrap_err();
        assert_eq!(err.errno_name, "EPERM");
        assert_eq!(kernel.calls.borrow().len(), 4);
    }
}

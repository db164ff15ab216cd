//! `chroot`: chroot(2) into the unpacked rootfs, then chdir("/") so the
//! working directory is inside it too. Only the root directory changes:
//! PIDs, network, hostname and users stay shared, and a root process can
//! still climb out — chroot is not isolation.

use super::{BoxSpec, Step};
use crate::kernel::{Kernel, SysError};
use damda_protocol::{NsKind, StepId};
use std::path::Path;

pub struct Chroot;

impl Step for Chroot {
    fn id(&self) -> StepId {
        StepId::Chroot
    }

    fn separates(&self) -> &'static [NsKind] {
        &[]
    }

    fn apply(&self, kernel: &dyn Kernel, spec: &BoxSpec) -> Result<(), SysError> {
        // chdir first, so the cwd cannot be left outside the new root
        // (the classic chroot mistake, and CVE-2024-21626's lesson).
        kernel.chdir(&spec.rootfs)?;
        kernel.chroot(&spec.rootfs)?;
        kernel.chdir(Path::new("/"))
    }

    fn commands(&self, spec: &BoxSpec, pid: u32) -> Vec<String> {
        let rootfs = spec.rootfs.display();
        vec![
            format!("chroot {rootfs} /bin/sh"),
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

    fn spec() -> BoxSpec {
        BoxSpec {
            rootfs: "/data/rootfs".into(),
            hostname: "damda-box".into(),
        }
    }

    #[test]
    fn enters_the_rootfs_and_its_root() {
        let kernel = RecordingKernel::default();
        Chroot.apply(&kernel, &spec()).unwrap();
        assert_eq!(
            *kernel.calls.borrow(),
            vec![
                Call::Chdir("/data/rootfs".into()),
                Call::Chroot("/data/rootfs".into()),
                Call::Chdir("/".into()),
            ]
        );
    }

    #[test]
    fn a_refused_chroot_stops_the_step() {
        let kernel = RecordingKernel::failing("chroot", Errno::EPERM);
        let err = Chroot.apply(&kernel, &spec()).unwrap_err();
        assert_eq!(err.errno_name, "EPERM");
        assert_eq!(kernel.calls.borrow().len(), 2);
    }
}

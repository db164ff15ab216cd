//! `user`: a user namespace. unshare(CLONE_NEWUSER), then — once the host
//! has written the uid and gid maps from outside — become root inside:
//! setgroups, setresgid(0), setresuid(0). Root in the box is an unprivileged
//! uid on the host, and its capabilities count only for what the box's user
//! namespace owns.
//!
//! The kernel refuses this step in the lesson order (EPERM inside a chroot),
//! and namespaces made before it would belong to the host's user namespace,
//! so the engine rebuilds the box with the user namespace first.

use super::{BoxSpec, Phase, Step};
use crate::kernel::{Kernel, SysError};
use damda_protocol::{NsKind, StepId};
use nix::sched::CloneFlags;

pub struct User;

impl Step for User {
    fn id(&self) -> StepId {
        StepId::User
    }

    fn separates(&self) -> &'static [NsKind] {
        &[NsKind::User]
    }

    fn apply(&self, kernel: &dyn Kernel, _spec: &BoxSpec, phase: Phase) -> Result<(), SysError> {
        match phase {
            Phase::Early => kernel.unshare(CloneFlags::CLONE_NEWUSER),
            // The maps are written between the phases, by the server.
            Phase::Late => {
                kernel.setgroups(&[])?;
                kernel.setresgid(0)?;
                kernel.setresuid(0)
            }
        }
    }

    fn commands(&self, spec: &BoxSpec, pid: u32) -> Vec<String> {
        let map = spec.ids.map_line();
        let map = map.trim_end();
        let outside = spec.ids.outside;
        vec![
            "unshare -U sleep 600 & P=$!    # from the host (inside a chroot: EPERM)".to_owned(),
            format!("echo '{map}' > /proc/$P/uid_map; echo '{map}' > /proc/$P/gid_map"),
            "nsenter -t $P -U -S 0 -G 0 /bin/sh   # become root inside it".to_owned(),
            "id; grep Cap /proc/self/status      # uid 0, every capability — here only".to_owned(),
            format!(
                "grep -E 'Uid|Cap' /proc/{pid}/status   # the box from the host: uid {outside}"
            ),
            format!("cat /proc/{pid}/uid_map"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Call, RecordingKernel};

    #[test]
    fn unshares_early_becomes_root_late() {
        let kernel = RecordingKernel::default();
        let spec = super::super::test_spec();
        User.apply(&kernel, &spec, Phase::Early).unwrap();
        User.apply(&kernel, &spec, Phase::Late).unwrap();
        assert_eq!(
            *kernel.calls.borrow(),
            vec![
                Call::Unshare(CloneFlags::CLONE_NEWUSER),
                Call::Setgroups(vec![]),
                Call::Setresgid(0),
                Call::Setresuid(0),
            ]
        );
        assert_eq!(spec.ids.map_line(), "0 100000 65536\n");
    }
}

//! `net`: unshare(CLONE_NEWNET). A new network namespace has only `lo`, and
//! it is down: no addresses, no routes, no sockets. Ports are per namespace,
//! so the box could bind port 80 while the host uses it too (unlike
//! `docker run --net host`).

use super::{unshare_early, BoxSpec, Phase, Step};
use crate::kernel::{Kernel, SysError};
use damda_protocol::{NsKind, StepId};
use nix::sched::CloneFlags;

pub struct Net;

impl Step for Net {
    fn id(&self) -> StepId {
        StepId::Net
    }

    fn separates(&self) -> &'static [NsKind] {
        &[NsKind::Net]
    }

    fn apply(&self, kernel: &dyn Kernel, _spec: &BoxSpec, phase: Phase) -> Result<(), SysError> {
        unshare_early(kernel, phase, CloneFlags::CLONE_NEWNET)
    }

    fn commands(&self, _spec: &BoxSpec, pid: u32) -> Vec<String> {
        vec![
            "unshare -n /bin/sh            # inside the box shell".to_owned(),
            "ip link                       # only lo, state DOWN".to_owned(),
            "cat /proc/net/dev; ip route   # no traffic, no routes".to_owned(),
            format!("nsenter -t {pid} -n ip link   # from the host"),
            format!("cat /proc/{pid}/net/dev"),
        ]
    }
}

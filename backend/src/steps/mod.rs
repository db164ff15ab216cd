//! The lesson's steps, one file per kernel primitive, each the same shape:
//! what it applies (through the [`Kernel`] door), which namespaces it
//! separates, the shell commands that redo it by hand, and its lesson id.
//!
//! The order is data: [`ORDER`] lists the steps this build can apply, in the
//! lesson order of DESIGN.md. Where the kernel refuses that order, the engine
//! rebuilds the box in [`kernel_order`] instead.

mod cgroupns;
mod cgroups;
mod chroot;
mod host;
mod ipc;
mod mnt;
mod net;
mod network;
mod overlay;
mod pid;
pub mod run;
mod user;
mod uts;

use crate::kernel::{Kernel, SysError};
use damda_protocol::{NsKind, StepId};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use overlay::{OverlayPlan, Volume, DEVICES};

/// The uid/gid range a user namespace maps: root inside is `outside` on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub outside: u32,
    pub count: u32,
}

impl IdMap {
    /// The line written to /proc/PID/uid_map and gid_map.
    pub fn map_line(&self) -> String {
        format!("0 {} {}\n", self.outside, self.count)
    }
}

/// What a box is built from; the same for every step of one box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoxSpec {
    /// The box's own copy of the rootfs, which the `chroot` step enters.
    pub root: PathBuf,
    /// The hostname the `uts` step sets.
    pub hostname: String,
    /// The ids the `user` step maps.
    pub ids: IdMap,
    /// The box's place on the bridge, once the `network` step's host side
    /// has made it.
    #[serde(default)]
    pub network: Option<crate::network::BoxNetwork>,
    /// The image's layers for the `overlay` step. A box built with them from
    /// the start has no chroot: the `chroot` step leaves its root alone.
    #[serde(default)]
    pub overlay: Option<OverlayPlan>,
    /// What the `run` step starts: the image's Entrypoint and Cmd.
    #[serde(default)]
    pub command: Vec<String>,
}

/// Steps whose work the kernel needs split: `Early` runs where the step
/// stands in the build, `Late` may be moved later (mount /proc after the PID
/// namespace's fork) or earlier steps placed between (the id maps written
/// from outside between unshare(CLONE_NEWUSER) and becoming root).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Early,
    Late,
}

pub trait Step: Sync {
    fn id(&self) -> StepId;

    /// The lesson shown with this step: lessons/{ko,en}/<id>.md.
    fn lesson(&self) -> &'static str {
        self.id().as_str()
    }

    /// The namespace types this step gives the box a namespace of its own.
    fn separates(&self) -> &'static [NsKind];

    /// Applies one phase of the step to the calling process. Runs in the box
    /// helper only. Steps that are not split do everything in `Early`.
    fn apply(&self, kernel: &dyn Kernel, spec: &BoxSpec, phase: Phase) -> Result<(), SysError>;

    /// Shell commands that redo this step by hand; `pid` is the box's host pid,
    /// for commands run from the host side.
    fn commands(&self, spec: &BoxSpec, pid: u32) -> Vec<String>;
}

/// The steps this build applies, in lesson order.
pub static ORDER: &[&dyn Step] = &[
    &host::Host,
    &chroot::Chroot,
    &uts::Uts,
    &pid::Pid,
    &mnt::Mnt,
    &ipc::Ipc,
    &net::Net,
    &user::User,
    &cgroupns::Cgroupns,
    &cgroups::Cgroups,
    &network::Network,
    &overlay::Overlay,
    &run::Run,
];

/// The step with this id, if this build can apply it.
pub fn find(id: StepId) -> Option<&'static dyn Step> {
    ORDER.iter().copied().find(|step| step.id() == id)
}

pub fn is_available(id: StepId) -> bool {
    find(id).is_some()
}

/// The step after `id` in the lesson order, if it is available.
pub fn next_after(id: StepId) -> Option<StepId> {
    let position = ORDER.iter().position(|step| step.id() == id)?;
    ORDER.get(position + 1).map(|step| step.id())
}

/// The steps from `host` up to and including `to`.
pub fn path_to(to: StepId) -> Vec<StepId> {
    ORDER
        .iter()
        .map(|step| step.id())
        .take_while(|id| *id <= to)
        .collect()
}

/// The order a box holding `steps` is built in when the lesson order cannot
/// be followed. A user namespace comes first, as runc does: namespaces made
/// before it belong to the host's user namespace, where the box's root has no
/// power, and unshare(CLONE_NEWUSER) is refused inside a chroot (EPERM). The
/// mount namespace follows it, so the root can be made private and the rootfs
/// bind-mounted inside the box's own mount table.
pub fn kernel_order(steps: &[StepId]) -> Vec<(StepId, Phase)> {
    let user_first = steps.contains(&StepId::User);
    let mut plan = Vec::new();
    if user_first {
        plan.push((StepId::User, Phase::Early));
        plan.push((StepId::User, Phase::Late));
        if steps.contains(&StepId::Mnt) {
            plan.push((StepId::Mnt, Phase::Early));
        }
    }
    for step in steps {
        match step {
            StepId::User if user_first => {}
            StepId::Mnt if user_first => plan.push((StepId::Mnt, Phase::Late)),
            other => {
                plan.push((*other, Phase::Early));
                plan.push((*other, Phase::Late));
            }
        }
    }
    plan
}

/// The lesson-order plan: each step whole, in turn.
pub fn lesson_order(steps: &[StepId]) -> Vec<(StepId, Phase)> {
    steps
        .iter()
        .flat_map(|step| [(*step, Phase::Early), (*step, Phase::Late)])
        .collect()
}

#[cfg(test)]
pub(crate) fn test_spec() -> BoxSpec {
    BoxSpec {
        root: "/data/boxes/damda-1/root".into(),
        hostname: "damda-box".into(),
        ids: IdMap {
            outside: 100000,
            count: 65536,
        },
        network: None,
        overlay: None,
        command: Vec::new(),
    }
}

/// The whole of a step that only unshares: done in the early phase.
fn unshare_early(
    kernel: &dyn Kernel,
    phase: Phase,
    flags: nix::sched::CloneFlags,
) -> Result<(), SysError> {
    match phase {
        Phase::Early => kernel.unshare(flags),
        Phase::Late => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::RecordingKernel;

    #[test]
    fn order_follows_the_lesson_order() {
        let ids: Vec<StepId> = ORDER.iter().map(|s| s.id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert_eq!(ids[0], StepId::Host);
    }

    #[test]
    fn paths_and_neighbours() {
        assert_eq!(
            path_to(StepId::Uts),
            vec![StepId::Host, StepId::Chroot, StepId::Uts]
        );
        assert_eq!(next_after(StepId::Host), Some(StepId::Chroot));
        assert!(is_available(StepId::Cgroups));
        assert!(is_available(StepId::Run));
        assert_eq!(next_after(StepId::Run), None);
    }

    #[test]
    fn every_step_offers_commands() {
        for step in ORDER {
            assert!(
                !step.commands(&test_spec(), 4242).is_empty(),
                "{}",
                step.id()
            );
        }
    }

    #[test]
    fn without_user_the_kernel_order_is_the_lesson_order() {
        let steps = path_to(StepId::Net);
        assert_eq!(kernel_order(&steps), lesson_order(&steps));
    }

    #[test]
    fn user_comes_first_then_the_mount_namespace() {
        let plan = kernel_order(&path_to(StepId::Cgroupns));
        assert_eq!(
            &plan[..3],
            &[
                (StepId::User, Phase::Early),
                (StepId::User, Phase::Late),
                (StepId::Mnt, Phase::Early)
            ]
        );
        // /proc is mounted after the PID namespace's fork.
        let fork = plan
            .iter()
            .position(|p| *p == (StepId::Pid, Phase::Early))
            .unwrap();
        let proc_mount = plan
            .iter()
            .position(|p| *p == (StepId::Mnt, Phase::Late))
            .unwrap();
        assert!(fork < proc_mount);
        assert_eq!(plan.iter().filter(|(s, _)| *s == StepId::User).count(), 2);
    }

    #[test]
    fn whole_walk_unshares_every_namespace_once() {
        use crate::kernel::Call;
        let kernel = RecordingKernel::default();
        let spec = test_spec();
        for (step, phase) in kernel_order(&path_to(StepId::Cgroupns)) {
            find(step).unwrap().apply(&kernel, &spec, phase).unwrap();
        }
        let unshares: Vec<_> = kernel
            .calls
            .borrow()
            .iter()
            .filter_map(|c| match c {
                Call::Unshare(flags) => Some(*flags),
                _ => None,
            })
            .collect();
        assert_eq!(unshares.len(), 7, "{unshares:?}");
        // `cgroups` re-roots the cgroup namespace after the move.
        find(StepId::Cgroups)
            .unwrap()
            .apply(&kernel, &spec, Phase::Late)
            .unwrap();
    }
}

//! The lesson's steps, one file per kernel primitive, each the same shape:
//! what it applies (through the [`Kernel`] door), which namespaces it
//! separates, the shell commands that redo it by hand, and its lesson id.
//!
//! The order is data: [`ORDER`] lists the steps this build can apply, in the
//! lesson order of DESIGN.md. Steps not listed are shown on the page as
//! coming, and `goto` refuses them.

mod chroot;
mod host;
mod uts;

use crate::kernel::{Kernel, SysError};
use damda_protocol::{NsKind, StepId};
use std::path::PathBuf;

/// What a box is built from; the same for every step of one box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxSpec {
    /// The unpacked root filesystem the `chroot` step enters.
    pub rootfs: PathBuf,
    /// The hostname the `uts` step sets.
    pub hostname: String,
}

pub trait Step: Sync {
    fn id(&self) -> StepId;

    /// The lesson shown with this step: lessons/{ko,en}/<id>.md.
    fn lesson(&self) -> &'static str {
        self.id().as_str()
    }

    /// The namespace types this step gives the box a namespace of its own.
    fn separates(&self) -> &'static [NsKind];

    /// Applies the step to the calling process. Runs in the box helper only.
    fn apply(&self, kernel: &dyn Kernel, spec: &BoxSpec) -> Result<(), SysError>;

    /// Shell commands that redo this step by hand; `pid` is the box's host pid,
    /// for commands run from the host side.
    fn commands(&self, spec: &BoxSpec, pid: u32) -> Vec<String>;
}

/// The steps this build applies, in lesson order.
pub static ORDER: &[&dyn Step] = &[&host::Host, &chroot::Chroot, &uts::Uts];

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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(is_available(StepId::Uts));
        assert!(!is_available(StepId::Run));
    }

    #[test]
    fn every_step_offers_commands_naming_the_box() {
        let spec = BoxSpec {
            rootfs: "/data/rootfs".into(),
            hostname: "damda-box".into(),
        };
        for step in ORDER {
            let commands = step.commands(&spec, 4242);
            assert!(!commands.is_empty(), "{}", step.id());
        }
    }
}

//! `overlay`: the box's root becomes an overlay of the image's read-only
//! layers under a writable upper directory of its own — what Docker's
//! overlay2 driver mounts — and pivot_root makes it the mount namespace's
//! root, the old root detached. Unlike chroot, nothing of the host's tree is
//! left to climb back to.
//!
//! The box's root mounts it itself, in its own user and mount namespaces
//! (overlay allows that since Linux 5.11; `userxattr` keeps overlay's
//! metadata in user.* xattrs, the only ones it may write). A chrooted box
//! cannot name the host's layer directories, and pivot_root refuses a root
//! that came from chroot, so the engine rebuilds the box without its chroot:
//! the `chroot` step then leaves the root alone and this step enters it.

use super::{BoxSpec, Phase, Step};
use crate::kernel::{Kernel, Mount, SysError};
use damda_protocol::{NsKind, StepId};
use nix::errno::Errno;
use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Where the box's overlay comes from and goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlayPlan {
    /// The image's name, as `damda history` takes it.
    pub image: String,
    /// The image's unpacked layers, bottom first.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// The mount point, which becomes `/`.
    pub merged: PathBuf,
    /// Host directories bound into the box (`docker run -v HOST:BOX`).
    #[serde(default)]
    pub volumes: Vec<Volume>,
}

/// A host directory bound into the box: its data outlives the box.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub host: PathBuf,
    /// Where the box sees it: an absolute path without `..`.
    pub target: PathBuf,
}

impl std::str::FromStr for Volume {
    type Err = String;

    /// `HOST:BOX`, both absolute, neither with `..`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (host, target) = text
            .split_once(':')
            .ok_or_else(|| format!("{text}: expected HOST:BOX, as docker run -v"))?;
        let (host, target) = (PathBuf::from(host), PathBuf::from(target));
        for path in [&host, &target] {
            let climbs = path
                .components()
                .any(|c| c == std::path::Component::ParentDir);
            if !path.is_absolute() || climbs || path == Path::new("/") {
                return Err(format!(
                    "{text}: both sides must be absolute paths below / without `..`"
                ));
            }
        }
        Ok(Volume { host, target })
    }
}

impl OverlayPlan {
    /// `path` of the box's root, under the mount point.
    pub fn inside(&self, path: &Path) -> PathBuf {
        self.merged.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// What damda itself made in the upper directory, not the box: /dev,
    /// which holds only the bound devices' mount points, and the volumes'
    /// mount points (a volume is the host's). The box's changes and a
    /// commit leave them out.
    pub fn own_entries(&self) -> Vec<String> {
        std::iter::once("/dev".to_owned())
            .chain(self.volumes.iter().map(|v| v.target.display().to_string()))
            .collect()
    }

    /// overlay's options: lowerdir lists the top layer first.
    pub fn options(&self) -> String {
        let lowers: Vec<String> = self
            .lowers
            .iter()
            .rev()
            .map(|p| p.display().to_string())
            .collect();
        format!(
            "lowerdir={},upperdir={},workdir={},userxattr",
            lowers.join(":"),
            self.upper.display(),
            self.work.display()
        )
    }
}

/// Device nodes bound in from the host: the box's root may not make them.
pub const DEVICES: [&str; 2] = ["/dev/null", "/dev/zero"];

pub struct Overlay;

impl Step for Overlay {
    fn id(&self) -> StepId {
        StepId::Overlay
    }

    fn separates(&self) -> &'static [NsKind] {
        &[]
    }

    fn apply(&self, kernel: &dyn Kernel, spec: &BoxSpec, phase: Phase) -> Result<(), SysError> {
        if phase == Phase::Late {
            return Ok(());
        }
        let plan = spec.overlay.as_ref().ok_or_else(|| {
            SysError::new(
                "overlay: no image layers were prepared for the box",
                Errno::ENOENT,
            )
        })?;
        let merged = &plan.merged;
        kernel.mount(&Mount {
            source: Some("overlay".into()),
            target: merged.clone(),
            fstype: Some("overlay"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: Some(plan.options()),
        })?;
        kernel.mount(&Mount {
            source: Some("proc".into()),
            target: merged.join("proc"),
            fstype: Some("proc"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            data: None,
        })?;
        for device in DEVICES {
            kernel.mount(&Mount {
                source: Some(device.into()),
                target: plan.inside(Path::new(device)),
                fstype: None,
                flags: MsFlags::MS_BIND,
                data: None,
            })?;
        }
        for volume in &plan.volumes {
            kernel.mount(&Mount {
                source: Some(volume.host.clone()),
                target: plan.inside(&volume.target),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REC,
                data: None,
            })?;
        }
        // runc's way: no put_old directory; the old root ends up stacked
        // under the new one at "/", and is detached from there.
        kernel.chdir(merged)?;
        kernel.pivot_root(Path::new("."), Path::new("."))?;
        kernel.detach_mount(Path::new("."))?;
        kernel.chdir(Path::new("/"))
    }

    fn commands(&self, spec: &BoxSpec, pid: u32) -> Vec<String> {
        let Some(plan) = &spec.overlay else {
            return vec![history_command(crate::image::DEFAULT_IMAGE)];
        };
        let merged = plan.merged.display();
        let volumes = plan.volumes.iter().map(|v| {
            format!(
                "mount --rbind {} {}   # docker run -v {}:{}",
                v.host.display(),
                plan.inside(&v.target).display(),
                v.host.display(),
                v.target.display()
            )
        });
        let mut commands = vec![
            history_command(&plan.image),
            format!("mount -t overlay overlay -o {} {merged}", plan.options()),
            format!("mount -t proc proc {merged}/proc"),
        ];
        commands.extend(DEVICES.map(|device| {
            format!(
                "mount --bind {device} {}",
                plan.inside(Path::new(device)).display()
            )
        }));
        commands.extend(volumes);
        commands.extend([
            format!("cd {merged} && pivot_root . . && umount -l .   # the old root, detached"),
            format!("grep ' / / ' /proc/{pid}/mountinfo   # from the host: the box's / is overlay"),
            format!("ls -l {}   # what the box changed", plan.upper.display()),
        ]);
        commands
    }
}

fn history_command(image: &str) -> String {
    format!("damda history {image}   # the image's layers")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Call, RecordingKernel};

    fn plan() -> OverlayPlan {
        OverlayPlan {
            image: "example.com/web:1".into(),
            lowers: vec!["/l/0".into(), "/l/1".into(), "/l/2".into()],
            upper: "/b/upper".into(),
            work: "/b/work".into(),
            merged: "/b/merged".into(),
            volumes: vec!["/srv/shared:/data".parse().unwrap()],
        }
    }

    #[test]
    fn volumes_are_absolute_on_both_sides() {
        let volume: Volume = "/srv/a:/data".parse().unwrap();
        assert_eq!(
            plan().inside(&volume.target),
            PathBuf::from("/b/merged/data")
        );
        for bad in [
            "/srv/a",
            "srv/a:/data",
            "/srv/a:data",
            "/srv/../etc:/data",
            "/srv/a:/",
            "/:/data",
        ] {
            assert!(bad.parse::<Volume>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lowerdir_lists_the_top_layer_first() {
        assert_eq!(
            plan().options(),
            "lowerdir=/l/2:/l/1:/l/0,upperdir=/b/upper,workdir=/b/work,userxattr"
        );
    }

    #[test]
    fn mounts_then_pivots_and_detaches_the_old_root() {
        let kernel = RecordingKernel::default();
        let mut spec = super::super::test_spec();
        assert!(
            Overlay.apply(&kernel, &spec, Phase::Early).is_err(),
            "no plan"
        );
        spec.overlay = Some(plan());
        Overlay.apply(&kernel, &spec, Phase::Early).unwrap();
        let calls = kernel.calls.borrow();
        assert!(matches!(&calls[0], Call::Mount(m) if m.fstype == Some("overlay")));
        let pivot = calls
            .iter()
            .position(|c| matches!(c, Call::PivotRoot(..)))
            .expect("pivot_root");
        assert_eq!(calls[pivot + 1], Call::DetachMount(".".into()));
        assert!(
            calls
                .iter()
                .any(|c| matches!(c, Call::Mount(m) if m.target == Path::new("/b/merged/data"))),
            "the volume is bound in"
        );
        assert_eq!(*calls.last().unwrap(), Call::Chdir("/".into()));
    }

    #[test]
    fn commands_name_the_boxs_image_and_bind_every_device() {
        let mut spec = super::super::test_spec();
        let before = Overlay.commands(&spec, 42).join("\n");
        assert!(before.contains("damda history damda.local/busybox-httpd:latest"));
        spec.overlay = Some(plan());
        let text = Overlay.commands(&spec, 42).join("\n");
        for expected in [
            "damda history example.com/web:1",
            "mount --bind /dev/null /b/merged/dev/null",
            "mount --bind /dev/zero /b/merged/dev/zero",
            "mount --rbind /srv/shared /b/merged/data",
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
    }
}

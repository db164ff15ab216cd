//! Which cgroup filesystems are mounted, and where the server itself sits in
//! them: parsed from /proc/self/mountinfo and /proc/self/cgroup (procfs-core
//! splits the lines; the matching of the two is ours).

use super::CgroupError;
use procfs_core::process::{MountInfo, MountInfos};
use procfs_core::{FromRead, ProcessCGroups};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The cgroup version whose controllers damda uses.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    pub fn other(self) -> Self {
        match self {
            CgroupVersion::V1 => CgroupVersion::V2,
            CgroupVersion::V2 => CgroupVersion::V1,
        }
    }
}

impl std::fmt::Display for CgroupVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupVersion::V1 => "cgroup v1",
            CgroupVersion::V2 => "cgroup v2",
        })
    }
}

/// A v1 hierarchy with controllers bound to it, and the server's place in it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// The controllers bound to it (`memory`; `cpu` and `cpuacct` together on
    /// many distributions).
    pub controllers: Vec<String>,
    pub mount_point: PathBuf,
    /// The group mounted there: `/` on a host, a container's own group when
    /// the hierarchy was bind-mounted into a container.
    pub mount_root: String,
    /// The server's own group in this hierarchy (from /proc/self/cgroup).
    pub own: String,
}

/// The cgroup2 (unified) mount and the server's place in it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Unified {
    pub mount_point: PathBuf,
    pub mount_root: String,
    /// The server's own group (the `0::` line of /proc/self/cgroup).
    pub own: String,
}

/// What is mounted where.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Layout {
    /// Only v1 hierarchies.
    V1 { hierarchies: Vec<Hierarchy> },
    /// Only cgroup2 (most current distributions).
    V2 { unified: Unified },
    /// v1 hierarchies hold the controllers; a cgroup2 tree is mounted beside
    /// them (systemd's hybrid mode, and this project's CI machines). damda
    /// uses the v1 hierarchies.
    Hybrid {
        hierarchies: Vec<Hierarchy>,
        unified: Unified,
    },
}

/// The directory of group `own` in a filesystem that mounts group
/// `mount_root` at `mount_point`.
fn dir_of(mount_point: &Path, mount_root: &str, own: &str) -> Option<PathBuf> {
    let rest = if mount_root == "/" {
        own
    } else {
        let rest = own.strip_prefix(mount_root)?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        rest
    };
    let rest = rest.trim_start_matches('/');
    if rest.split('/').any(|part| part == "..") {
        return None;
    }
    Some(if rest.is_empty() {
        mount_point.to_owned()
    } else {
        mount_point.join(rest)
    })
}

fn outside_mount(own: &str, root: &str, mount_point: &Path) -> CgroupError {
    CgroupError::Placement(format!(
        "the server's group {own} is not inside the group {root} mounted at {} \
         (a cgroup namespace entered after the mount shows paths like /..)",
        mount_point.display()
    ))
}

impl Hierarchy {
    /// The server's own group directory in this hierarchy.
    pub fn own_dir(&self) -> Result<PathBuf, CgroupError> {
        dir_of(&self.mount_point, &self.mount_root, &self.own)
            .ok_or_else(|| outside_mount(&self.own, &self.mount_root, &self.mount_point))
    }

    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

impl Unified {
    /// The server's own group directory.
    pub fn own_dir(&self) -> Result<PathBuf, CgroupError> {
        dir_of(&self.mount_point, &self.mount_root, &self.own)
            .ok_or_else(|| outside_mount(&self.own, &self.mount_root, &self.mount_point))
    }
}

/// Whether a cgroup (v1) mount's superblock options name every controller of
/// a /proc/self/cgroup line (`name=systemd` included).
fn mount_binds(mount: &MountInfo, controllers: &[String]) -> bool {
    controllers.iter().all(|c| match c.split_once('=') {
        Some((key, value)) => {
            mount.super_options.get(key).and_then(|v| v.as_deref()) == Some(value)
        }
        None => mount.super_options.contains_key(c.as_str()),
    })
}

/// The mount among `mounts` that shows the group `own` (the first whose root
/// contains it), or the first at all.
fn pick<'a>(mounts: &[&'a MountInfo], own: &str) -> Option<&'a MountInfo> {
    mounts
        .iter()
        .find(|m| dir_of(&m.mount_point, &m.root, own).is_some())
        .or(mounts.first())
        .copied()
}

impl Layout {
    /// Reads /proc/self/mountinfo and /proc/self/cgroup.
    pub fn detect() -> Result<Layout, CgroupError> {
        let mountinfo = super::read_file(Path::new("/proc/self/mountinfo"))?;
        let cgroup = super::read_file(Path::new("/proc/self/cgroup"))?;
        Layout::parse(&mountinfo, &cgroup)
    }

    /// The layout described by the text of a mountinfo and a /proc/PID/cgroup
    /// file of the same process.
    pub fn parse(mountinfo: &str, self_cgroup: &str) -> Result<Layout, CgroupError> {
        let mounts =
            MountInfos::from_read(mountinfo.as_bytes()).map_err(|e| CgroupError::Parse {
                path: "/proc/self/mountinfo".into(),
                reason: e.to_string(),
            })?;
        let groups =
            ProcessCGroups::from_read(self_cgroup.as_bytes()).map_err(|e| CgroupError::Parse {
                path: "/proc/self/cgroup".into(),
                reason: e.to_string(),
            })?;
        let v1_mounts: Vec<&MountInfo> = mounts.iter().filter(|m| m.fs_type == "cgroup").collect();
        let v2_mounts: Vec<&MountInfo> = mounts.iter().filter(|m| m.fs_type == "cgroup2").collect();

        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        let mut unified = None;
        for group in &groups {
            if group.hierarchy == 0 {
                unified = pick(&v2_mounts, &group.pathname).map(|m| Unified {
                    mount_point: m.mount_point.clone(),
                    mount_root: m.root.clone(),
                    own: group.pathname.clone(),
                });
                continue;
            }
            // Named hierarchies (name=systemd) track processes and limit
            // nothing: not ours to use.
            let controllers: Vec<String> = group
                .controllers
                .iter()
                .filter(|c| !c.contains('='))
                .cloned()
                .collect();
            if controllers.is_empty() {
                continue;
            }
            let candidates: Vec<&MountInfo> = v1_mounts
                .iter()
                .filter(|m| mount_binds(m, &group.controllers))
                .copied()
                .collect();
            if let Some(mount) = pick(&candidates, &group.pathname) {
                hierarchies.push(Hierarchy {
                    controllers,
                    mount_point: mount.mount_point.clone(),
                    mount_root: mount.root.clone(),
                    own: group.pathname.clone(),
                });
            }
        }
        hierarchies.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
        match (hierarchies.is_empty(), unified) {
            (false, None) => Ok(Layout::V1 { hierarchies }),
            (false, Some(unified)) => Ok(Layout::Hybrid {
                hierarchies,
                unified,
            }),
            (true, Some(unified)) => Ok(Layout::V2 { unified }),
            (true, None) => Err(CgroupError::NotMounted),
        }
    }

    /// The version whose controllers damda uses: v1 on a hybrid host.
    pub fn version(&self) -> CgroupVersion {
        match self {
            Layout::V1 { .. } | Layout::Hybrid { .. } => CgroupVersion::V1,
            Layout::V2 { .. } => CgroupVersion::V2,
        }
    }

    /// The v1 hierarchies (empty on v2).
    pub fn hierarchies(&self) -> &[Hierarchy] {
        match self {
            Layout::V1 { hierarchies } | Layout::Hybrid { hierarchies, .. } => hierarchies,
            Layout::V2 { .. } => &[],
        }
    }

    /// The cgroup2 mount, if there is one (on a hybrid host it holds no
    /// controller damda uses).
    pub fn unified(&self) -> Option<&Unified> {
        match self {
            Layout::V2 { unified } | Layout::Hybrid { unified, .. } => Some(unified),
            Layout::V1 { .. } => None,
        }
    }

    /// The v1 hierarchy a controller is bound to.
    pub fn hierarchy_of(&self, controller: &str) -> Option<&Hierarchy> {
        self.hierarchies().iter().find(|h| h.has(controller))
    }

    /// One line for `damda doctor` and the page.
    pub fn describe(&self) -> String {
        let v1 = |hierarchies: &[Hierarchy]| {
            hierarchies
                .iter()
                .map(|h| h.controllers.join(","))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            Layout::V1 { hierarchies } => format!("cgroup v1 ({})", v1(hierarchies)),
            Layout::V2 { unified } => {
                format!("cgroup v2 at {}", unified.mount_point.display())
            }
            Layout::Hybrid {
                hierarchies,
                unified,
            } => format!(
                "hybrid: cgroup v1 ({}) with a cgroup2 tree at {}; damda uses v1",
                v1(hierarchies),
                unified.mount_point.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = include_str!("fixtures/v1-hybrid/mountinfo");
    const HYBRID_CGROUP: &str = include_str!("fixtures/v1-hybrid/cgroup");
    const SYSTEMD_MOUNTS: &str = include_str!("fixtures/v2-systemd/mountinfo");
    const SYSTEMD_CGROUP: &str = include_str!("fixtures/v2-systemd/cgroup");
    const CONTAINER_MOUNTS: &str = include_str!("fixtures/v2-container/mountinfo");
    const CONTAINER_CGROUP: &str = include_str!("fixtures/v2-container/cgroup");

    #[test]
    fn this_machine_is_hybrid_and_uses_v1() {
        let layout = Layout::parse(HYBRID_MOUNTS, HYBRID_CGROUP).unwrap();
        assert_eq!(layout.version(), CgroupVersion::V1);
        let Layout::Hybrid {
            hierarchies,
            unified,
        } = &layout
        else {
            panic!("expected hybrid, got {layout:?}");
        };
        assert_eq!(unified.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(
            unified.own_dir().unwrap(),
            Path::new("/sys/fs/cgroup/unified")
        );
        // name=systemd limits nothing and is left out.
        let controllers: Vec<String> = hierarchies
            .iter()
            .map(|h| h.controllers.join(","))
            .collect();
        assert_eq!(
            controllers,
            ["blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids"]
        );
        let memory = layout.hierarchy_of("memory").unwrap();
        assert_eq!(memory.mount_point, Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(
            memory.own_dir().unwrap(),
            Path::new("/sys/fs/cgroup/memory/process_api/1f7ef0cf36e06936b03b867132c804b5")
        );
        let pids = layout.hierarchy_of("pids").unwrap();
        assert_eq!(pids.own_dir().unwrap(), Path::new("/sys/fs/cgroup/pids"));
        assert!(layout.describe().starts_with("hybrid: cgroup v1"));
    }

    #[test]
    fn systemd_host_is_v2() {
        let layout = Layout::parse(SYSTEMD_MOUNTS, SYSTEMD_CGROUP).unwrap();
        assert_eq!(layout.version(), CgroupVersion::V2);
        let unified = layout.unified().unwrap();
        assert_eq!(
            unified.own_dir().unwrap(),
            Path::new("/sys/fs/cgroup/user.slice/user-1000.slice/session-3.scope")
        );
        assert!(layout.hierarchies().is_empty());
        assert_eq!(layout.describe(), "cgroup v2 at /sys/fs/cgroup");
    }

    #[test]
    fn container_with_its_own_cgroup_namespace_sees_its_group_as_root() {
        let layout = Layout::parse(CONTAINER_MOUNTS, CONTAINER_CGROUP).unwrap();
        let unified = layout.unified().unwrap();
        assert_eq!(unified.own, "/");
        assert_eq!(unified.own_dir().unwrap(), Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn container_sharing_the_hosts_cgroup_namespace_maps_through_the_mount_root() {
        let mounts = "618 617 0:26 /system.slice/docker-4f2e.scope /sys/fs/cgroup ro,nosuid - cgroup2 cgroup rw\n";
        let layout = Layout::parse(mounts, "0::/system.slice/docker-4f2e.scope/app\n").unwrap();
        assert_eq!(
            layout.unified().unwrap().own_dir().unwrap(),
            Path::new("/sys/fs/cgroup/app")
        );
        // A group outside the mounted subtree (what a later cgroup namespace
        // shows as /..) cannot be reached through this mount.
        let layout = Layout::parse(mounts, "0::/../elsewhere\n").unwrap();
        assert!(matches!(
            layout.unified().unwrap().own_dir(),
            Err(CgroupError::Placement(_))
        ));
    }

    #[test]
    fn combined_v1_controllers_match_their_mount() {
        let mounts = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";
        let cgroup = "3:cpu,cpuacct:/user.slice\n2:memory:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n";
        let layout = Layout::parse(mounts, cgroup).unwrap();
        assert!(matches!(layout, Layout::V1 { .. }));
        let cpu = layout.hierarchy_of("cpuacct").unwrap();
        assert_eq!(
            cpu.own_dir().unwrap(),
            Path::new("/sys/fs/cgroup/cpu,cpuacct/user.slice")
        );
        assert_eq!(layout.hierarchies().len(), 2);
    }

    #[test]
    fn nothing_mounted_is_an_error() {
        let mounts = "22 27 0:21 / /proc rw,relatime - proc proc rw\n";
        assert!(matches!(
            Layout::parse(mounts, "0::/\n"),
            Err(CgroupError::NotMounted)
        ));
        assert!(matches!(
            Layout::parse("garbage\n", "0::/\n"),
            Err(CgroupError::Parse { .. })
        ));
    }
}

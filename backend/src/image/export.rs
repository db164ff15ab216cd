//! `damda export`: the box as an OCI runtime bundle (`config.json` and
//! `rootfs/`), which runc, crun or youki run as they are.
//!
//! The bundle says in the runtime spec's words what the steps do by hand:
//!
//! | step | in the bundle |
//! |---|---|
//! | `user` first, 0 → 100000 for 65536 | `linux.namespaces` user, `uidMappings`/`gidMappings`; the rootfs owned by the mapped range |
//! | `uts`, `pid`, `mnt`, `ipc`, `net`, `cgroupns` | the other six `linux.namespaces` |
//! | `mnt`'s /proc | the `proc` mount (plus /dev as runc mounts it, and sysfs read-only) |
//! | `cgroups` | `linux.resources`: memory, swap, cpu quota/period, pids, devices |
//! | `overlay` | `rootfs/`: the image's layers flattened with overlay's rules |
//! | `run` | `process`: the image's Entrypoint + Cmd (or the command given), Env and WorkingDir, as `docker run` takes them |
//!
//! The runtime mounts a plain directory rather than an overlay, so the
//! layers are applied once here, bottom first: a 0:0 character device (an
//! overlay whiteout) deletes what lower layers put at its name, and an opaque
//! directory (`trusted.overlay.opaque` or `user.overlay.opaque` = `y`)
//! drops the lower layers' entries below it. Copies never follow a
//! symlink; modes, owners and times are kept; hard links become separate
//! files.
//!
//! Not carried over: the `network` step's bridge and port forward (the
//! bundle's network namespace has only `lo`, as `runc spec` makes it) and
//! volumes.

use super::provenance::{is_opaque, is_whiteout};
use super::{human_size, Reference, StoreError};
use crate::cgroups::Limits;
use crate::engine::EngineConfig;
use crate::steps::IdMap;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use oci_spec::runtime::{
    Capability, LinuxBlockIoBuilder, LinuxBuilder, LinuxCapabilitiesBuilder,
    LinuxDeviceCgroupBuilder, LinuxIdMappingBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::{
    lchown, DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};
use std::path::{Path, PathBuf};

/// The runtime spec version the bundle is written for.
pub const OCI_VERSION: &str = "1.0.2";
/// PATH when the image sets none (Docker's default).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set: what a box's root keeps.
const CAPABILITIES: [Capability; 14] = [
    Capability::AuditWrite,
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Mknod,
    Capability::NetBindService,
    Capability::NetRaw,
    Capability::Setfcap,
    Capability::Setgid,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysChroot,
];

/// The seven namespaces of the steps, user first as the engine makes them
/// (the runtime creates the user namespace first whatever the order).
const NAMESPACES: [LinuxNamespaceType; 7] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Mount,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Cgroup,
];

/// Paths of /proc and /sys hidden from the box, as `runc spec` hides them.
const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];
/// …and those it may read but not write.
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Mount points the runtime needs in the rootfs, made when the image has
/// none: (path, mode).
const MOUNT_POINTS: [(&str, u32); 4] = [
    ("proc", 0o555),
    ("dev", 0o755),
    ("sys", 0o555),
    ("tmp", 0o1777),
];

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("exporting needs root: the rootfs is handed to the box's uids (run it with sudo)")]
    NotRoot,
    #[error("{path} already exists: export into a new or empty directory")]
    Exists { path: PathBuf },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path}: {syscall}: {source}")]
    Sys {
        syscall: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("{path} is a {kind}, which a layer should not hold")]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("image {0} has no entrypoint or cmd: give the command after `--`")]
    NoCommand(Reference),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("building the runtime spec: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    #[error("writing {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ExportError {
    let path = path.to_owned();
    move |source| ExportError::Io {
        action,
        path,
        source,
    }
}

/// What the rootfs holds once flattened.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RootfsStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of regular file content.
    pub bytes: u64,
    /// Entries removed by a whiteout or an opaque directory.
    pub hidden: u64,
}

/// A bundle written: where, what, and how to run it.
#[derive(Debug, Clone)]
pub struct Exported {
    pub dir: PathBuf,
    pub image: Reference,
    pub layers: usize,
    pub rootfs: RootfsStats,
    pub config_bytes: u64,
    pub args: Vec<String>,
    /// A container id for the runtime: `damda-` and the image's name.
    pub container_id: String,
    /// The box's root as the host sees it.
    pub box_root: u32,
    /// A directory on the way to the bundle that the box's root cannot
    /// search (runc's init, already in the user namespace, opens the rootfs
    /// by path and fails on it; crun does not).
    pub closed: Option<PathBuf>,
}

impl std::fmt::Display for Exported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = self.dir.display();
        let r = &self.rootfs;
        writeln!(
            f,
            "wrote {dir}/rootfs: the {} layers of {} flattened: {} files ({}), {} directories, \
             {} symlinks; {} entries hidden by upper layers",
            self.layers,
            self.image,
            r.files,
            human_size(r.bytes),
            r.dirs,
            r.symlinks,
            r.hidden
        )?;
        writeln!(
            f,
            "wrote {dir}/config.json: {} (OCI runtime spec {OCI_VERSION}), process {:?}",
            human_size(self.config_bytes),
            self.args
        )?;
        if let Some(closed) = &self.closed {
            writeln!(
                f,
                "note: {} is not searchable by the box's root (uid {} on the host): \
                 runc cannot open the rootfs through it; `chmod o+x` it or export elsewhere",
                closed.display(),
                self.box_root
            )?;
        }
        writeln!(f, "try: sudo runc run --bundle {dir} {}", self.container_id)
    }
}

/// Writes the bundle for `config`'s image, hostname, ids and limits into
/// `dir` (created if missing; it must not hold a rootfs or config.json).
/// `args`, if not empty, replace the image's command. On failure, what was
/// written is removed.
pub fn export(config: &EngineConfig, dir: &Path, args: &[String]) -> Result<Exported, ExportError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ExportError::NotRoot);
    }
    let store = config.store()?;
    let image = store.image(&config.image)?;
    let args = if args.is_empty() {
        image.command()
    } else {
        args.to_vec()
    };
    if args.is_empty() {
        return Err(ExportError::NoCommand(config.image.clone()));
    }
    let layers = store.unpacked_layers(&image)?;
    let image_config = image.config.config().clone().unwrap_or_default();
    let process = ProcessSettings {
        args,
        env: with_path(image_config.env().clone().unwrap_or_default()),
        cwd: image_config
            .working_dir()
            .clone()
            .filter(|cwd| cwd.starts_with('/'))
            .unwrap_or_else(|| "/".to_owned()),
    };
    let spec = runtime_spec(&process, &config.hostname, config.ids, &config.limits)?;

    let (rootfs, config_path) = (dir.join("rootfs"), dir.join("config.json"));
    for path in [&rootfs, &config_path] {
        if path.symlink_metadata().is_ok() {
            return Err(ExportError::Exists { path: path.clone() });
        }
    }
    let made_dir = !dir.exists();
    // The runtime's init, already root of the user namespace (uid 100000
    // outside), opens the rootfs by path: the bundle must be searchable.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io_err("creating", dir))?;
    let written = (|| {
        let stats = flatten(&layers, &rootfs, config.ids.outside, config.ids.outside)?;
        let config_bytes = write_spec(&spec, &config_path)?;
        Ok((stats, config_bytes))
    })();
    let (rootfs_stats, config_bytes) = match written {
        Ok(written) => written,
        Err(err) => {
            let _ = fs::remove_file(&config_path);
            let _ = fs::remove_dir_all(&rootfs);
            if made_dir {
                let _ = fs::remove_dir(dir);
            }
            return Err(err);
        }
    };
    Ok(Exported {
        dir: dir.to_owned(),
        image: config.image.clone(),
        layers: layers.len(),
        rootfs: rootfs_stats,
        config_bytes,
        args: process.args,
        container_id: container_id(&config.image),
        box_root: config.ids.outside,
        closed: closed_ancestor(dir, config.ids.outside, config.ids.outside),
    })
}

/// The image's environment, with the usual PATH added if it sets none (as
/// Docker does): the runtime looks the command up in it.
fn with_path(mut env: Vec<String>) -> Vec<String> {
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_owned());
    }
    env
}

/// The first directory from / down to `dir` that `uid`:`gid` may not search.
fn closed_ancestor(dir: &Path, uid: u32, gid: u32) -> Option<PathBuf> {
    let dir = fs::canonicalize(dir).ok()?;
    dir.ancestors()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|path| {
            let Ok(meta) = path.metadata() else {
                return true;
            };
            let mode = meta.mode();
            let searchable = if meta.uid() == uid {
                mode & 0o100 != 0
            } else if meta.gid() == gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            !searchable
        })
        .map(Path::to_owned)
}

/// `damda-` and the image's last name component, in the characters a
/// runtime accepts in a container id.
fn container_id(image: &Reference) -> String {
    let name = image.repository.rsplit('/').next().unwrap_or_default();
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("damda-{name}")
}

/// What the box's process is: from the image's config unless overridden.
#[derive(Debug, Clone)]
struct ProcessSettings {
    args: Vec<String>,
    env: Vec<String>,
    cwd: String,
}

fn string_vec(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn mount(
    destination: &str,
    typ: &str,
    source: &str,
    options: &[&str],
) -> Result<Mount, ExportError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(string_vec(options))
        .build()?)
}

/// The mounts `runc spec` makes. sysfs may be mounted because the box
/// has a network namespace of its own (the kernel asks for CAP_SYS_ADMIN
/// over the namespace's owner, the box's user namespace); runc's rootless
/// spec, which has none, binds the host's /sys instead. No cgroupfs: the
/// box never mounts its cgroups (see `crate::cgroups` on CVE-2022-0492).
fn mounts() -> Result<Vec<Mount>, ExportError> {
    Ok(vec![
        mount("/proc", "proc", "proc", &[])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ])
}

/// The runtime spec of the box: its process, root, hostname, mounts,
/// namespaces, id mappings and cgroup limits.
fn runtime_spec(
    process: &ProcessSettings,
    hostname: &str,
    ids: IdMap,
    limits: &Limits,
) -> Result<Spec, ExportError> {
    let caps: HashSet<Capability> = CAPABILITIES.into_iter().collect();
    // The builders start from oci-spec's defaults (youki's): clear what
    // Docker does not set, inheritable and ambient capabilities and rlimits.
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()?;
    capabilities.set_inheritable(None).set_ambient(None);
    let mut process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(0u32).gid(0u32).build()?)
        .args(process.args.clone())
        .env(process.env.clone())
        .cwd(&process.cwd)
        .capabilities(capabilities)
        .no_new_privileges(true)
        .build()?;
    process.set_rlimits(None);
    let mapping = LinuxIdMappingBuilder::default()
        .container_id(0u32)
        .host_id(ids.outside)
        .size(ids.count)
        .build()?;
    let namespaces = NAMESPACES
        .into_iter()
        .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
        .collect::<Result<Vec<_>, _>>()?;
    let linux = LinuxBuilder::default()
        .uid_mappings(vec![mapping])
        .gid_mappings(vec![mapping])
        .namespaces(namespaces)
        .resources(resources(limits)?)
        .masked_paths(string_vec(&MASKED_PATHS))
        .readonly_paths(string_vec(&READONLY_PATHS))
        .build()?;
    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .process(process)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(false)
                .build()?,
        )
        .hostname(hostname)
        .mounts(mounts()?)
        .linux(linux)
        .build()?;
    spec.set_annotations(None);
    Ok(spec)
}

/// The `cgroups` step's limits in the spec's terms. The spec's swap is
/// memory plus swap, as v1's memory.memsw.limit_in_bytes and `docker run
/// --memory-swap` count it; its block I/O weight is v1's blkio.weight.
fn resources(limits: &Limits) -> Result<oci_spec::runtime::LinuxResources, ExportError> {
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let mut memory = LinuxMemoryBuilder::default();
    if let Some(bytes) = limits.memory_bytes {
        memory = memory.limit(as_i64(bytes));
        if let Some(swap) = limits.swap_bytes {
            memory = memory.swap(as_i64(bytes.saturating_add(swap)));
        }
    }
    let mut cpu = oci_spec::runtime::LinuxCpuBuilder::default().period(limits.cpu_period_us);
    if let Some(quota) = limits.cpu_quota_us {
        cpu = cpu.quota(as_i64(quota));
    }
    // Every device denied; the runtime then allows its default list (the
    // same as the `cgroups` step's, `crate::cgroups::DEVICE_ALLOW_LIST`).
    let deny_all = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()?;
    let mut resources = LinuxResourcesBuilder::default()
        .devices(vec![deny_all])
        .memory(memory.build()?)
        .cpu(cpu.build()?);
    if let Some(pids) = limits.pids_max {
        resources = resources.pids(LinuxPidsBuilder::default().limit(as_i64(pids)).build()?);
    }
    if let Some(weight) = limits.io_weight {
        // At most 1000: v1's scale.
        let v1 = crate::cgroups::blkio_weight(weight) as u16;
        resources = resources.block_io(LinuxBlockIoBuilder::default().weight(v1).build()?);
    }
    Ok(resources.build()?)
}

/// Writes `spec` as pretty JSON (capabilities sorted, so the same box makes
/// the same file); returns its size.
fn write_spec(spec: &Spec, path: &Path) -> Result<u64, ExportError> {
    let json_err = |source| ExportError::Json {
        path: path.to_owned(),
        source,
    };
    let mut value = serde_json::to_value(spec).map_err(json_err)?;
    if let Some(sets) = value
        .pointer_mut("/process/capabilities")
        .and_then(serde_json::Value::as_object_mut)
    {
        for set in sets.values_mut() {
            if let Some(list) = set.as_array_mut() {
                list.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }
    let mut text = serde_json::to_vec_pretty(&value).map_err(json_err)?;
    text.push(b'\n');
    fs::write(path, &text).map_err(io_err("writing", path))?;
    Ok(text.len() as u64)
}

/// Applies `layers` (bottom first) to a new directory `rootfs` owned by
/// `uid` and `gid` (the box's root as the host sees it), then adds the
/// mount points the runtime needs.
fn flatten(
    layers: &[impl AsRef<Path>],
    rootfs: &Path,
    uid: u32,
    gid: u32,
) -> Result<RootfsStats, ExportError> {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(rootfs)
        .map_err(io_err("creating", rootfs))?;
    lchown(rootfs, Some(uid), Some(gid)).map_err(io_err("chown", rootfs))?;
    let mut hidden = 0;
    for layer in layers {
        apply_dir(layer.as_ref(), rootfs, &mut hidden)?;
    }
    for (name, mode) in MOUNT_POINTS {
        let path = rootfs.join(name);
        if path.symlink_metadata().is_err() {
            fs::DirBuilder::new()
                .mode(mode)
                .create(&path)
                .map_err(io_err("creating", &path))?;
            lchown(&path, Some(uid), Some(gid)).map_err(io_err("chown", &path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(io_err("chmod", &path))?;
        }
    }
    let mut stats = RootfsStats {
        hidden,
        ..RootfsStats::default()
    };
    measure(rootfs, &mut stats);
    stats.dirs -= 1; // rootfs itself
    Ok(stats)
}

/// Adds what is at and below `path` (which is not followed) to `stats`.
fn measure(path: &Path, stats: &mut RootfsStats) {
    let Ok(meta) = path.symlink_metadata() else {
        return;
    };
    if meta.is_dir() {
        stats.dirs += 1;
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            measure(&entry.path(), stats);
        }
    } else if meta.file_type().is_symlink() {
        stats.symlinks += 1;
    } else {
        stats.files += 1;
        stats.bytes += meta.len();
    }
}

/// Removes `path` (a directory with all below it), never following a
/// symlink; counts what went.
fn remove(path: &Path, meta: &fs::Metadata, hidden: &mut u64) -> Result<(), ExportError> {
    let mut gone = RootfsStats::default();
    measure(path, &mut gone);
    *hidden += gone.files + gone.dirs + gone.symlinks;
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(io_err("removing", path))
    } else {
        fs::remove_file(path).map_err(io_err("removing", path))
    }
}

/// Applies the layer directory `src` onto `dst`, which is a real directory
/// (never a symlink: every directory on the way was made here).
fn apply_dir(src: &Path, dst: &Path, hidden: &mut u64) -> Result<(), ExportError> {
    let mut entries: Vec<fs::DirEntry> = fs::read_dir(src)
        .map_err(io_err("reading", src))?
        .collect::<Result<_, _>>()
        .map_err(io_err("reading", src))?;
    entries.sort_by_key(fs::DirEntry::file_name);
    for entry in entries {
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let meta = from.symlink_metadata().map_err(io_err("reading", &from))?;
        let below = to.symlink_metadata().ok();
        if is_whiteout(&meta) {
            if let Some(below) = below {
                remove(&to, &below, hidden)?;
            }
            continue;
        }
        if meta.is_dir() {
            match below {
                Some(below) if below.is_dir() => {
                    if is_opaque(&from) {
                        for old in fs::read_dir(&to).map_err(io_err("reading", &to))? {
                            let old = old.map_err(io_err("reading", &to))?.path();
                            let old_meta =
                                old.symlink_metadata().map_err(io_err("reading", &old))?;
                            remove(&old, &old_meta, hidden)?;
                        }
                    }
                }
                below => {
                    if let Some(below) = below {
                        remove(&to, &below, hidden)?;
                    }
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&to)
                        .map_err(io_err("creating", &to))?;
                }
            }
            apply_dir(&from, &to, hidden)?;
        } else {
            if let Some(below) = below {
                remove(&to, &below, hidden)?;
            }
            let kind = meta.file_type();
            if kind.is_file() {
                copy_file(&from, &to)?;
            } else if kind.is_symlink() {
                let target = fs::read_link(&from).map_err(io_err("reading", &from))?;
                std::os::unix::fs::symlink(&target, &to).map_err(io_err("creating", &to))?;
            } else {
                return Err(ExportError::Unsupported {
                    path: from,
                    kind: file_kind(&kind),
                });
            }
        }
        copy_metadata(&meta, &to)?;
    }
    Ok(())
}

fn file_kind(kind: &fs::FileType) -> &'static str {
    if kind.is_fifo() {
        "fifo"
    } else if kind.is_socket() {
        "socket"
    } else if kind.is_block_device() {
        "block device"
    } else {
        "character device"
    }
}

/// Copies a regular file's content into a new file (never through a
/// symlink at `to`).
fn copy_file(from: &Path, to: &Path) -> Result<(), ExportError> {
    let mut source = fs::File::open(from).map_err(io_err("opening", from))?;
    let mut target = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(to)
        .map_err(io_err("creating", to))?;
    io::copy(&mut source, &mut target).map_err(io_err("copying into", to))?;
    Ok(())
}

/// Owner, then mode (chown clears set-uid bits), then times, none through
/// a symlink.
fn copy_metadata(meta: &fs::Metadata, to: &Path) -> Result<(), ExportError> {
    lchown(to, Some(meta.uid()), Some(meta.gid())).map_err(io_err("chown", to))?;
    if !meta.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(io_err("chmod", to))?;
    }
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        to,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|source| ExportError::Sys {
        syscall: "utimensat",
        path: to.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_images_environment_is_kept_and_gets_a_path_if_it_has_none() {
        assert_eq!(
            with_path(vec!["LANG=C.UTF-8".into()]),
            ["LANG=C.UTF-8", DEFAULT_PATH]
        );
        assert_eq!(
            with_path(vec!["PATH=/bin".into(), "LANG=C".into()]),
            ["PATH=/bin", "LANG=C"]
        );
        assert_eq!(with_path(Vec::new()), [DEFAULT_PATH]);
    }
    use crate::image::unpack::OVERLAY_OPAQUE_USER_XATTR;
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use std::collections::BTreeMap;

    /// Path → what is there (`dir`, `-> target`, or the file's content),
    /// below `root`.
    fn tree(root: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut pending = vec![root.to_owned()];
        while let Some(dir) = pending.pop() {
            for entry in fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                let name = path.strip_prefix(root).unwrap().display().to_string();
                let meta = path.symlink_metadata().unwrap();
                let what = if meta.is_dir() {
                    pending.push(path.clone());
                    "dir".to_owned()
                } else if meta.file_type().is_symlink() {
                    format!("-> {}", fs::read_link(&path).unwrap().display())
                } else {
                    fs::read_to_string(&path).unwrap()
                };
                out.insert(name, what);
            }
        }
        out
    }

    /// A scratch directory, removed even when an assertion fails.
    struct Scratch(PathBuf);

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn layers_flatten_with_overlays_rules() {
        let scratch =
            Scratch(std::env::temp_dir().join(format!("damda-export-test-{}", std::process::id())));
        let base = &scratch.0;
        let _ = fs::remove_dir_all(base);
        let (lower, upper, rootfs) = (base.join("lower"), base.join("upper"), base.join("rootfs"));
        fs::create_dir_all(lower.join("etc/conf.d")).unwrap();
        fs::write(lower.join("etc/conf.d/old"), "old").unwrap();
        fs::write(lower.join("etc/motd"), "lower").unwrap();
        fs::write(lower.join("gone"), "x").unwrap();
        fs::create_dir_all(lower.join("gone-dir/deep")).unwrap();
        fs::create_dir_all(lower.join("proc")).unwrap();
        std::os::unix::fs::symlink("/etc/motd", lower.join("link")).unwrap();
        std::os::unix::fs::symlink("etc", lower.join("kept-link")).unwrap();
        fs::write(lower.join("becomes-dir"), "file").unwrap();
        fs::create_dir_all(upper.join("etc/conf.d")).unwrap();
        fs::write(upper.join("etc/conf.d/new"), "new").unwrap();
        xattr::set(upper.join("etc/conf.d"), OVERLAY_OPAQUE_USER_XATTR, b"y").unwrap();
        fs::write(upper.join("etc/motd"), "upper").unwrap();
        // Whiteouts: unprivileged users may make 0:0 devices since Linux 5.8.
        for name in ["gone", "gone-dir", "link", "never-there"] {
            mknod(
                &upper.join(name),
                SFlag::S_IFCHR,
                Mode::empty(),
                makedev(0, 0),
            )
            .unwrap();
        }
        fs::create_dir_all(upper.join("becomes-dir")).unwrap();
        fs::write(upper.join("tool"), "#!/bin/sh").unwrap();
        fs::set_permissions(upper.join("tool"), fs::Permissions::from_mode(0o750)).unwrap();

        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        let stats = flatten(&[&lower, &upper], &rootfs, uid, gid).unwrap();
        let expected: BTreeMap<String, String> = [
            ("becomes-dir", "dir"),
            ("dev", "dir"),
            ("etc", "dir"),
            ("etc/conf.d", "dir"),
            ("etc/conf.d/new", "new"),
            ("etc/motd", "upper"),
            ("kept-link", "-> etc"),
            ("proc", "dir"),
            ("sys", "dir"),
            ("tmp", "dir"),
            ("tool", "#!/bin/sh"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(tree(&rootfs), expected);
        // gone, gone-dir and gone-dir/deep, link, etc/conf.d/old, the file
        // becomes-dir and the lower etc/motd.
        assert_eq!(stats.hidden, 7);
        assert_eq!((stats.files, stats.symlinks, stats.dirs), (3, 1, 7));
        assert_eq!(stats.bytes, 3 + 5 + 9);
        let tool = fs::metadata(rootfs.join("tool")).unwrap();
        assert_eq!(tool.mode() & 0o7777, 0o750);
        let tmp = fs::metadata(rootfs.join("tmp")).unwrap();
        assert_eq!(tmp.mode() & 0o7777, 0o1777);
        // overlay's marks stay in the layers.
        assert!(!is_opaque(&rootfs.join("etc/conf.d")));
    }

    #[test]
    fn the_spec_says_what_the_steps_do() {
        let process = ProcessSettings {
            args: vec!["/bin/busybox".into(), "httpd".into()],
            env: vec![DEFAULT_PATH.into()],
            cwd: "/".into(),
        };
        let ids = IdMap {
            outside: 100_000,
            count: 65_536,
        };
        let spec = runtime_spec(&process, "damda-box", ids, &Limits::default()).unwrap();
        let path =
            std::env::temp_dir().join(format!("damda-export-spec-{}.json", std::process::id()));
        write_spec(&spec, &path).unwrap();
        let read = Spec::load(&path).unwrap();
        fs::remove_file(&path).unwrap();
        assert_eq!(read, spec);
        assert_eq!(read.version(), OCI_VERSION);
        assert_eq!(read.hostname().as_deref(), Some("damda-box"));
        let linux = read.linux().as_ref().unwrap();
        let mapping = &linux.uid_mappings().as_ref().unwrap()[0];
        assert_eq!(
            (mapping.container_id(), mapping.host_id(), mapping.size()),
            (0, 100_000, 65_536)
        );
        assert_eq!(linux.namespaces().as_ref().unwrap().len(), 7);
        let resources = linux.resources().as_ref().unwrap();
        let memory = resources.memory().as_ref().unwrap();
        assert_eq!(
            (memory.limit(), memory.swap()),
            (Some(64 << 20), Some(64 << 20))
        );
        let cpu = resources.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
        assert_eq!(resources.pids().as_ref().unwrap().limit(), 64);
        let process = read.process().as_ref().unwrap();
        assert_eq!(process.no_new_privileges(), Some(true));
        let caps = process.capabilities().as_ref().unwrap();
        assert_eq!(caps.bounding().as_ref().unwrap().len(), CAPABILITIES.len());
        assert!(caps.ambient().is_none() && caps.inheritable().is_none());
        assert!(process.rlimits().is_none());
    }

    #[test]
    fn container_ids_use_the_images_name() {
        let image: Reference = "damda.local/busybox-httpd:latest".parse().unwrap();
        assert_eq!(container_id(&image), "damda-busybox-httpd");
    }
}

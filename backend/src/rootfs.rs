//! The default root filesystem: Debian's busybox-static and its applet links,
//! plus a minimal /etc. Built once at set-up (`damda prepare`), never
//! downloaded.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{path} not found: install Debian's busybox-static (scripts/setup.sh does)")]
    NoBusybox { path: PathBuf },
    #[error("{path} is not a static busybox: {reason}")]
    NotStatic { path: PathBuf, reason: String },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError {
    let path = path.to_owned();
    move |source| RootfsError::Io {
        action,
        path,
        source,
    }
}

/// Where busybox-static installs its binary on Debian.
pub const BUSYBOX: &str = "/bin/busybox";

const DIRECTORIES: [(&str, u32); 12] = [
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("etc", 0o755),
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("root", 0o700),
    ("tmp", 0o1777),
    ("var/www", 0o755),
    ("home", 0o755),
];

const FILES: [(&str, &str); 5] = [
    (
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    ),
    ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ("etc/hostname", "damda-box\n"),
    (
        "etc/os-release",
        "NAME=\"damda busybox\"\nID=damda\nPRETTY_NAME=\"damda (busybox-static)\"\n",
    ),
    ("etc/profile", "export PS1='[damda \\h \\w]# '\n"),
];

/// A relative link target from `link` (a path inside the rootfs) to bin/busybox.
fn busybox_target(link: &str) -> String {
    let depth = link.matches('/').count();
    format!("{}bin/busybox", "../".repeat(depth))
}

/// The applets a busybox binary provides, as paths relative to /.
fn applets(busybox: &Path) -> Result<Vec<String>, RootfsError> {
    let output = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(io("running", busybox))?;
    if !output.status.success() {
        return Err(RootfsError::NotStatic {
            path: busybox.to_owned(),
            reason: "--list-full failed".into(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().trim_start_matches('/').to_owned())
        .filter(|line| !line.is_empty() && !line.contains(".."))
        .collect())
}

/// Refuses a dynamically linked busybox: inside the chroot there is no libc.
fn check_static(busybox: &Path) -> Result<(), RootfsError> {
    let bytes = fs::read(busybox).map_err(io("reading", busybox))?;
    // PT_INTERP names the dynamic loader; a static binary has none.
    if bytes
        .windows(b"/lib64/ld-linux".len())
        .any(|w| w == b"/lib64/ld-linux")
    {
        return Err(RootfsError::NotStatic {
            path: busybox.to_owned(),
            reason: "it names a dynamic loader; install busybox-static".into(),
        });
    }
    Ok(())
}

fn build(busybox: &Path, target: &Path) -> Result<(), RootfsError> {
    for (dir, mode) in DIRECTORIES {
        let path = target.join(dir);
        fs::create_dir_all(&path).map_err(io("creating", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io("chmod", &path))?;
    }
    let installed = target.join("bin/busybox");
    fs::copy(busybox, &installed).map_err(io("copying", &installed))?;
    for applet in applets(busybox)? {
        let link = target.join(&applet);
        if link.exists() || link == installed {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        symlink(busybox_target(&applet), &link).map_err(io("linking", &link))?;
    }
    for (file, text) in FILES {
        let path = target.join(file);
        fs::write(&path, text).map_err(io("writing", &path))?;
    }
    Ok(())
}

/// Builds `rootfs` from /bin/busybox unless it is already built from the
/// same binary. Returns whether it (re)built.
pub fn prepare(rootfs: &Path) -> Result<bool, RootfsError> {
    let busybox = Path::new(BUSYBOX);
    if !busybox.exists() {
        return Err(RootfsError::NoBusybox {
            path: busybox.to_owned(),
        });
    }
    check_static(busybox)?;
    let current = rootfs.join("bin/busybox");
    if let (Ok(a), Ok(b)) = (fs::read(busybox), fs::read(&current)) {
        if a == b && rootfs.join("etc/os-release").exists() {
            return Ok(false);
        }
    }
    let parent = rootfs.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io("creating", parent))?;
    let staging = parent.join(format!("rootfs.staging-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    build(busybox, &staging)?;
    if rootfs.exists() {
        fs::remove_dir_all(rootfs).map_err(io("removing", rootfs))?;
    }
    fs::rename(&staging, rootfs).map_err(io("renaming", &staging))?;
    Ok(true)
}

/// A box's own directory (new; its parent is made if needed).
pub fn create_box_dir(dir: &Path) -> Result<(), RootfsError> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(io("creating", parent))?;
    }
    fs::create_dir(dir).map_err(io("creating", dir))
}

/// Copies a directory tree: directories, regular files and symlinks, with
/// their modes. (The rootfs holds nothing else.)
pub fn copy_tree(from: &Path, to: &Path) -> Result<(), RootfsError> {
    let meta = fs::symlink_metadata(from).map_err(io("reading", from))?;
    fs::create_dir(to).map_err(io("creating", to))?;
    for entry in fs::read_dir(from).map_err(io("listing", from))? {
        let entry = entry.map_err(io("listing", from))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().map_err(io("reading", &source))?;
        if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&source).map_err(io("reading", &source))?;
            symlink(link, &target).map_err(io("linking", &target))?;
        } else if kind.is_file() {
            fs::copy(&source, &target).map_err(io("copying", &target))?;
        }
    }
    fs::set_permissions(to, meta.permissions()).map_err(io("chmod", to))
}

/// The device nodes every container has and programs expect (a daemon
/// sends its output to /dev/null): made in each box's copy by the server,
/// which may (a box's root may not mknod, even in its user namespace).
pub fn make_device_nodes(root: &Path) -> Result<(), RootfsError> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    for (name, minor) in [("null", 3), ("zero", 5)] {
        let path = root.join("dev").join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, minor),
        )
        .map_err(|errno| io("mknod", &path)(errno.into()))?;
        // mknod's mode passes through the umask.
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .map_err(io("chmod", &path))?;
    }
    Ok(())
}

/// Shifts the owner of every entry by `offset` (uid and gid alike), without
/// following symlinks: the box's copy handed to a user namespace's range.
pub fn shift_owner(path: &Path, offset: u32) -> Result<(), RootfsError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path).map_err(io("reading", path))?;
    std::os::unix::fs::lchown(path, Some(meta.uid() + offset), Some(meta.gid() + offset))
        .map_err(io("chown", path))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(io("listing", path))? {
            shift_owner(&entry.map_err(io("listing", path))?.path(), offset)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_point_back_to_bin_busybox() {
        assert_eq!(busybox_target("bin/sh"), "../bin/busybox");
        assert_eq!(busybox_target("usr/bin/env"), "../../bin/busybox");
    }
}

//! Unpacks one layer tar into an empty directory without ever letting an
//! entry reach outside it.
//!
//! The `tar` crate's own `unpack` is not used: before 0.4.45 it followed
//! symlinks when it set directory modes, and it resolves paths by name.
//! Here every entry is created relative to a directory fd of its parent,
//! which is opened from the layer's root fd with openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV): no path
//! component may be a symlink, so nothing can lead out. Modes, owners and
//! times are set through fds (fchmod, futimens) or *at calls with
//! AT_SYMLINK_NOFOLLOW, never by path. AUFS whiteouts in the tar become
//! overlay whiteouts; device nodes and fifos in the tar are refused.

use nix::errno::Errno;
use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{
    fchmod, fstatat, futimens, makedev, mkdirat, mknodat, utimensat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use xattr::FileExt;

/// AUFS marks a deleted name with this prefix in the layer tar.
pub(super) const WHITEOUT_PREFIX: &str = ".wh.";
/// AUFS's own bookkeeping names (`.wh..wh.plnk`, …); only `opq` means something.
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
/// "Everything below this directory in lower layers is hidden."
pub(super) const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to make a directory opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The same mark as overlay writes it when mounted with `userxattr` (in a
/// user namespace, as a box mounts its root).
pub const OVERLAY_OPAQUE_USER_XATTR: &str = "user.overlay.opaque";

/// Limits and the owner shift for one unpack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Most bytes of file content the layer may hold.
    pub max_bytes: u64,
    /// Most tar entries the layer may hold.
    pub max_entries: u64,
    /// Added to every uid and gid: the layer handed to a user namespace's range.
    pub owner_offset: u32,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            max_bytes: 2 << 30,
            max_entries: 200_000,
            owner_offset: 0,
        }
    }
}

/// What an unpack created.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

/// Why an entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("it is an absolute path")]
    Absolute,
    #[error("it has a `..` component")]
    DotDot,
    #[error("its path goes through a symlink")]
    ThroughSymlink,
    #[error("its path leaves the layer")]
    Escapes,
    #[error("a component of its path is not a directory")]
    ParentNotDirectory,
    #[error("it would replace a directory")]
    ReplacesDirectory,
    #[error("it is a device node")]
    Device,
    #[error("it is a fifo")]
    Fifo,
    #[error("its entry type {0} is not supported")]
    Unsupported(String),
    #[error("it names the layer root but is not a directory")]
    RootNotDirectory,
    #[error("it is a whiteout of {0:?}, which is not a name")]
    BadWhiteout(String),
    #[error("it is a hardlink without a target")]
    NoLinkTarget,
    #[error("its hardlink target {target:?} is refused: {reason}")]
    LinkTarget {
        target: String,
        reason: Box<Refusal>,
    },
    #[error("its hardlink target {0:?} is not in the layer")]
    LinkTargetMissing(String),
    #[error("its owner {0} plus the owner offset overflows")]
    OwnerOverflow(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("refused entry {entry:?}: {reason}")]
    Refused { entry: String, reason: Refusal },
    #[error("{syscall} for entry {entry:?}: {errno}")]
    Sys {
        entry: String,
        syscall: &'static str,
        errno: Errno,
    },
    #[error("opening layer root {path}: {errno}")]
    Root { path: PathBuf, errno: Errno },
    #[error("writing entry {entry:?}: {source}")]
    Write {
        entry: String,
        source: std::io::Error,
    },
    #[error("reading the layer archive: {0}")]
    Read(#[source] std::io::Error),
    #[error("the layer holds more than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the layer holds more than {limit} entries")]
    TooManyEntries { limit: u64 },
}

impl UnpackError {
    /// The refusal, if this is one (tests and callers match on it).
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            UnpackError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// What a link entry points at; an entry without one is refused.
fn link_target<R: Read>(entry: &tar::Entry<R>, name: &str) -> Result<Vec<u8>, UnpackError> {
    entry
        .link_name_bytes()
        .map(|target| target.into_owned())
        .ok_or_else(|| UnpackError::Refused {
            entry: name.to_owned(),
            reason: Refusal::NoLinkTarget,
        })
}

/// The path's components, with `.` and empty ones dropped.
fn components(raw: &[u8]) -> Result<Vec<&OsStr>, Refusal> {
    if raw.starts_with(b"/") {
        return Err(Refusal::Absolute);
    }
    let mut parts = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(Refusal::DotDot),
            name => parts.push(OsStr::from_bytes(name)),
        }
    }
    Ok(parts)
}

fn join(parts: &[&OsStr]) -> PathBuf {
    parts.iter().collect()
}

/// Resolution that cannot leave the root nor pass through any symlink.
fn resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_IN_ROOT
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

/// No O_NOFOLLOW: with it a trailing symlink fails as ENOTDIR; without it
/// RESOLVE_NO_SYMLINKS fails every symlink, trailing or not, as ELOOP.
fn open_dir_at(dir: &OwnedFd, path: &Path) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(resolve());
    openat2(dir, path, how)
}

/// An errno from resolving a path, as a refusal where it means one.
fn path_refusal(errno: Errno) -> Option<Refusal> {
    match errno {
        Errno::ELOOP => Some(Refusal::ThroughSymlink),
        Errno::EXDEV => Some(Refusal::Escapes),
        Errno::ENOTDIR => Some(Refusal::ParentNotDirectory),
        _ => None,
    }
}

fn time(seconds: u64) -> TimeSpec {
    TimeSpec::new(seconds.min(i64::MAX as u64) as i64, 0)
}

/// A directory whose mode and mtime are set after its contents exist (a
/// read-only directory must stay writable while it is filled, and creating
/// entries changes its mtime).
struct PendingDir {
    path: PathBuf,
    mode: u32,
    mtime: u64,
}

struct Unpacker {
    root: OwnedFd,
    options: UnpackOptions,
    stats: UnpackStats,
    dirs: Vec<PendingDir>,
    buffer: Vec<u8>,
}

/// Unpacks the tar stream `archive` into `root`, an existing directory.
/// On error, what was created so far stays: the caller unpacks into a
/// staging directory and removes it.
pub fn unpack<R: Read>(
    archive: R,
    root: &Path,
    options: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| UnpackError::Root {
        path: root.to_owned(),
        errno,
    })?;
    let mut unpacker = Unpacker {
        root: root_fd,
        options: *options,
        stats: UnpackStats::default(),
        dirs: Vec::new(),
        buffer: vec![0; 256 << 10],
    };
    let mut archive = tar::Archive::new(archive);
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        unpacker.entry(&mut entry)?;
    }
    unpacker.finish_dirs()?;
    Ok(unpacker.stats)
}

impl Unpacker {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<R>) -> Result<(), UnpackError> {
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refused = |reason| UnpackError::Refused {
            entry: name.clone(),
            reason,
        };
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(()); // pax metadata for the whole archive, not a file
        }
        self.stats.entries += 1;
        if self.stats.entries > self.options.max_entries {
            return Err(UnpackError::TooManyEntries {
                limit: self.options.max_entries,
            });
        }
        let path_bytes = entry.path_bytes().into_owned();
        let parts = components(&path_bytes).map_err(refused)?;
        let Some((last, parents)) = parts.split_last() else {
            if kind.is_dir() {
                let root = Self::dup(&self.root, &name)?;
                return self.directory(entry, &name, PathBuf::new(), root);
            }
            return Err(refused(Refusal::RootNotDirectory));
        };
        let parent = self.parent(parents, &name)?;
        let last_str = last.to_string_lossy();
        if let Some(hidden) = last_str.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&parent, &name, &last_str, hidden);
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.file(entry, &parent, last, &name)
            }
            tar::EntryType::Directory => {
                if !self.replace(&parent, last, &name, true)? {
                    mkdirat(&parent, *last, Mode::from_bits_truncate(0o700))
                        .map_err(Self::sys(&name, "mkdirat"))?;
                }
                let dir =
                    open_dir_at(&parent, Path::new(last)).map_err(Self::sys(&name, "openat2"))?;
                self.directory(entry, &name, join(&parts), dir)
            }
            tar::EntryType::Symlink => self.symlink(entry, &parent, last, &name),
            tar::EntryType::Link => self.hardlink(entry, &parent, last, &name),
            tar::EntryType::Char | tar::EntryType::Block => Err(refused(Refusal::Device)),
            tar::EntryType::Fifo => Err(refused(Refusal::Fifo)),
            other => Err(refused(Refusal::Unsupported(format!("{other:?}")))),
        }
    }

    fn dup(fd: &OwnedFd, name: &str) -> Result<OwnedFd, UnpackError> {
        fd.try_clone().map_err(|e| UnpackError::Sys {
            entry: name.to_owned(),
            syscall: "dup",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    }

    fn sys(name: &str, syscall: &'static str) -> impl FnOnce(Errno) -> UnpackError {
        let name = name.to_owned();
        move |errno| UnpackError::Sys {
            entry: name,
            syscall,
            errno,
        }
    }

    fn owner(&self, id: u64, name: &str) -> Result<u32, UnpackError> {
        u32::try_from(id)
            .ok()
            .and_then(|id| id.checked_add(self.options.owner_offset))
            .ok_or_else(|| UnpackError::Refused {
                entry: name.to_owned(),
                reason: Refusal::OwnerOverflow(id),
            })
    }

    fn ids(&self, header: &tar::Header, name: &str) -> Result<(Uid, Gid), UnpackError> {
        let uid = self.owner(header.uid().map_err(UnpackError::Read)?, name)?;
        let gid = self.owner(header.gid().map_err(UnpackError::Read)?, name)?;
        Ok((Uid::from_raw(uid), Gid::from_raw(gid)))
    }

    /// The directory fd of `parents`, creating missing directories (tars may
    /// omit them) owned by the shifted root, mode 0755.
    fn parent(&self, parents: &[&OsStr], name: &str) -> Result<OwnedFd, UnpackError> {
        let refuse_or = |errno: Errno, syscall| match path_refusal(errno) {
            Some(reason) => UnpackError::Refused {
                entry: name.to_owned(),
                reason,
            },
            None => UnpackError::Sys {
                entry: name.to_owned(),
                syscall,
                errno,
            },
        };
        if parents.is_empty() {
            return Self::dup(&self.root, name);
        }
        match open_dir_at(&self.root, &join(parents)) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(errno) => return Err(refuse_or(errno, "openat2")),
        }
        let mut dir = Self::dup(&self.root, name)?;
        for part in parents {
            let next = match open_dir_at(&dir, Path::new(part)) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) => {
                    match mkdirat(&dir, *part, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(refuse_or(errno, "mkdirat")),
                    }
                    let fd = open_dir_at(&dir, Path::new(part))
                        .map_err(|errno| refuse_or(errno, "openat2"))?;
                    let root = self.owner(0, name)?;
                    fchown(&fd, Some(Uid::from_raw(root)), Some(Gid::from_raw(root)))
                        .map_err(Self::sys(name, "fchown"))?;
                    // Not left to the umask: the box's users must traverse it.
                    fchmod(&fd, Mode::from_bits_truncate(0o755))
                        .map_err(Self::sys(name, "fchmod"))?;
                    fd
                }
                Err(errno) => return Err(refuse_or(errno, "openat2")),
            };
            dir = next;
        }
        Ok(dir)
    }

    /// Makes room for a new entry `last` in `parent`: a later tar entry
    /// replaces an earlier non-directory; a directory stays when the new
    /// entry is one too, and is never replaced by anything else.
    /// Returns whether a directory is already there.
    fn replace(
        &self,
        parent: &OwnedFd,
        last: &OsStr,
        name: &str,
        is_dir: bool,
    ) -> Result<bool, UnpackError> {
        match fstatat(parent, last, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(false),
            Err(errno) => Err(Self::sys(name, "fstatat")(errno)),
            Ok(stat)
                if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR =>
            {
                if is_dir {
                    Ok(true)
                } else {
                    Err(UnpackError::Refused {
                        entry: name.to_owned(),
                        reason: Refusal::ReplacesDirectory,
                    })
                }
            }
            Ok(_) => {
                unlinkat(parent, last, UnlinkatFlags::NoRemoveDir)
                    .map_err(Self::sys(name, "unlinkat"))?;
                Ok(false)
            }
        }
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        parent: &OwnedFd,
        last: &OsStr,
        name: &str,
    ) -> Result<(), UnpackError> {
        let size = entry.size();
        if self.stats.bytes.saturating_add(size) > self.options.max_bytes {
            return Err(UnpackError::TooLarge {
                limit: self.options.max_bytes,
            });
        }
        self.replace(parent, last, name, false)?;
        let how = OpenHow::new()
            .flags(
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
            )
            .mode(Mode::from_bits_truncate(0o600))
            .resolve(resolve());
        let fd = openat2(parent, last, how).map_err(Self::sys(name, "openat2"))?;
        let mut file = File::from(fd);
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buffer.len() as u64) as usize;
            let got = entry
                .read(&mut self.buffer[..want])
                .map_err(UnpackError::Read)?;
            if got == 0 {
                return Err(UnpackError::Read(std::io::ErrorKind::UnexpectedEof.into()));
            }
            file.write_all(&self.buffer[..got])
                .map_err(|source| UnpackError::Write {
                    entry: name.to_owned(),
                    source,
                })?;
            left -= got as u64;
        }
        self.stats.bytes += size;
        let header = entry.header();
        let (uid, gid) = self.ids(header, name)?;
        // chown before chmod: chown clears the set-id bits.
        fchown(&file, Some(uid), Some(gid)).map_err(Self::sys(name, "fchown"))?;
        let mode = header.mode().map_err(UnpackError::Read)? & 0o7777;
        fchmod(&file, Mode::from_bits_truncate(mode)).map_err(Self::sys(name, "fchmod"))?;
        let mtime = time(header.mtime().map_err(UnpackError::Read)?);
        futimens(&file, &mtime, &mtime).map_err(Self::sys(name, "futimens"))
    }

    /// Owns a directory now; its mode and mtime wait for the end.
    fn directory<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        name: &str,
        path: PathBuf,
        dir: OwnedFd,
    ) -> Result<(), UnpackError> {
        let header = entry.header();
        let (uid, gid) = self.ids(header, name)?;
        fchown(&dir, Some(uid), Some(gid)).map_err(Self::sys(name, "fchown"))?;
        self.dirs.push(PendingDir {
            path,
            mode: header.mode().map_err(UnpackError::Read)? & 0o7777,
            mtime: header.mtime().map_err(UnpackError::Read)?,
        });
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        parent: &OwnedFd,
        last: &OsStr,
        name: &str,
    ) -> Result<(), UnpackError> {
        // The target is stored as is: it is never followed while unpacking,
        // and inside the box it resolves against the box's own root.
        let target = link_target(entry, name)?;
        self.replace(parent, last, name, false)?;
        symlinkat(OsStr::from_bytes(&target), parent, last)
            .map_err(Self::sys(name, "symlinkat"))?;
        let header = entry.header();
        let (uid, gid) = self.ids(header, name)?;
        fchownat(
            parent,
            last,
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(Self::sys(name, "fchownat"))?;
        let mtime = time(header.mtime().map_err(UnpackError::Read)?);
        utimensat(
            parent,
            last,
            &mtime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(Self::sys(name, "utimensat"))
    }

    fn hardlink<R: Read>(
        &mut self,
        entry: &tar::Entry<R>,
        parent: &OwnedFd,
        last: &OsStr,
        name: &str,
    ) -> Result<(), UnpackError> {
        let refused = |reason| UnpackError::Refused {
            entry: name.to_owned(),
            reason,
        };
        let target = link_target(entry, name)?;
        let target_name = String::from_utf8_lossy(&target).into_owned();
        let on_target = |reason| {
            refused(Refusal::LinkTarget {
                target: target_name.clone(),
                reason: Box::new(reason),
            })
        };
        let parts = components(&target).map_err(on_target)?;
        let Some((target_last, target_parents)) = parts.split_last() else {
            return Err(on_target(Refusal::RootNotDirectory));
        };
        let target_parent = if target_parents.is_empty() {
            Self::dup(&self.root, name)?
        } else {
            open_dir_at(&self.root, &join(target_parents)).map_err(|errno| {
                match (errno, path_refusal(errno)) {
                    (Errno::ENOENT, _) => refused(Refusal::LinkTargetMissing(target_name.clone())),
                    (_, Some(reason)) => on_target(reason),
                    (errno, None) => Self::sys(name, "openat2")(errno),
                }
            })?
        };
        self.replace(parent, last, name, false)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        linkat(&target_parent, *target_last, parent, last, AtFlags::empty()).map_err(|errno| {
            match errno {
                Errno::ENOENT => refused(Refusal::LinkTargetMissing(target_name.clone())),
                errno => Self::sys(name, "linkat")(errno),
            }
        })
    }

    /// `.wh..wh..opq` makes `parent` opaque; `.wh.NAME` becomes NAME as a
    /// 0:0 character device, overlayfs's whiteout.
    fn whiteout(
        &mut self,
        parent: &OwnedFd,
        name: &str,
        last: &str,
        hidden: &str,
    ) -> Result<(), UnpackError> {
        self.stats.whiteouts += 1;
        if last == WHITEOUT_OPAQUE {
            // Both marks: a mount made in a user namespace (`userxattr`, as
            // boxes mount their root) reads only the user.* one.
            let dir = File::from(Self::dup(parent, name)?);
            return [OVERLAY_OPAQUE_XATTR, OVERLAY_OPAQUE_USER_XATTR]
                .iter()
                .try_for_each(|xattr| dir.set_xattr(xattr, b"y"))
                .map_err(|source| UnpackError::Write {
                    entry: name.to_owned(),
                    source,
                });
        }
        if last.starts_with(WHITEOUT_META_PREFIX) {
            return Ok(()); // AUFS bookkeeping (hardlink dirs), nothing to show
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(UnpackError::Refused {
                entry: name.to_owned(),
                reason: Refusal::BadWhiteout(hidden.to_owned()),
            });
        }
        let hidden = OsStr::new(hidden);
        self.replace(parent, hidden, name, false)?;
        mknodat(parent, hidden, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(Self::sys(name, "mknodat"))
    }

    /// Directory modes and mtimes, deepest first, each through a fresh fd
    /// opened without following symlinks.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        for dir in self.dirs.drain(..).rev() {
            let name = dir.path.to_string_lossy().into_owned();
            let fd = if dir.path.as_os_str().is_empty() {
                Self::dup(&self.root, &name)?
            } else {
                open_dir_at(&self.root, &dir.path).map_err(Self::sys(&name, "openat2"))?
            };
            fchmod(&fd, Mode::from_bits_truncate(dir.mode)).map_err(Self::sys(&name, "fchmod"))?;
            let mtime = time(dir.mtime);
            futimens(&fd, &mtime, &mtime).map_err(Self::sys(&name, "futimens"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_drop_dots_and_refuse_escapes() {
        let parts = components(b"./a//b/./c").unwrap();
        assert_eq!(parts, [OsStr::new("a"), OsStr::new("b"), OsStr::new("c")]);
        assert!(components(b"./").unwrap().is_empty());
        assert_eq!(components(b"/etc/passwd"), Err(Refusal::Absolute));
        assert_eq!(components(b"a/../../x"), Err(Refusal::DotDot));
        assert_eq!(components(b".."), Err(Refusal::DotDot));
    }
}

//! The narrow door to the kernel that steps go through.
//!
//! Steps never call the kernel directly: they call a [`Kernel`]. The box
//! helper passes [`LiveKernel`], which makes the real system calls and keeps a
//! log of them (that log is what the page shows as "the syscalls made"), and
//! unit tests pass [`RecordingKernel`], which makes none, so a step's logic is
//! tested without root.

use damda_protocol::{NsKind, StepError};
use nix::errno::Errno;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// A system call the kernel refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{syscall} failed: {errno_name} ({errno}): {description}")]
pub struct SysError {
    /// The call with its arguments, as the log shows it.
    pub syscall: String,
    pub errno: i32,
    pub errno_name: String,
    pub description: String,
}

impl SysError {
    pub fn new(syscall: impl Into<String>, errno: Errno) -> Self {
        SysError {
            syscall: syscall.into(),
            errno: errno as i32,
            errno_name: format!("{errno:?}"),
            description: errno.desc().to_lowercase(),
        }
    }

    pub fn to_step_error(&self) -> StepError {
        StepError {
            syscall: self.syscall.clone(),
            errno: self.errno,
            errno_name: self.errno_name.clone(),
            message: self.to_string(),
        }
    }
}

/// The calls steps may make. Each takes what the syscall takes and nothing
/// more, so the log reads like strace.
pub trait Kernel {
    fn chroot(&self, path: &Path) -> Result<(), SysError>;
    fn chdir(&self, path: &Path) -> Result<(), SysError>;
    fn unshare(&self, flags: CloneFlags) -> Result<(), SysError>;
    fn sethostname(&self, name: &str) -> Result<(), SysError>;
    fn mount(&self, mount: &Mount) -> Result<(), SysError>;
    /// fork(2), continuing as the child: the parent only waits for the child
    /// and exits with it (a PID namespace takes effect in children only).
    fn fork_into_child(&self) -> Result<(), SysError>;
    fn setgroups(&self, groups: &[u32]) -> Result<(), SysError>;
    fn setresgid(&self, gid: u32) -> Result<(), SysError>;
    fn setresuid(&self, uid: u32) -> Result<(), SysError>;
    /// One rtnetlink request on the caller's own network namespace.
    fn link(&self, op: &LinkOp) -> Result<(), SysError>;
    /// Writes a sysctl of the caller's own namespaces (/proc/sys/NAME with
    /// dots as slashes).
    fn sysctl(&self, name: &str, value: &str) -> Result<(), SysError>;
    /// pivot_root(2): the mount at `new_root` becomes the namespace's root
    /// and the old root is mounted at `put_old`.
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), SysError>;
    /// umount2(path, MNT_DETACH).
    fn detach_mount(&self, path: &Path) -> Result<(), SysError>;
    /// fork(2) and execve(2) of `argv` as a child this process reaps, its
    /// standard streams on /dev/null.
    fn spawn(&self, argv: &[String]) -> Result<(), SysError>;
}

fn describe_pivot_root(new_root: &Path, put_old: &Path) -> String {
    format!("pivot_root({new_root:?}, {put_old:?})")
}
fn describe_detach(path: &Path) -> String {
    format!("umount2({path:?}, MNT_DETACH)")
}
fn describe_spawn(argv: &[String]) -> String {
    format!(
        "fork() + execve({:?}, {argv:?})",
        argv.first().map_or("", String::as_str)
    )
}

fn sysctl_path(name: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(name.replace('.', "/"))
}

fn describe_sysctl(name: &str, value: &str) -> String {
    format!("write({:?}, {value:?})", sysctl_path(name))
}

/// The rtnetlink requests a box makes on its own links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOp {
    Up {
        name: String,
    },
    /// The link must be down: a moved veth end is.
    Rename {
        from: String,
        to: String,
    },
    AddAddress {
        name: String,
        address: std::net::Ipv4Addr,
        prefix: u8,
    },
    DefaultRoute {
        gateway: std::net::Ipv4Addr,
    },
}

impl LinkOp {
    fn describe(&self) -> String {
        match self {
            LinkOp::Up { name } => format!("RTM_NEWLINK({name}, IFF_UP)"),
            LinkOp::Rename { from, to } => format!("RTM_NEWLINK({from}, IFLA_IFNAME={to:?})"),
            LinkOp::AddAddress {
                name,
                address,
                prefix,
            } => format!("RTM_NEWADDR({address}/{prefix}, dev {name})"),
            LinkOp::DefaultRoute { gateway } => format!("RTM_NEWROUTE(default via {gateway})"),
        }
    }

    fn make(&self) -> nix::Result<()> {
        use crate::netlink::{Netlink, NetlinkError};
        let errno = |err: NetlinkError| match err {
            NetlinkError::Kernel { errno, .. } | NetlinkError::Socket { errno, .. } => errno,
            NetlinkError::Decode { .. } => Errno::EIO,
        };
        let mut netlink = Netlink::open().map_err(errno)?;
        let mut index = |name: &str| {
            netlink
                .link_index(name)
                .map_err(errno)?
                .ok_or(Errno::ENODEV)
        };
        match self {
            LinkOp::Up { name } => {
                let link = index(name)?;
                netlink.set_up(link)
            }
            LinkOp::Rename { from, to } => {
                let link = index(from)?;
                netlink.rename(link, to)
            }
            LinkOp::AddAddress {
                name,
                address,
                prefix,
            } => {
                let link = index(name)?;
                netlink.add_address(link, *address, *prefix)
            }
            LinkOp::DefaultRoute { gateway } => netlink.add_default_route(*gateway),
        }
        .map_err(errno)
    }
}

/// The arguments of one mount(2) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: Option<PathBuf>,
    pub target: PathBuf,
    pub fstype: Option<&'static str>,
    pub flags: MsFlags,
    /// The filesystem's options (overlay's lowerdir=…).
    pub data: Option<String>,
}

impl Mount {
    fn describe(&self) -> String {
        const NAMES: [(MsFlags, &str); 6] = [
            (MsFlags::MS_BIND, "MS_BIND"),
            (MsFlags::MS_REC, "MS_REC"),
            (MsFlags::MS_PRIVATE, "MS_PRIVATE"),
            (MsFlags::MS_NOSUID, "MS_NOSUID"),
            (MsFlags::MS_NODEV, "MS_NODEV"),
            (MsFlags::MS_NOEXEC, "MS_NOEXEC"),
        ];
        let flags: Vec<&str> = NAMES
            .iter()
            .filter(|(f, _)| self.flags.contains(*f))
            .map(|(_, n)| *n)
            .collect();
        let quoted = |p: &Option<PathBuf>| p.as_ref().map_or("NULL".into(), |p| format!("{p:?}"));
        format!(
            "mount({}, {:?}, {}, {}, {})",
            quoted(&self.source),
            self.target,
            self.fstype.map_or("NULL".into(), |t| format!("{t:?}")),
            if flags.is_empty() {
                "0".into()
            } else {
                flags.join("|")
            },
            self.data
                .as_ref()
                .map_or("NULL".into(), |d| format!("{d:?}"))
        )
    }
}

/// The clone flag that makes a new namespace of `kind`, and its C name.
pub fn ns_flag(kind: NsKind) -> (CloneFlags, &'static str) {
    match kind {
        NsKind::Uts => (CloneFlags::CLONE_NEWUTS, "CLONE_NEWUTS"),
        NsKind::Pid => (CloneFlags::CLONE_NEWPID, "CLONE_NEWPID"),
        NsKind::Mnt => (CloneFlags::CLONE_NEWNS, "CLONE_NEWNS"),
        NsKind::Ipc => (CloneFlags::CLONE_NEWIPC, "CLONE_NEWIPC"),
        NsKind::Net => (CloneFlags::CLONE_NEWNET, "CLONE_NEWNET"),
        NsKind::User => (CloneFlags::CLONE_NEWUSER, "CLONE_NEWUSER"),
        NsKind::Cgroup => (CloneFlags::CLONE_NEWCGROUP, "CLONE_NEWCGROUP"),
        NsKind::Time => (
            CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
            "CLONE_NEWTIME",
        ),
    }
}

/// Renders clone flags as the C constants a man page uses.
pub fn clone_flag_names(flags: CloneFlags) -> String {
    let names: Vec<&str> = NsKind::ALL
        .into_iter()
        .map(ns_flag)
        .filter(|(flag, _)| flags.contains(*flag))
        .map(|(_, name)| name)
        .collect();
    if names.is_empty() {
        "0".to_owned()
    } else {
        names.join("|")
    }
}

fn describe_chroot(path: &Path) -> String {
    format!("chroot({:?})", path)
}
fn describe_chdir(path: &Path) -> String {
    format!("chdir({:?})", path)
}
fn describe_unshare(flags: CloneFlags) -> String {
    format!("unshare({})", clone_flag_names(flags))
}
fn describe_sethostname(name: &str) -> String {
    format!("sethostname({name:?}, {})", name.len())
}
fn describe_setgroups(groups: &[u32]) -> String {
    format!("setgroups({}, {groups:?})", groups.len())
}
fn describe_setresgid(gid: u32) -> String {
    format!("setresgid({gid}, {gid}, {gid})")
}
fn describe_setresuid(uid: u32) -> String {
    format!("setresuid({uid}, {uid}, {uid})")
}
const DESCRIBE_FORK: &str = "fork()";

/// Makes the real calls, and logs each one with its result.
#[derive(Default)]
pub struct LiveKernel {
    log: RefCell<Vec<String>>,
}

impl LiveKernel {
    /// The calls made since the last take, as `call(args) = 0` lines.
    pub fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut self.log.borrow_mut())
    }

    fn logged<T>(&self, call: String, result: nix::Result<T>) -> Result<T, SysError> {
        match result {
            Ok(value) => {
                self.log.borrow_mut().push(format!("{call} = 0"));
                Ok(value)
            }
            Err(errno) => {
                self.log
                    .borrow_mut()
                    .push(format!("{call} = -1 {errno:?} ({})", errno.desc()));
                Err(SysError::new(call, errno))
            }
        }
    }
}

impl Kernel for LiveKernel {
    fn chroot(&self, path: &Path) -> Result<(), SysError> {
        self.logged(describe_chroot(path), nix::unistd::chroot(path))
    }
    fn chdir(&self, path: &Path) -> Result<(), SysError> {
        self.logged(describe_chdir(path), nix::unistd::chdir(path))
    }
    fn unshare(&self, flags: CloneFlags) -> Result<(), SysError> {
        self.logged(describe_unshare(flags), nix::sched::unshare(flags))
    }
    fn sethostname(&self, name: &str) -> Result<(), SysError> {
        self.logged(describe_sethostname(name), nix::unistd::sethostname(name))
    }
    fn mount(&self, mount: &Mount) -> Result<(), SysError> {
        let result = nix::mount::mount(
            mount.source.as_deref(),
            &mount.target,
            mount.fstype,
            mount.flags,
            mount.data.as_deref(),
        );
        self.logged(mount.describe(), result)
    }
    fn fork_into_child(&self) -> Result<(), SysError> {
        use nix::unistd::{fork, ForkResult};
        let parent = nix::unistd::getpid();
        // SAFETY: the helper is single-threaded, so the child may do anything.
        match unsafe { fork() } {
            Err(errno) => self.logged(DESCRIBE_FORK.into(), Err(errno)),
            Ok(ForkResult::Parent { child }) => crate::helper::child::wait_and_exit(child),
            Ok(ForkResult::Child) => {
                // The child dies with the helper that forked it, as the helper
                // dies with the server. PDEATHSIG is not inherited.
                // SAFETY: plain prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
                // Inside a new PID namespace the parent is out of sight (0).
                let ppid = nix::unistd::getppid();
                if ppid != parent && ppid.as_raw() != 0 {
                    std::process::exit(1);
                }
                self.log
                    .borrow_mut()
                    .push(format!("{DESCRIBE_FORK} = child"));
                Ok(())
            }
        }
    }
    fn setgroups(&self, groups: &[u32]) -> Result<(), SysError> {
        let gids: Vec<nix::unistd::Gid> = groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        self.logged(describe_setgroups(groups), nix::unistd::setgroups(&gids))
    }
    fn setresgid(&self, gid: u32) -> Result<(), SysError> {
        let g = nix::unistd::Gid::from_raw(gid);
        self.logged(describe_setresgid(gid), nix::unistd::setresgid(g, g, g))
    }
    fn setresuid(&self, uid: u32) -> Result<(), SysError> {
        let u = nix::unistd::Uid::from_raw(uid);
        self.logged(describe_setresuid(uid), nix::unistd::setresuid(u, u, u))
    }
    fn link(&self, op: &LinkOp) -> Result<(), SysError> {
        self.logged(op.describe(), op.make())
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), SysError> {
        self.logged(
            describe_pivot_root(new_root, put_old),
            nix::unistd::pivot_root(new_root, put_old),
        )
    }
    fn detach_mount(&self, path: &Path) -> Result<(), SysError> {
        self.logged(
            describe_detach(path),
            nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH),
        )
    }
    fn spawn(&self, argv: &[String]) -> Result<(), SysError> {
        self.logged(
            describe_spawn(argv),
            crate::helper::child::spawn_service(argv),
        )
    }
    fn sysctl(&self, name: &str, value: &str) -> Result<(), SysError> {
        let written = std::fs::write(sysctl_path(name), value)
            .map_err(|err| Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO)));
        self.logged(describe_sysctl(name, value), written)
    }
}

/// A call the recording double saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Chroot(PathBuf),
    Chdir(PathBuf),
    Unshare(CloneFlags),
    Sethostname(String),
    Mount(Mount),
    Fork,
    Setgroups(Vec<u32>),
    Setresgid(u32),
    Setresuid(u32),
    Link(LinkOp),
    Sysctl(String, String),
    PivotRoot(PathBuf, PathBuf),
    DetachMount(PathBuf),
    Spawn(Vec<String>),
}

/// Records calls instead of making them; can be told to fail one call.
#[derive(Default)]
pub struct RecordingKernel {
    pub calls: RefCell<Vec<Call>>,
    /// The first call whose description starts with this fails with the errno.
    pub fail: Option<(&'static str, Errno)>,
}

impl RecordingKernel {
    pub fn failing(prefix: &'static str, errno: Errno) -> Self {
        RecordingKernel {
            calls: RefCell::default(),
            fail: Some((prefix, errno)),
        }
    }

    fn record(&self, call: Call, description: String) -> Result<(), SysError> {
        self.calls.borrow_mut().push(call);
        match self.fail {
            Some((prefix, errno)) if description.starts_with(prefix) => {
                Err(SysError::new(description, errno))
            }
            _ => Ok(()),
        }
    }
}

impl Kernel for RecordingKernel {
    fn chroot(&self, path: &Path) -> Result<(), SysError> {
        self.record(Call::Chroot(path.to_owned()), describe_chroot(path))
    }
    fn chdir(&self, path: &Path) -> Result<(), SysError> {
        self.record(Call::Chdir(path.to_owned()), describe_chdir(path))
    }
    fn unshare(&self, flags: CloneFlags) -> Result<(), SysError> {
        self.record(Call::Unshare(flags), describe_unshare(flags))
    }
    fn sethostname(&self, name: &str) -> Result<(), SysError> {
        self.record(
            Call::Sethostname(name.to_owned()),
            describe_sethostname(name),
        )
    }
    fn mount(&self, mount: &Mount) -> Result<(), SysError> {
        self.record(Call::Mount(mount.clone()), mount.describe())
    }
    fn fork_into_child(&self) -> Result<(), SysError> {
        self.record(Call::Fork, DESCRIBE_FORK.into())
    }
    fn setgroups(&self, groups: &[u32]) -> Result<(), SysError> {
        self.record(Call::Setgroups(groups.to_vec()), describe_setgroups(groups))
    }
    fn setresgid(&self, gid: u32) -> Result<(), SysError> {
        self.record(Call::Setresgid(gid), describe_setresgid(gid))
    }
    fn setresuid(&self, uid: u32) -> Result<(), SysError> {
        self.record(Call::Setresuid(uid), describe_setresuid(uid))
    }
    fn link(&self, op: &LinkOp) -> Result<(), SysError> {
        self.record(Call::Link(op.clone()), op.describe())
    }
    fn sysctl(&self, name: &str, value: &str) -> Result<(), SysError> {
        self.record(
            Call::Sysctl(name.to_owned(), value.to_owned()),
            describe_sysctl(name, value),
        )
    }
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<(), SysError> {
        self.record(
            Call::PivotRoot(new_root.to_owned(), put_old.to_owned()),
            describe_pivot_root(new_root, put_old),
        )
    }
    fn detach_mount(&self, path: &Path) -> Result<(), SysError> {
        self.record(Call::DetachMount(path.to_owned()), describe_detach(path))
    }
    fn spawn(&self, argv: &[String]) -> Result<(), SysError> {
        self.record(Call::Spawn(argv.to_vec()), describe_spawn(argv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_read_like_the_man_page() {
        assert_eq!(clone_flag_names(CloneFlags::CLONE_NEWUTS), "CLONE_NEWUTS");
        assert_eq!(
            clone_flag_names(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS),
            "CLONE_NEWNS|CLONE_NEWUSER"
        );
        assert_eq!(clone_flag_names(CloneFlags::empty()), "0");
    }

    #[test]
    fn sys_error_carries_call_and_errno() {
        let err = SysError::new("chroot(\"/nope\")", Errno::ENOENT);
        assert_eq!(err.errno, 2);
        assert_eq!(err.errno_name, "ENOENT");
        let step = err.to_step_error();
        assert!(step
            .message
            .contains("chroot(\"/nope\") failed: ENOENT (2)"));
    }

    #[test]
    fn mounts_read_like_strace() {
        let proc_mount = Mount {
            source: Some("proc".into()),
            target: "/proc".into(),
            fstype: Some("proc"),
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            data: None,
        };
        assert_eq!(
            proc_mount.describe(),
            r#"mount("proc", "/proc", "proc", MS_NOSUID|MS_NODEV|MS_NOEXEC, NULL)"#
        );
        let private = Mount {
            source: None,
            target: "/".into(),
            fstype: None,
            flags: MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            data: None,
        };
        assert_eq!(
            private.describe(),
            r#"mount(NULL, "/", NULL, MS_REC|MS_PRIVATE, NULL)"#
        );
    }

    #[test]
    fn recording_kernel_fails_only_the_named_call() {
        let kernel = RecordingKernel::failing("sethostname", Errno::EPERM);
        assert!(kernel.unshare(CloneFlags::CLONE_NEWUTS).is_ok());
        let err = kernel.sethostname("box").unwrap_err();
        assert_eq!(err.errno_name, "EPERM");
        assert_eq!(kernel.calls.borrow().len(), 2);
    }
}

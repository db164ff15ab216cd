//! `__box-enter PID COMMAND`: runs one shell command inside a box, as
//! `nsenter -t PID -a` would, for the page's terminal. A fresh single-threaded
//! process (setns refuses a multi-threaded caller for some namespaces), with
//! only stdio open.
//!
//! It opens the box's namespace files and root first, joins the user
//! namespace (when the box has its own) and then the others, forks so the
//! child is in the box's PID namespace, and in the child enters the box's
//! root, drops every capability, sets no_new_privs and execs /bin/sh.

use damda_protocol::NsKind;
use nix::sched::{setns, CloneFlags};
use std::fs::File;
use std::os::fd::AsFd;

pub const ENTER_ARG: &str = "__box-enter";

fn fail(what: &str, err: impl std::fmt::Display) -> ! {
    eprintln!("damda: {what}: {err}");
    std::process::exit(125);
}

fn flag(kind: NsKind) -> CloneFlags {
    match kind {
        NsKind::Uts => CloneFlags::CLONE_NEWUTS,
        NsKind::Pid => CloneFlags::CLONE_NEWPID,
        NsKind::Mnt => CloneFlags::CLONE_NEWNS,
        NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
        NsKind::Net => CloneFlags::CLONE_NEWNET,
        NsKind::User => CloneFlags::CLONE_NEWUSER,
        NsKind::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        NsKind::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// Drops every capability, for good: the bounding set, then the sets.
fn drop_capabilities() {
    for cap in 0..=libc::c_ulong::from(63u8) {
        // SAFETY: plain prctl; EINVAL past the last capability is expected.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: the v3 header with two data words, as capset(2) defines.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) } < 0 {
        fail("capset", std::io::Error::last_os_error());
    }
    // SAFETY: plain prctl.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        fail("prctl(PR_SET_NO_NEW_PRIVS)", std::io::Error::last_os_error());
    }
}

pub fn run(pid: &str, command: &str) -> ! {
    super::child::name_process("damda-enter");
    let pid: u32 = pid.parse().unwrap_or_else(|e| fail("pid", e));
    let open = |path: String| File::open(&path).unwrap_or_else(|e| fail(&path, e));
    let mut joins = Vec::new();
    for kind in NsKind::ALL {
        let name = kind.proc_name();
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{name}"));
        let ours = std::fs::read_link(format!("/proc/self/ns/{name}"));
        if theirs.is_ok() && theirs.ok() != ours.ok() {
            joins.push((kind, open(format!("/proc/{pid}/ns/{name}"))));
        }
    }
    let root = open(format!("/proc/{pid}/root"));
    // The user namespace first: it grants the rights to join the others.
    joins.sort_by_key(|(kind, _)| *kind != NsKind::User);
    for (kind, file) in &joins {
        if let Err(errno) = setns(file.as_fd(), flag(*kind)) {
            fail(&format!("setns({})", kind.proc_name()), errno);
        }
    }
    // SAFETY: single-threaded; the child only execs.
    match unsafe { nix::unistd::fork() } {
        Err(errno) => fail("fork", errno),
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            // Ctrl-C reaches the whole group; only the command should die of it.
            // SAFETY: setting a signal disposition.
            unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
            super::child::wait_and_exit(child)
        }
        Ok(nix::unistd::ForkResult::Child) => {}
    }
    // SAFETY: plain prctl: the command dies with the process that forked it.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if joins.iter().any(|(kind, _)| *kind == NsKind::User) {
        // Host root is unmapped in the box's user namespace: become the
        // box's root (uid 0 inside), as `nsenter -S 0 -G 0` does.
        let root_gid = nix::unistd::Gid::from_raw(0);
        let root_uid = nix::unistd::Uid::from_raw(0);
        if let Err(errno) = nix::unistd::setgroups(&[])
            .and_then(|()| nix::unistd::setresgid(root_gid, root_gid, root_gid))
            .and_then(|()| nix::unistd::setresuid(root_uid, root_uid, root_uid))
        {
            fail("becoming the box's root", errno);
        }
    }
    if let Err(errno) = nix::unistd::fchdir(root.as_fd()) {
        fail("fchdir(box root)", errno);
    }
    if let Err(errno) = nix::unistd::chroot(".") {
        fail("chroot", errno);
    }
    if let Err(errno) = nix::unistd::chdir("/") {
        fail("chdir", errno);
    }
    drop(root);
    drop(joins);
    drop_capabilities();
    let err = std::os::unix::process::CommandExt::exec(
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(command)
            .env_clear()
            .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
            .env("HOME", "/root")
            .env("TERM", "dumb"),
    );
    fail("exec /bin/sh", err)
}

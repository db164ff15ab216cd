//! `damda doctor`: checks what damda needs on this host and says in plain
//! words what is missing.

use crate::paths::Paths;
use std::fs;
use std::path::Path;

/// One check's outcome.
pub struct Finding {
    pub ok: bool,
    /// Needed for boxes to work; other findings only limit some lessons or tests.
    pub required: bool,
    pub what: String,
    pub detail: String,
}

fn finding(ok: bool, required: bool, what: &str, detail: String) -> Finding {
    Finding {
        ok,
        required,
        what: what.to_owned(),
        detail,
    }
}

fn on_path(tool: &str) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin:/usr/sbin:/sbin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
        .map(|found| found.display().to_string())
}

pub fn diagnose(paths: &Paths) -> Vec<Finding> {
    let mut findings = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    findings.push(finding(
        root,
        true,
        "root",
        if root {
            "running as root".into()
        } else {
            "boxes need root (namespaces, chroot, cgroups): run `sudo damda …`".into()
        },
    ));
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    findings.push(finding(true, false, "kernel", kernel.trim().to_owned()));
    for ns in ["uts", "pid", "mnt", "ipc", "net", "user", "cgroup", "time"] {
        let present = Path::new(&format!("/proc/self/ns/{ns}")).exists();
        findings.push(finding(
            present,
            true,
            &format!("{ns} namespace"),
            if present {
                "supported".into()
            } else {
                "this kernel lacks it".into()
            },
        ));
    }
    let max_user = fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    let users_ok = max_user.trim().parse::<u64>().is_ok_and(|n| n > 0);
    findings.push(finding(
        users_ok,
        false,
        "user namespaces allowed",
        format!("/proc/sys/user/max_user_namespaces = {}", max_user.trim()),
    ));
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = filesystems.lines().any(|l| l.ends_with("overlay"));
    findings.push(finding(
        overlay,
        false,
        "overlayfs",
        if overlay {
            "available".into()
        } else {
            "not in /proc/filesystems (modprobe overlay)".into()
        },
    ));
    let layout = crate::cgroups::Layout::detect();
    findings.push(finding(
        layout.is_ok(),
        false,
        "cgroups",
        match layout {
            Ok(layout) => layout.describe(),
            Err(err) => format!("{err}: the cgroups step cannot run"),
        },
    ));
    let rootfs = paths.rootfs().join("bin/busybox");
    findings.push(finding(
        rootfs.exists(),
        true,
        "default rootfs",
        if rootfs.exists() {
            paths.rootfs().display().to_string()
        } else {
            format!(
                "{} missing: run scripts/setup.sh (or `damda prepare`)",
                rootfs.display()
            )
        },
    ));
    let page = paths.web.join("index.html");
    findings.push(finding(
        page.exists(),
        false,
        "web page",
        if page.exists() {
            paths.web.display().to_string()
        } else {
            format!(
                "{} missing: run scripts/setup.sh (trunk build)",
                page.display()
            )
        },
    ));
    for (tool, why) in [
        ("busybox", "the rootfs is built from it"),
        ("lsns", "cross-checks of namespaces"),
        ("nsenter", "redoing steps by hand"),
        ("unshare", "redoing steps by hand"),
        ("ip", "network lessons"),
        ("nft", "network lessons (NAT)"),
        ("chromium", "browser tests"),
        ("chromedriver", "browser tests"),
    ] {
        let found = on_path(tool);
        findings.push(finding(
            found.is_some(),
            false,
            tool,
            found.unwrap_or_else(|| {
                format!("not found; needed for {why} (scripts/setup.sh installs it)")
            }),
        ));
    }
    findings
}

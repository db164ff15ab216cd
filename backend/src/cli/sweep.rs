//! `damda sweep`: removes what dead damda instances left, by their ledgers.
//! `damda sweep --check` lists damda objects still on the host (the test
//! suite's leak check) without touching them.

use crate::ledger::{sweep_dead_owners, SweepReport};
use std::fs;
use std::path::Path;

/// The dead instances' ledgers, then their places on the bridge network.
pub fn sweep(ledger_dir: &Path, network: &crate::network::NetworkConfig) -> SweepReport {
    let mut report = sweep_dead_owners(ledger_dir);
    let (removed, errors) = crate::network::sweep(network);
    report.removed.extend(removed);
    report.errors.extend(errors);
    report
}

/// Box helpers: processes started from damda's sealed helper image.
/// Box helpers, and qemu booting one of damda's initramfs images (the
/// comparison's or a test VM's): both die with their parent, so one still
/// here is a leak.
fn damda_processes() -> Vec<String> {
    let Ok(listing) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    listing
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            if exe.to_string_lossy().contains("memfd:damda-helper") {
                return Some(format!("process {pid} (box helper)"));
            }
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            damda_vm(&cmdline).map(|initrd| format!("process {pid} (qemu booting {initrd})"))
        })
        .collect()
}

/// The initramfs a qemu command line boots, if it is damda's.
fn damda_vm(cmdline: &[u8]) -> Option<String> {
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let program = Path::new(args.first()?).file_name()?.to_string_lossy();
    if !program.starts_with("qemu-system") {
        return None;
    }
    let initrd = args.windows(2).find(|pair| pair[0] == "-initrd")?[1].clone();
    initrd.contains("damda").then_some(initrd)
}

fn mounts() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|mount_point| mount_point.contains("damda"))
        .map(|mount_point| format!("mount {mount_point}"))
        .collect()
}

fn links() -> Vec<String> {
    fs::read_dir("/sys/class/net")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("damda"))
        .map(|name| format!("link {name}"))
        .collect()
}

fn cgroups(dir: &Path, depth: usize, found: &mut Vec<String>) {
    if depth == 0 {
        return;
    }
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if !kind.is_dir() {
            continue;
        }
        if entry.file_name().to_string_lossy().starts_with("damda") {
            found.push(format!("cgroup {}", entry.path().display()));
        } else {
            cgroups(&entry.path(), depth - 1, found);
        }
    }
}

/// Every damda-named object on the host, whoever made it.
pub fn leftovers() -> Vec<String> {
    let mut found = damda_processes();
    found.extend(mounts());
    found.extend(links());
    cgroups(Path::new("/sys/fs/cgroup"), 5, &mut found);
    found.extend(crate::network::leftovers(
        &crate::network::NetworkConfig::default(),
    ));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damdas_vms_are_known_by_their_initramfs() {
        let cmdline = |args: &[&str]| args.join("\0").into_bytes();
        let compare = cmdline(&[
            "qemu-system-x86_64",
            "-M",
            "q35",
            "-initrd",
            "/srv/checkout/data/vm/damda-compare-initrd.gz",
        ]);
        assert_eq!(
            damda_vm(&compare).as_deref(),
            Some("/srv/checkout/data/vm/damda-compare-initrd.gz")
        );
        let test_vm = cmdline(&[
            "/usr/bin/qemu-system-x86_64",
            "-initrd",
            "/tmp/damda-vm-7-ab/initrd.gz",
        ]);
        assert!(damda_vm(&test_vm).is_some());
        let someone_elses = cmdline(&["qemu-system-x86_64", "-initrd", "/boot/initrd.img"]);
        assert_eq!(damda_vm(&someone_elses), None);
        let not_qemu = cmdline(&["cat", "-initrd", "/tmp/damda-vm/initrd.gz"]);
        assert_eq!(damda_vm(&not_qemu), None);
    }
}

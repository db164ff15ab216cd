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
fn helper_processes() -> Vec<String> {
    let Ok(listing) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    listing
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let exe = fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            exe.to_string_lossy()
                .contains("memfd:damda-helper")
                .then(|| format!("process {pid} (box helper)"))
        })
        .collect()
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
    let mut found = helper_processes();
    found.extend(mounts());
    found.extend(links());
    cgroups(Path::new("/sys/fs/cgroup"), 5, &mut found);
    found.extend(crate::network::leftovers(
        &crate::network::NetworkConfig::default(),
    ));
    found
}

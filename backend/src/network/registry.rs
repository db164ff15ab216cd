//! What every damda instance on this host has attached to the shared bridge.
//!
//! The bridge, the nftables table and ip_forward are host-wide, so two
//! servers (or two test runs with their own data directories) share them.
//! Their record lives in one host-wide directory, not in an instance's
//! ledger: a lease per box address, written before the box's veth pair is
//! made, and the host settings' old values, written before they change. All
//! changes happen under an exclusive flock on `lock`, so two instances never
//! take the same address, port or name.

use super::NetworkError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Where the record lives; on tmpfs, so a reboot (which removes the links
/// and rules too) forgets it.
pub const DEFAULT_DIR: &str = "/run/damda/network";

/// One box on the bridge.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The instance that owns the box: its pid and start time.
    pub owner_pid: u32,
    pub owner_start: u64,
    pub box_id: String,
    pub address: Ipv4Addr,
    /// The host end of the veth pair, on the bridge.
    pub host_veth: String,
    /// The box's end before it is renamed eth0 inside.
    pub peer: String,
    /// Forwarded to the box's port 80.
    pub host_port: u16,
}

impl Lease {
    pub fn owner_alive(&self) -> bool {
        crate::ledger::process_start_time(self.owner_pid) == Some(self.owner_start)
    }
}

/// The host directory and the lock held while it changes.
pub struct Registry {
    dir: PathBuf,
}

/// Held while the shared network changes; released on drop.
pub struct Locked<'a> {
    registry: &'a Registry,
    _lock: fs::File,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError {
    let path = path.to_owned();
    move |source| NetworkError::Io {
        action,
        path,
        source,
    }
}

impl Registry {
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Registry { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn leases_dir(&self) -> PathBuf {
        self.dir.join("leases")
    }

    fn settings_path(&self) -> PathBuf {
        self.dir.join("host-settings.json")
    }

    /// Takes the lock, waiting for another instance to finish.
    pub fn lock(&self) -> Result<Locked<'_>, NetworkError> {
        let leases = self.leases_dir();
        fs::create_dir_all(&leases).map_err(io("creating", &leases))?;
        let path = self.dir.join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("opening", &path))?;
        // SAFETY: flock on an fd this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io("flock", &path)(std::io::Error::last_os_error()));
        }
        Ok(Locked {
            registry: self,
            _lock: file,
        })
    }

    /// Whatever is recorded, without the lock (for views and leak checks).
    pub fn leases(&self) -> Vec<Lease> {
        let mut leases: Vec<Lease> = fs::read_dir(self.leases_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| serde_json::from_slice(&fs::read(entry.path()).ok()?).ok())
            .collect();
        leases.sort_by_key(|lease| lease.address);
        leases
    }

    /// The host settings damda changed, with the values it found.
    pub fn recorded_settings(&self) -> BTreeMap<String, String> {
        fs::read(self.settings_path())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Files left in the directory: what a leak check reports.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found: Vec<String> = self
            .leases()
            .iter()
            .map(|l| format!("network lease {} ({})", l.address, l.host_veth))
            .collect();
        if self.settings_path().exists() {
            found.push(format!(
                "host settings record {}",
                self.settings_path().display()
            ));
        }
        found
    }
}

impl Locked<'_> {
    pub fn leases(&self) -> Vec<Lease> {
        self.registry.leases()
    }

    fn lease_path(&self, address: Ipv4Addr) -> PathBuf {
        self.registry.leases_dir().join(format!("{address}.json"))
    }

    /// Records a lease; refuses an address already taken.
    pub fn record(&self, lease: &Lease) -> Result<(), NetworkError> {
        use std::io::Write;
        let path = self.lease_path(lease.address);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io("creating", &path))?;
        let json = serde_json::to_vec_pretty(lease).expect("a lease serialises");
        file.write_all(&json).map_err(io("writing", &path))
    }

    pub fn forget(&self, address: Ipv4Addr) -> Result<(), NetworkError> {
        let path = self.lease_path(address);
        match fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(io("removing", &path)(err))
            }
            _ => Ok(()),
        }
    }

    /// Records `name`'s value before damda first changes it; a value already
    /// recorded is kept (it is the host's, not an earlier damda's).
    pub fn record_setting(&self, name: &str, before: &str) -> Result<(), NetworkError> {
        let mut settings = self.registry.recorded_settings();
        if settings.contains_key(name) {
            return Ok(());
        }
        settings.insert(name.to_owned(), before.to_owned());
        let path = self.registry.settings_path();
        let tmp = path.with_extension("tmp");
        let json = serde_json::to_vec_pretty(&settings).expect("settings serialise");
        fs::write(&tmp, json).map_err(io("writing", &tmp))?;
        fs::rename(&tmp, &path).map_err(io("renaming", &path))
    }

    /// The recorded settings, taken: the record is gone once they are
    /// restored.
    pub fn take_settings(&self) -> Result<BTreeMap<String, String>, NetworkError> {
        let settings = self.registry.recorded_settings();
        let path = self.registry.settings_path();
        match fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(io("removing", &path)(err))
            }
            _ => Ok(settings),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(address: [u8; 4], owner_pid: u32) -> Lease {
        Lease {
            owner_pid,
            owner_start: crate::ledger::process_start_time(owner_pid).unwrap_or(1),
            box_id: "abc".into(),
            address: Ipv4Addr::from(address),
            host_veth: "damda-h2".into(),
            peer: "damda-c2".into(),
            host_port: 8081,
        }
    }

    #[test]
    fn leases_are_exclusive_and_settings_keep_the_first_value() {
        let dir = std::env::temp_dir().join(format!("damda-registry-test-{}", std::process::id()));
        let registry = Registry::at(&dir);
        let locked = registry.lock().unwrap();
        let mine = lease([10, 221, 0, 2], std::process::id());
        locked.record(&mine).unwrap();
        assert!(locked.record(&mine).is_err(), "an address is leased once");
        assert_eq!(locked.leases(), vec![mine.clone()]);
        assert!(mine.owner_alive());
        assert!(!lease([10, 221, 0, 3], u32::MAX - 1).owner_alive());

        locked.record_setting("net.ipv4.ip_forward", "0").unwrap();
        locked.record_setting("net.ipv4.ip_forward", "1").unwrap();
        assert_eq!(registry.recorded_settings()["net.ipv4.ip_forward"], "0");
        assert_eq!(registry.leftovers().len(), 2);

        locked.forget(mine.address).unwrap();
        assert_eq!(locked.take_settings().unwrap()["net.ipv4.ip_forward"], "0");
        assert!(registry.leftovers().is_empty());
        drop(locked);
        fs::remove_dir_all(&dir).unwrap();
    }
}

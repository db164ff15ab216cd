//! Where damda keeps its files. The data directory holds the prepared rootfs
//! and the ledgers; the web directory the built page.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Paths {
    pub data: PathBuf,
    pub web: PathBuf,
}

impl Paths {
    /// From DAMDA_DATA / DAMDA_WEB, else the checkout this binary was built in.
    pub fn from_env() -> Self {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let checkout = manifest.parent().map(PathBuf::from).unwrap_or(manifest);
        let from = |var: &str, default: PathBuf| {
            std::env::var_os(var).map(PathBuf::from).unwrap_or(default)
        };
        Paths {
            data: from("DAMDA_DATA", checkout.join("data")),
            web: from("DAMDA_WEB", checkout.join("frontend/dist")),
        }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.data.join("rootfs")
    }

    pub fn boxes(&self) -> PathBuf {
        self.data.join("boxes")
    }

    pub fn images(&self) -> PathBuf {
        self.data.join("images")
    }

    pub fn ledger(&self) -> PathBuf {
        self.data.join("ledger")
    }

    /// The VM kernel and modules set-up unpacked, and the comparison's
    /// initramfs.
    pub fn vm(&self) -> PathBuf {
        self.data.join("vm")
    }
}

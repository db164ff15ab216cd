//! The VM's initramfs: a cpio archive built in memory. The writer is ours
//! (newc is a 110-byte text header per file): it lets an unprivileged build
//! put root-owned files and the /dev/console device node into the archive
//! without a staging tree. gzip is Debian's.

use super::{io_error, TempDir, VmError};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File { data: Vec<u8>, executable: bool },
    Symlink { target: String },
    CharDevice { major: u32, minor: u32 },
}

/// An initramfs being built: paths are absolute inside the VM.
#[derive(Debug, Default)]
pub struct Initramfs {
    entries: Vec<(String, Node)>,
    dirs: BTreeSet<String>,
}

fn relative(path: &str) -> String {
    path.trim_start_matches('/').to_owned()
}

impl Initramfs {
    /// The usual directories and /dev/console (the kernel opens it for
    /// /init's standard streams before any devtmpfs is mounted).
    pub fn new() -> Self {
        let mut initramfs = Initramfs::default();
        for dir in [
            "/bin",
            "/sbin",
            "/usr/bin",
            "/usr/sbin",
            "/dev",
            "/proc",
            "/sys",
            "/tmp",
            "/etc",
            "/root",
        ] {
            initramfs.dir(dir);
        }
        initramfs.push("/dev/console", Node::CharDevice { major: 5, minor: 1 });
        initramfs
    }

    /// Adds a directory and its parents.
    pub fn dir(&mut self, path: &str) {
        let path = relative(path);
        let mut so_far = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(part);
            if self.dirs.insert(so_far.clone()) {
                self.entries.push((so_far.clone(), Node::Dir));
            }
        }
    }

    fn push(&mut self, path: &str, node: Node) {
        let path = relative(path);
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entries.retain(|(p, _)| *p != path);
        self.entries.push((path, node));
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, executable: bool) {
        self.push(path, Node::File { data, executable });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.push(
            path,
            Node::Symlink {
                target: target.to_owned(),
            },
        );
    }

    /// Copies a host file to `dest` (following symlinks).
    pub fn copy(&mut self, source: &Path, dest: &str, executable: bool) -> Result<(), VmError> {
        let data = std::fs::read(source).map_err(io_error("reading", source))?;
        self.file(dest, data, executable);
        Ok(())
    }

    /// Debian's busybox-static as /bin/busybox, and a link for every applet
    /// where `busybox --list-full` puts it (/bin/sh, /sbin/poweroff, …).
    pub fn busybox(&mut self, busybox: &Path) -> Result<(), VmError> {
        self.copy(busybox, "/bin/busybox", true)?;
        let output = Command::new(busybox)
            .arg("--list-full")
            .output()
            .map_err(io_error("running", busybox))?;
        for applet in String::from_utf8_lossy(&output.stdout).lines() {
            let applet = applet.trim();
            if applet.is_empty() || applet.ends_with("/busybox") {
                continue;
            }
            self.symlink(&format!("/{applet}"), "/bin/busybox");
        }
        Ok(())
    }

    /// A binary at `dest`, with every shared library `ldd` names (and the
    /// loader) at the same path as on the host. Its debug information is
    /// stripped where binutils' `strip` is at hand (a debug build is ten
    /// times larger, and the guest decompresses it under emulation).
    pub fn binary(&mut self, source: &Path, dest: &str) -> Result<(), VmError> {
        let scratch = TempDir::new("damda-vm-strip")?;
        let stripped = scratch.path().join("binary");
        let strip = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(source)
            .stderr(Stdio::null())
            .status();
        if strip.is_ok_and(|status| status.success()) {
            self.copy(&stripped, dest, true)?;
        } else {
            self.copy(source, dest, true)?;
        }
        drop(scratch);
        let output = Command::new("ldd")
            .arg(source)
            .output()
            .map_err(io_error("running ldd on", source))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let libraries = parse_ldd(&text).map_err(|reason| VmError::Libraries {
            binary: source.to_owned(),
            reason,
        })?;
        for library in libraries {
            let dest = library.to_string_lossy().into_owned();
            self.copy(&library, &dest, true)?;
        }
        Ok(())
    }

    /// The files of an image, flattened (see [`crate::image::flatten`]).
    pub fn image(&mut self, tree: &std::collections::BTreeMap<String, crate::image::Item>) {
        use crate::image::Item;
        for (path, item) in tree {
            let path = format!("/{path}");
            match item {
                Item::Dir { .. } => self.dir(&path),
                Item::File { mode, data } => self.file(&path, data.clone(), mode & 0o111 != 0),
                Item::Symlink { target } => self.symlink(&path, &target.to_string_lossy()),
            }
        }
    }

    /// The kernel modules `names` from `root` (data/vm, where set-up
    /// unpacks lib/modules/RELEASE/…), with every module they depend on,
    /// at the same paths; returns their paths in the order `insmod` must
    /// load them (dependencies first), read from each module's own
    /// `depends=` (no modules.dep: depmod never ran on them).
    pub fn modules(&mut self, root: &Path, names: &[&str]) -> Result<Vec<String>, VmError> {
        let mut found = std::collections::BTreeMap::new();
        find_modules(root, root, &mut found)?;
        let mut order = Vec::new();
        for name in names {
            load_order(name, &found, &mut order, 0)?;
        }
        let mut paths = Vec::new();
        for name in order {
            let (dest, data) = &found[&name];
            self.file(dest, data.clone(), false);
            paths.push(dest.clone());
        }
        Ok(paths)
    }

    /// The /init script.
    pub fn init(&mut self, script: &str) {
        self.file("/init", script.as_bytes().to_vec(), true);
    }

    /// The archive in cpio's `newc` format, uncompressed.
    pub fn cpio(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, (path, node)) in self.entries.iter().enumerate() {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match node {
                Node::Dir => (0o040755, &[], (0, 0)),
                Node::File { data, executable } => {
                    (if *executable { 0o100755 } else { 0o100644 }, data, (0, 0))
                }
                Node::Symlink { target } => (0o120777, target.as_bytes(), (0, 0)),
                Node::CharDevice { major, minor } => (0o020600, &[], (*major, *minor)),
            };
            let nlink = if matches!(node, Node::Dir) { 2 } else { 1 };
            newc_entry(&mut out, ino as u32 + 1, mode, nlink, rdev, path, data);
        }
        newc_entry(&mut out, 0, 0, 1, (0, 0), "TRAILER!!!", &[]);
        out
    }

    /// Writes the archive gzip-compressed (by Debian's gzip, fastest level:
    /// the guest decompresses it under emulation). Written aside and renamed,
    /// so a qemu booting `path` meanwhile never reads half a file; nothing is
    /// left aside on failure.
    pub fn write_gzip(&self, path: &Path) -> Result<(), VmError> {
        let mut partial = path.as_os_str().to_owned();
        partial.push(format!(".partial-{}", std::process::id()));
        let partial = std::path::PathBuf::from(partial);
        let written = self
            .gzip_into(&partial)
            .and_then(|()| std::fs::rename(&partial, path).map_err(io_error("renaming", &partial)));
        if written.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        written
    }

    fn gzip_into(&self, path: &Path) -> Result<(), VmError> {
        let file = std::fs::File::create(path).map_err(io_error("creating", path))?;
        let mut gzip = Command::new("gzip")
            .args(["-1", "-c"])
            .stdin(Stdio::piped())
            .stdout(file)
            .spawn()
            .map_err(io_error("running gzip for", path))?;
        let mut stdin = gzip.stdin.take().expect("piped");
        let written = stdin.write_all(&self.cpio());
        drop(stdin);
        let status = gzip.wait().map_err(io_error("running gzip for", path))?;
        written.map_err(io_error("compressing", path))?;
        if !status.success() {
            return Err(VmError::Io {
                operation: "compressing",
                path: path.to_owned(),
                source: std::io::Error::other(format!("gzip: {status}")),
            });
        }
        Ok(())
    }
}

fn newc_entry(
    out: &mut Vec<u8>,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) {
    let fields = [
        ino,
        mode,
        0, // uid
        0, // gid
        nlink,
        0, // mtime
        data.len() as u32,
        0, // devmajor
        0, // devminor
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0, // check
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// Every `.ko` under `dir`: module name → (path inside the VM, contents).
fn find_modules(
    root: &Path,
    dir: &Path,
    found: &mut std::collections::BTreeMap<String, (String, Vec<u8>)>,
) -> Result<(), VmError> {
    for entry in std::fs::read_dir(dir).map_err(io_error("listing", dir))? {
        let path = entry.map_err(io_error("listing", dir))?.path();
        if path.is_dir() {
            find_modules(root, &path, found)?;
        } else if let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".ko"))
        {
            let data = std::fs::read(&path).map_err(io_error("reading", &path))?;
            let inside = format!("/{}", path.strip_prefix(root).unwrap_or(&path).display());
            // The kernel names modules with underscores whatever the file says.
            found.insert(stem.replace('-', "_"), (inside, data));
        }
    }
    Ok(())
}

/// The modules a module needs, from its `.modinfo` section: one
/// NUL-terminated `depends=a,b` string (empty when it needs none).
fn module_depends(module: &[u8]) -> Vec<String> {
    module
        .split(|b| *b == 0)
        .find_map(|field| field.strip_prefix(b"depends="))
        .map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .filter(|name| !name.is_empty())
                .map(|name| name.replace('-', "_"))
                .collect()
        })
        .unwrap_or_default()
}

fn load_order(
    name: &str,
    found: &std::collections::BTreeMap<String, (String, Vec<u8>)>,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<(), VmError> {
    let name = name.replace('-', "_");
    if order.contains(&name) {
        return Ok(());
    }
    let Some((path, data)) = found.get(&name) else {
        return Err(VmError::Module(format!(
            "the kernel module {name} is not unpacked in data/vm: run scripts/setup.sh"
        )));
    };
    if depth > 16 {
        return Err(VmError::Module(format!(
            "{path}: dependencies nest too deep"
        )));
    }
    for dependency in module_depends(data) {
        load_order(&dependency, found, order, depth + 1)?;
    }
    order.push(name);
    Ok(())
}

/// The library paths in `ldd` output: `name => /path (addr)` lines and the
/// loader's `/path (addr)` line. The vDSO has no file; a library `ldd`
/// cannot find is an error; a static binary has none.
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libraries = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("not a dynamic executable") || line.contains("statically linked") {
            return Ok(Vec::new());
        }
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("{} not found", name.trim()));
                }
                rest.split_whitespace().next().unwrap_or_default()
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            libraries.push(PathBuf::from(path));
        }
    }
    Ok(libraries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gzip_is_written_aside_and_nothing_is_left_on_failure() {
        let dir = crate::vm::TempDir::new("damda-initramfs-test").unwrap();
        let mut initramfs = Initramfs::new();
        initramfs.init("#!/bin/sh\n");
        let listing = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let initrd = dir.path().join("initrd.gz");
        initramfs.write_gzip(&initrd).unwrap();
        let gzip_magic = [0x1f, 0x8b];
        assert_eq!(std::fs::read(&initrd).unwrap()[..2], gzip_magic);
        assert_eq!(listing(), ["initrd.gz"]);
        // Renaming onto a directory that is not empty fails.
        let taken = dir.path().join("taken");
        std::fs::create_dir_all(taken.join("inside")).unwrap();
        let err = initramfs.write_gzip(&taken).unwrap_err();
        assert!(err.to_string().contains("renaming"), "{err}");
        assert_eq!(listing(), ["initrd.gz", "taken"]);
    }

    #[test]
    fn module_depends_reads_the_modinfo_string() {
        let module = b"\x7fELF\0\0license=GPL\0depends=virtio_ring,virtio,net_failover\0retpoline=Y\0name=virtio_net\0";
        assert_eq!(
            module_depends(module),
            ["virtio_ring", "virtio", "net_failover"]
        );
        assert!(module_depends(b"\0depends=\0name=virtio\0").is_empty());
        assert!(module_depends(b"no modinfo here").is_empty());
    }

    #[test]
    fn modules_load_dependencies_first() {
        let root = TempDir::new("damda-test-modules").unwrap();
        let dir = root.path().join("lib/modules/6.1.0/kernel");
        std::fs::create_dir_all(&dir).unwrap();
        for (name, depends) in [
            ("virtio_net", "virtio_ring,failover"),
            ("virtio_ring", "virtio"),
            ("virtio", ""),
            ("failover", ""),
            ("unused", ""),
        ] {
            std::fs::write(
                dir.join(format!("{name}.ko")),
                format!("\0depends={depends}\0name={name}\0"),
            )
            .unwrap();
        }
        let mut initramfs = Initramfs::new();
        let order = initramfs.modules(root.path(), &["virtio_net"]).unwrap();
        assert_eq!(
            order,
            [
                "/lib/modules/6.1.0/kernel/virtio.ko",
                "/lib/modules/6.1.0/kernel/virtio_ring.ko",
                "/lib/modules/6.1.0/kernel/failover.ko",
                "/lib/modules/6.1.0/kernel/virtio_net.ko"
            ]
        );
        let missing = initramfs
            .modules(root.path(), &["e1000"])
            .unwrap_err()
            .to_string();
        assert!(missing.contains("e1000"), "{missing}");
    }

    #[test]
    fn ldd_output_names_the_loader_and_libraries() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd5a9f2000)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f1e2c5d0000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f1e2c3ef000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f1e2c6a1000)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(parse_ldd("\tnot a dynamic executable\n")
            .unwrap()
            .is_empty());
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
        assert_eq!(
            parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err(),
            "libfoo.so.1 not found"
        );
    }

    /// One entry read back: name, mode, rdev, data.
    type Unpacked = (String, u32, (u32, u32), Vec<u8>);

    /// Reads a newc archive back.
    fn unpack(mut archive: &[u8]) -> Vec<Unpacked> {
        let mut entries = Vec::new();
        let mut offset = 0;
        loop {
            assert_eq!(&archive[..6], b"070701", "at {offset}");
            let field = |i: usize| {
                u32::from_str_radix(
                    std::str::from_utf8(&archive[6 + 8 * i..14 + 8 * i]).unwrap(),
                    16,
                )
                .unwrap()
            };
            let (mode, size, rdev, namesize) =
                (field(1), field(6), (field(9), field(10)), field(11));
            let name_end = 110 + namesize as usize;
            let name = String::from_utf8(archive[110..name_end - 1].to_vec()).unwrap();
            let data_start = name_end.div_ceil(4) * 4;
            let data_end = data_start + size as usize;
            let data = archive[data_start..data_end].to_vec();
            let next = data_end.div_ceil(4) * 4;
            archive = &archive[next..];
            offset += next;
            if name == "TRAILER!!!" {
                assert!(archive.is_empty());
                return entries;
            }
            entries.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn cpio_newc_round_trips() {
        let mut initramfs = Initramfs::new();
        initramfs.init("#!/bin/sh\necho hi\n");
        initramfs.symlink("/bin/sh", "/bin/busybox");
        initramfs.file("/lib/x86_64-linux-gnu/libc.so.6", vec![1, 2, 3], true);
        let entries = unpack(&initramfs.cpio());
        let find = |name: &str| entries.iter().find(|e| e.0 == name).unwrap().clone();
        assert_eq!(find("init").1, 0o100755);
        assert_eq!(find("init").3, b"#!/bin/sh\necho hi\n");
        assert_eq!(find("bin/sh").1, 0o120777);
        assert_eq!(find("bin/sh").3, b"/bin/busybox");
        assert_eq!(find("dev/console").1, 0o020600);
        assert_eq!(find("dev/console").2, (5, 1));
        assert_eq!(find("lib").1, 0o040755);
        // Parents come before what they hold.
        let position = |name: &str| entries.iter().position(|e| e.0 == name).unwrap();
        assert!(position("lib/x86_64-linux-gnu") < position("lib/x86_64-linux-gnu/libc.so.6"));
    }

    #[test]
    fn cpio_tool_reads_our_archive() {
        let Ok(mut cpio) = Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
        else {
            return; // cpio is not installed: the round trip above covers the format
        };
        let mut initramfs = Initramfs::new();
        initramfs.init("#!/bin/sh\n");
        cpio.stdin
            .take()
            .unwrap()
            .write_all(&initramfs.cpio())
            .unwrap();
        let listing = String::from_utf8(cpio.wait_with_output().unwrap().stdout).unwrap();
        assert!(listing.lines().any(|l| l == "init"), "{listing}");
        assert!(listing.lines().any(|l| l == "dev/console"), "{listing}");
    }
}

//! The layer unpacker against a corpus of hostile archives (the cases
//! containerd's TestBreakouts and Docker's breakout tests cover): each is
//! refused with a clear error, or harmlessly contained, and nothing outside
//! the target changes. Then what a good layer must come out as: files,
//! directories, links, modes, times, owners, and AUFS whiteouts turned into
//! overlay whiteouts.

use damda::image::unpack::{unpack, Refusal, UnpackError, UnpackOptions, OVERLAY_OPAQUE_XATTR};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use tar::{EntryType, Header};

/// One raw tar entry; paths go into the header as they are, so `..` and
/// absolute names reach the unpacker (tar's own Builder would refuse them).
struct Raw {
    path: String,
    kind: EntryType,
    link: String,
    data: Vec<u8>,
    mode: u32,
}

fn raw(path: &str, kind: EntryType, link: &str, data: &[u8], mode: u32) -> Raw {
    Raw {
        path: path.to_owned(),
        kind,
        link: link.to_owned(),
        data: data.to_vec(),
        mode,
    }
}

fn file(path: &str, data: &[u8]) -> Raw {
    raw(path, EntryType::Regular, "", data, 0o644)
}

fn dir(path: &str) -> Raw {
    raw(path, EntryType::Directory, "", b"", 0o755)
}

fn symlink(path: &str, target: &str) -> Raw {
    raw(path, EntryType::Symlink, target, b"", 0o777)
}

fn hardlink(path: &str, target: &str) -> Raw {
    raw(path, EntryType::Link, target, b"", 0o644)
}

fn special(path: &str, kind: EntryType) -> Raw {
    raw(path, kind, "", b"", 0o644)
}

fn archive(entries: &[Raw]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for e in entries {
        let mut header = Header::new_gnu();
        let old = header.as_old_mut();
        assert!(e.path.len() <= old.name.len() && e.link.len() <= old.linkname.len());
        old.name[..e.path.len()].copy_from_slice(e.path.as_bytes());
        old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        header.set_entry_type(e.kind);
        header.set_size(e.data.len() as u64);
        header.set_mode(e.mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_000_000_000);
        if matches!(e.kind, EntryType::Char | EntryType::Block) {
            header.set_device_major(1).unwrap();
            header.set_device_minor(3).unwrap();
        }
        header.set_cksum();
        builder.append(&header, e.data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Everything about a tree a breakout could change, keyed by path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let mut facts = format!(
            "mode={:o} uid={} gid={} size={} mtime={} nlink={}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.size(),
            meta.mtime(),
            meta.nlink()
        );
        if meta.is_file() {
            facts.push_str(&format!(" data={:?}", fs::read(&path).unwrap()));
        } else if meta.file_type().is_symlink() {
            facts.push_str(&format!(" link={:?}", fs::read_link(&path).unwrap()));
        } else if meta.is_dir() {
            let opaque = xattr::get(&path, OVERLAY_OPAQUE_XATTR).ok().flatten();
            facts.push_str(&format!(" opaque={opaque:?}"));
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
        out.insert(path, facts);
    }
    out
}

/// A temporary tree: `sentinel/` with a secret file and a subdirectory
/// (what an escape would hit) and `target/`, the empty layer directory.
struct Scene {
    _tmp: tempfile::TempDir,
    base: PathBuf,
    target: PathBuf,
    sentinel: PathBuf,
}

impl Scene {
    fn new() -> Scene {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_owned();
        let sentinel = base.join("sentinel");
        fs::create_dir_all(sentinel.join("sub")).unwrap();
        fs::write(sentinel.join("secret"), b"do not touch").unwrap();
        fs::write(sentinel.join("sub/file"), b"nor this").unwrap();
        let target = base.join("target");
        fs::create_dir(&target).unwrap();
        Scene {
            _tmp: tmp,
            base,
            target,
            sentinel,
        }
    }

    /// Everything but the target.
    fn outside(&self) -> BTreeMap<PathBuf, String> {
        let mut all = snapshot(&self.base);
        all.retain(|path, _| !path.starts_with(&self.target));
        all
    }

    fn unpack(&self, bytes: &[u8], options: &UnpackOptions) -> Result<(), UnpackError> {
        unpack(bytes, &self.target, options).map(|_| ())
    }
}

enum Expect {
    Refused(fn(&Refusal) -> bool),
    Error(fn(&UnpackError) -> bool),
    /// Accepted, but contained: nothing outside changes.
    Contained,
}

type Case = (&'static str, Vec<Raw>, Expect);

/// The corpus, aimed at `sentinel`, a directory outside the target.
fn cases(sentinel: &Path) -> Vec<Case> {
    let sentinel = sentinel.to_str().unwrap().to_owned();
    // The sentinel's path from / without the leading slash, for `l -> /`.
    let sentinel_from_root = sentinel.trim_start_matches('/').to_owned();
    let abs_victim = format!("{sentinel}/abs-victim");
    let through_root = format!("l/{sentinel_from_root}/victim");
    let abs_secret = format!("{sentinel}/secret");
    vec![
        (
            "../evil",
            vec![file("../evil", b"x")],
            Expect::Refused(|r| *r == Refusal::DotDot),
        ),
        (
            "absolute path",
            vec![file(&abs_victim, b"x")],
            Expect::Refused(|r| *r == Refusal::Absolute),
        ),
        (
            "a/../../x",
            vec![dir("a"), file("a/../../x", b"x")],
            Expect::Refused(|r| *r == Refusal::DotDot),
        ),
        (
            "symlink to / then a file through it",
            vec![symlink("l", "/"), file(&through_root, b"x")],
            Expect::Refused(|r| *r == Refusal::ThroughSymlink),
        ),
        (
            "symlink up and out then a file through it",
            vec![symlink("l", "../.."), file("l/x", b"x")],
            Expect::Refused(|r| *r == Refusal::ThroughSymlink),
        ),
        (
            "symlink to the sentinel then a directory through it",
            vec![symlink("l", &sentinel), dir("l/newdir")],
            Expect::Refused(|r| *r == Refusal::ThroughSymlink),
        ),
        (
            "symlink to the sentinel then overwrite through it",
            vec![symlink("l", &sentinel), file("l/secret", b"pwned")],
            Expect::Refused(|r| *r == Refusal::ThroughSymlink),
        ),
        (
            "hardlink to /etc/passwd",
            vec![hardlink("h", "/etc/passwd")],
            Expect::Refused(
                |r| matches!(r, Refusal::LinkTarget { reason, .. } if **reason == Refusal::Absolute),
            ),
        ),
        (
            "hardlink to an absolute sentinel file",
            vec![hardlink("h", &abs_secret)],
            Expect::Refused(
                |r| matches!(r, Refusal::LinkTarget { reason, .. } if **reason == Refusal::Absolute),
            ),
        ),
        (
            "hardlink up and out",
            vec![hardlink("h", "../sentinel/secret")],
            Expect::Refused(
                |r| matches!(r, Refusal::LinkTarget { reason, .. } if **reason == Refusal::DotDot),
            ),
        ),
        (
            "hardlink through a symlinked directory",
            vec![symlink("d", &sentinel), hardlink("h", "d/secret")],
            Expect::Refused(
                |r| matches!(r, Refusal::LinkTarget { reason, .. } if **reason == Refusal::ThroughSymlink),
            ),
        ),
        (
            "hardlink to a missing file",
            vec![hardlink("h", "nothing")],
            Expect::Refused(|r| matches!(r, Refusal::LinkTargetMissing(_))),
        ),
        (
            "character device",
            vec![special("null", EntryType::Char)],
            Expect::Refused(|r| *r == Refusal::Device),
        ),
        (
            "block device",
            vec![special("sda", EntryType::Block)],
            Expect::Refused(|r| *r == Refusal::Device),
        ),
        (
            "fifo",
            vec![special("pipe", EntryType::Fifo)],
            Expect::Refused(|r| *r == Refusal::Fifo),
        ),
        (
            "whiteout of `..`",
            vec![dir("a"), file("a/.wh...", b"")],
            Expect::Refused(|r| *r == Refusal::BadWhiteout("..".into())),
        ),
        (
            "whiteout in a parent directory",
            vec![file("../.wh.sentinel", b"")],
            Expect::Refused(|r| *r == Refusal::DotDot),
        ),
        (
            "whiteout through a symlink",
            vec![symlink("l", &sentinel), file("l/.wh.secret", b"")],
            Expect::Refused(|r| *r == Refusal::ThroughSymlink),
        ),
        (
            "opaque marker through a symlink",
            vec![symlink("l", &sentinel), file("l/.wh..wh..opq", b"")],
            Expect::Refused(|r| *r == Refusal::ThroughSymlink),
        ),
        (
            "a file below a file",
            vec![file("f", b"x"), file("f/x", b"x")],
            Expect::Refused(|r| *r == Refusal::ParentNotDirectory),
        ),
        (
            "a file replacing a directory",
            vec![dir("d"), file("d", b"x")],
            Expect::Refused(|r| *r == Refusal::ReplacesDirectory),
        ),
        (
            "oversize",
            vec![file("big", &[7; 4096])],
            Expect::Error(|e| matches!(e, UnpackError::TooLarge { limit: 1024 })),
        ),
        (
            "too many entries",
            vec![
                file("1", b""),
                file("2", b""),
                file("3", b""),
                file("4", b""),
                file("5", b""),
            ],
            Expect::Error(|e| matches!(e, UnpackError::TooManyEntries { limit: 3 })),
        ),
        (
            "a symlink then a file of the same name (replaced, not written through)",
            vec![symlink("f", &abs_secret), file("f", b"pwned")],
            Expect::Contained,
        ),
        (
            "a symlink then a directory of the same name with a mode (not chmod through)",
            vec![
                symlink("d", &sentinel),
                Raw {
                    mode: 0o777,
                    ..dir("d")
                },
            ],
            Expect::Contained,
        ),
        (
            "a hardlink to a symlink that points out (links the symlink itself)",
            vec![symlink("s", &abs_secret), hardlink("h", "s")],
            Expect::Contained,
        ),
        (
            "whiteout of a symlink to the outside (removes nothing outside)",
            vec![symlink("l", &sentinel), file(".wh.l", b"")],
            Expect::Contained,
        ),
    ]
}

#[test]
fn hostile_archives_are_refused_and_nothing_outside_changes() {
    let limits = UnpackOptions {
        max_bytes: 1024,
        max_entries: 3,
        owner_offset: 0,
    };
    let mut failures = Vec::new();
    let count = cases(Path::new("/")).len();
    for index in 0..count {
        // A fresh scene per case, and the case aimed at its sentinel.
        let scene = Scene::new();
        let (name, entries, expect) = cases(&scene.sentinel).swap_remove(index);
        let bytes = archive(&entries);
        let before = scene.outside();
        let options = if name == "oversize" || name == "too many entries" {
            limits
        } else {
            UnpackOptions::default()
        };
        let outcome = scene.unpack(&bytes, &options);
        let after = scene.outside();
        if before != after {
            failures.push(format!("{name}: the outside changed"));
        }
        let ok = match (&expect, &outcome) {
            (Expect::Refused(check), Err(err)) => err.refusal().is_some_and(check),
            (Expect::Error(check), Err(err)) => check(err),
            (Expect::Contained, Ok(())) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: unexpected outcome {outcome:?}"));
        }
        if let Err(err) = &outcome {
            let text = err.to_string();
            println!("{name}: {text}");
            assert!(
                text.starts_with(|c: char| c.is_lowercase()),
                "{name}: error starts lower-case: {text}"
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_good_layer_comes_out_whole() {
    let scene = Scene::new();
    let bytes = archive(&[
        dir("./etc"),
        file("./etc/hostname", b"box\n"),
        Raw {
            mode: 0o4755,
            ..file("bin/tool", b"#!/bin/sh\n")
        },
        symlink("bin/sh", "tool"),
        symlink("abs", "/etc/hostname"),
        hardlink("bin/tool-again", "bin/tool"),
        file("implicit/parent/file", b"deep"),
        Raw {
            mode: 0o555,
            ..dir("ro")
        },
        file("ro/inside", b"ok"),
        file("etc/hostname", b"replaced\n"),
    ]);
    let stats = unpack(
        &bytes[..],
        &scene.target,
        &UnpackOptions {
            owner_offset: 100_000,
            ..UnpackOptions::default()
        },
    )
    .unwrap();
    assert_eq!(stats.entries, 10);
    let t = &scene.target;
    assert_eq!(fs::read(t.join("etc/hostname")).unwrap(), b"replaced\n");
    assert_eq!(fs::read_link(t.join("bin/sh")).unwrap(), Path::new("tool"));
    assert_eq!(
        fs::read_link(t.join("abs")).unwrap(),
        Path::new("/etc/hostname")
    );
    let tool = fs::metadata(t.join("bin/tool")).unwrap();
    let again = fs::metadata(t.join("bin/tool-again")).unwrap();
    assert_eq!(tool.ino(), again.ino(), "hardlink inside the layer");
    assert_eq!(tool.mode() & 0o7777, 0o4755, "set-uid kept after chown");
    assert_eq!(tool.mtime(), 1_000_000_000);
    assert_eq!(fs::read(t.join("implicit/parent/file")).unwrap(), b"deep");
    let ro = fs::metadata(t.join("ro")).unwrap();
    assert_eq!(ro.mode() & 0o7777, 0o555);
    assert_eq!(
        ro.mtime(),
        1_000_000_000,
        "directory mtime set after its contents"
    );
    assert_eq!(fs::read(t.join("ro/inside")).unwrap(), b"ok");
    if is_root() {
        for path in ["bin/tool", "etc", "implicit", "ro/inside"] {
            let meta = fs::symlink_metadata(t.join(path)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (100_000, 100_000), "{path}");
        }
        let link = fs::symlink_metadata(t.join("bin/sh")).unwrap();
        assert_eq!(
            link.uid(),
            100_000,
            "symlink chowned itself, not its target"
        );
    } else {
        println!("skipped the owner checks: they need root");
    }
}

#[test]
fn aufs_whiteouts_become_overlay_whiteouts() {
    if !is_root() {
        println!("skipped: overlay whiteouts need root (mknod 0:0, trusted.* xattrs)");
        return;
    }
    let scene = Scene::new();
    let bytes = archive(&[
        file(".wh.gone", b""),
        dir("etc"),
        file("etc/.wh..wh..opq", b""),
        file("etc/kept", b"x"),
        file(".wh..wh.plnk", b""),
    ]);
    let stats = unpack(&bytes[..], &scene.target, &UnpackOptions::default()).unwrap();
    assert_eq!(stats.whiteouts, 3);
    let gone = fs::symlink_metadata(scene.target.join("gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    assert!(!scene.target.join(".wh.gone").exists());
    assert_eq!(
        xattr::get(scene.target.join("etc"), OVERLAY_OPAQUE_XATTR).unwrap(),
        Some(b"y".to_vec())
    );
    assert!(!scene.target.join("etc/.wh..wh..opq").exists());
    assert!(!scene.target.join(".wh..wh.plnk").exists());
}

//! Which layer of a stack provides a path in the merged view, by overlay's
//! rules: the topmost layer that has the name wins; a whiteout (0:0
//! character device) deletes it for every layer below; an opaque directory
//! hides everything below it in lower layers; a non-directory hides lower
//! layers' entries beneath its name.

use super::unpack::{OVERLAY_OPAQUE_USER_XATTR, OVERLAY_OPAQUE_XATTR};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provenance {
    /// Provided by the layer at this index (0 is the bottom one).
    Layer(usize),
    /// Deleted by a whiteout or hidden by an opaque directory in this layer.
    Deleted(usize),
    /// No layer has it.
    Missing,
}

enum Lookup {
    Found,
    /// Stop looking lower: whited out, opaque, or under a non-directory.
    Hidden,
    Absent,
}

/// A 0:0 character device: overlay's whiteout.
pub(super) fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

/// Opaque as an unpacked layer marks it (trusted.*), or as overlay marks it
/// in an upper directory it mounted with `userxattr` (user.*).
pub(super) fn is_opaque(dir: &Path) -> bool {
    [OVERLAY_OPAQUE_XATTR, OVERLAY_OPAQUE_USER_XATTR]
        .iter()
        .any(|name| matches!(xattr::get(dir, name), Ok(Some(v)) if v == b"y"))
}

/// Looks `parts` up in one layer, component by component, never following
/// a symlink (a symlinked directory hides what lower layers have below it).
fn lookup(layer: &Path, parts: &[&str]) -> Lookup {
    let mut at = PathBuf::from(layer);
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let Ok(meta) = std::fs::symlink_metadata(&at) else {
            return Lookup::Absent;
        };
        if is_whiteout(&meta) {
            return Lookup::Hidden;
        }
        let last = i + 1 == parts.len();
        if last {
            return Lookup::Found;
        }
        if !meta.is_dir() {
            return Lookup::Hidden;
        }
        if is_opaque(&at) {
            // Lower layers are hidden below here: found here or nowhere.
            return match lookup(&at, &parts[i + 1..]) {
                Lookup::Found => Lookup::Found,
                _ => Lookup::Hidden,
            };
        }
    }
    Lookup::Found // the root directory itself
}

/// Which of `layers` (bottom first) provides `path` (absolute or relative
/// to the image root) in the merged filesystem.
pub fn provider(layers: &[impl AsRef<Path>], path: &str) -> Provenance {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Provenance::Missing;
    }
    for (index, layer) in layers.iter().enumerate().rev() {
        match lookup(layer.as_ref(), &parts) {
            Lookup::Found => return Provenance::Layer(index),
            Lookup::Hidden => return Provenance::Deleted(index),
            Lookup::Absent => {}
        }
    }
    Provenance::Missing
}

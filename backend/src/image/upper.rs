//! What a box changed in its root: the entries of its overlay upper
//! directory, read from the host (copy-ups, new files, whiteouts, opaque
//! directories), and which layer any path of its root comes from.

use super::provenance::{is_opaque, is_whiteout, provider, Provenance};
use damda_protocol::{UpperEntry, UpperKind};
use std::path::{Path, PathBuf};

/// At most this many entries are listed.
const MAX_ENTRIES: usize = 500;

fn kind(path: &Path, meta: &std::fs::Metadata) -> UpperKind {
    let kind = meta.file_type();
    if is_whiteout(meta) {
        UpperKind::Whiteout
    } else if kind.is_symlink() {
        UpperKind::Symlink
    } else if kind.is_dir() && is_opaque(path) {
        UpperKind::OpaqueDir
    } else if kind.is_dir() {
        UpperKind::Dir
    } else {
        UpperKind::File
    }
}

/// The upper directory's entries sorted by path, without `skip` (the mount
/// points damda made itself). Never follows a symlink. Read shallowest
/// first, so past [`MAX_ENTRIES`] the deepest are the ones left out.
pub fn list(upper: &Path, lowers: &[PathBuf], skip: &[String]) -> Vec<UpperEntry> {
    let mut entries = Vec::new();
    let mut pending = std::collections::VecDeque::from([PathBuf::from("/")]);
    'walk: while let Some(dir) = pending.pop_front() {
        let Ok(listing) = std::fs::read_dir(upper.join(dir.strip_prefix("/").unwrap_or(&dir)))
        else {
            continue;
        };
        let mut names: Vec<_> = listing.flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for entry in names {
            let path = dir.join(entry.file_name());
            let text = path.display().to_string();
            if skip.contains(&text) {
                continue;
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            let kind = kind(&entry.path(), &meta);
            if entries.len() >= MAX_ENTRIES {
                break 'walk;
            }
            entries.push(UpperEntry {
                hides_layer: match provider(lowers, &text) {
                    Provenance::Layer(index) => Some(index),
                    _ => None,
                },
                path: text,
                kind,
                size: if kind == UpperKind::File {
                    meta.len()
                } else {
                    0
                },
            });
            if matches!(kind, UpperKind::Dir | UpperKind::OpaqueDir) {
                pending.push_back(path);
            }
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    entries
}

/// Which of the box's layers (the image's, then its upper directory on top)
/// provides `path` of its root.
pub fn which(lowers: &[PathBuf], upper: &Path, path: &str) -> damda_protocol::Provenance {
    let mut layers: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
    layers.push(upper);
    match provider(&layers, path) {
        Provenance::Layer(index) if index == lowers.len() => damda_protocol::Provenance::Upper,
        Provenance::Layer(index) => damda_protocol::Provenance::Layer { index },
        Provenance::Deleted(_) => damda_protocol::Provenance::Deleted,
        Provenance::Missing => damda_protocol::Provenance::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_entries_say_what_they_hide() {
        let base = std::env::temp_dir().join(format!("damda-upper-test-{}", std::process::id()));
        let (lower, upper) = (base.join("lower"), base.join("upper"));
        std::fs::create_dir_all(lower.join("etc")).unwrap();
        std::fs::write(lower.join("etc/motd"), "hi").unwrap();
        std::fs::create_dir_all(upper.join("etc")).unwrap();
        std::fs::write(upper.join("etc/motd"), "hi there").unwrap();
        std::fs::write(upper.join("new"), "x").unwrap();
        std::fs::create_dir_all(upper.join("dev")).unwrap();
        std::fs::write(upper.join("dev/null"), "").unwrap();
        let lowers = vec![lower.clone()];
        let entries = list(&upper, &lowers, &["/dev/null".to_owned()]);
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["/dev", "/etc", "/etc/motd", "/new"]);
        let motd = &entries[2];
        assert_eq!(
            (motd.kind, motd.size, motd.hides_layer),
            (UpperKind::File, 8, Some(0))
        );
        assert_eq!(entries[3].hides_layer, None);
        assert_eq!(
            which(&lowers, &upper, "/etc/motd"),
            damda_protocol::Provenance::Upper
        );
        assert_eq!(
            which(&lowers, &upper, "/nope"),
            damda_protocol::Provenance::Missing
        );
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn past_the_limit_the_deepest_entries_are_left_out_and_the_rest_stay_sorted() {
        let base = std::env::temp_dir().join(format!("damda-upper-cap-{}", std::process::id()));
        let upper = base.join("upper");
        // 12 directories of 50 files: 612 entries, more than the limit.
        for dir in 0..12 {
            let dir = upper.join(format!("d{dir:02}"));
            std::fs::create_dir_all(&dir).unwrap();
            for file in 0..50 {
                std::fs::write(dir.join(format!("f{file:02}")), "").unwrap();
            }
        }
        let entries = list(&upper, &[], &[]);
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(entries.len(), MAX_ENTRIES);
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "sorted by path");
        for dir in 0..12 {
            let dir = format!("/d{dir:02}");
            assert!(
                paths.contains(&dir.as_str()),
                "{dir}: every top directory is kept"
            );
        }
    }
}

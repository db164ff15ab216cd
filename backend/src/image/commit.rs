//! `docker commit`: a box's upper directory saved as a new layer on top of
//! the image it was built from. Overlay's own marks become what a layer
//! tarball carries instead (the import side never sees device nodes): a 0:0
//! character-device whiteout becomes an empty `.wh.NAME` file, an opaque
//! directory gets a `.wh..wh..opq` entry. The new image's other layers are
//! the base image's, by digest: shared, not copied.

use super::build::{gzip, io_err, layer_tar, spec, store_manifest, BuildError, Item};
use super::digest;
use super::reference::Reference;
use super::store::{Image, ImageStore};
use super::unpack::{
    OVERLAY_OPAQUE_USER_XATTR, OVERLAY_OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX,
};
use oci_spec::image::{Descriptor, HistoryBuilder, MediaType};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// The upper directory's entries as layer items, without `skip` (damda's
/// own mount points).
fn upper_items(
    upper: &Path,
    dir: &Path,
    skip: &[&str],
    out: &mut Vec<(String, Item)>,
) -> Result<(), BuildError> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .map_err(io_err("listing", dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err("listing", dir))?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let rel = path
            .strip_prefix(upper)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if skip.iter().any(|s| s.trim_start_matches('/') == rel) {
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
        let mode = meta.permissions().mode() & 0o7777;
        let kind = meta.file_type();
        if kind.is_char_device() && meta.rdev() == 0 {
            let parent = Path::new(&rel)
                .parent()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            let hidden = format!("{WHITEOUT_PREFIX}{}", name.to_string_lossy());
            let entry = if parent.is_empty() {
                hidden
            } else {
                format!("{parent}/{hidden}")
            };
            out.push((
                entry,
                Item::File {
                    mode: 0o644,
                    data: Vec::new(),
                },
            ));
        } else if kind.is_symlink() {
            let target = fs::read_link(&path).map_err(io_err("reading", &path))?;
            out.push((rel, Item::Symlink { target }));
        } else if kind.is_dir() {
            out.push((rel.clone(), Item::Dir { mode }));
            let opaque = [OVERLAY_OPAQUE_XATTR, OVERLAY_OPAQUE_USER_XATTR]
                .iter()
                .any(|x| matches!(xattr::get(&path, x), Ok(Some(v)) if v == b"y"));
            if opaque {
                out.push((
                    format!("{rel}/{WHITEOUT_OPAQUE}"),
                    Item::File {
                        mode: 0o644,
                        data: Vec::new(),
                    },
                ));
            }
            upper_items(upper, &path, skip, out)?;
        } else if kind.is_file() {
            let data = fs::read(&path).map_err(io_err("reading", &path))?;
            out.push((rel, Item::File { mode, data }));
        } else {
            return Err(BuildError::Unexpected {
                path,
                kind: "a special file",
            });
        }
    }
    Ok(())
}

/// Saves `upper` (a box of the image `base`) as the image `name`, and
/// unpacks its new layer so a box can be built from it.
pub fn commit(
    store: &ImageStore,
    base: &Reference,
    upper: &Path,
    skip: &[&str],
    name: &Reference,
) -> Result<Image, BuildError> {
    let image = store.image(base)?;
    let mut items = Vec::new();
    upper_items(upper, upper, skip, &mut items)?;
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let tar = layer_tar(&items)?;
    let diff_id = digest::of_bytes(&tar);
    let compressed = gzip(&tar).map_err(io_err("compressing", upper))?;
    let (layer_digest, size) = store.write_bytes(&compressed)?;

    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut config = image.config.clone();
    let mut rootfs = config.rootfs().clone();
    let mut diff_ids = rootfs.diff_ids().clone();
    diff_ids.push(diff_id.to_string());
    rootfs.set_diff_ids(diff_ids);
    config.set_rootfs(rootfs);
    let mut history = config.history().clone().unwrap_or_default();
    history.push(
        HistoryBuilder::default()
            .created(now.clone())
            .created_by(format!(
                "damda commit ({} entries of the box's upper directory)",
                items.len()
            ))
            .build()
            .map_err(spec("history"))?,
    );
    config.set_history(Some(history));
    config.set_created(Some(now));
    let mut layers = image.manifest.layers().clone();
    layers.push(Descriptor::new(
        MediaType::ImageLayerGzip,
        size,
        layer_digest,
    ));
    let manifest_digest = store_manifest(store, &config, layers, upper)?;
    store.tag(name, &manifest_digest)?;
    store.unpacked_layers(name)?;
    Ok(store.image(name)?)
}

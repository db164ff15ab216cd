//! `docker commit`: a box's upper directory saved as a new layer on top of
//! the image it was built from. Overlay's own marks become what a layer
//! tarball carries instead (the import side never sees device nodes): a 0:0
//! character-device whiteout becomes an empty `.wh.NAME` file, an opaque
//! directory gets a `.wh..wh..opq` entry. The new image's other layers are
//! the base image's, by digest: shared, not copied.

use super::build::{collect, gzip, io_err, layer_tar, spec, store_manifest, BuildError};
use super::digest;
use super::reference::Reference;
use super::store::{Image, ImageStore, LayerInfo};
use oci_spec::image::{Descriptor, HistoryBuilder, MediaType};
use std::path::Path;

/// Saves `upper` (a box of the image `base`) as the image `name`, and
/// unpacks its new layer so a box can be built from it. Returns the new
/// image and its layers.
pub fn commit(
    store: &ImageStore,
    base: &Reference,
    upper: &Path,
    skip: &[String],
    name: &Reference,
) -> Result<(Image, Vec<LayerInfo>), BuildError> {
    let image = store.image(base)?;
    let mut items = Vec::new();
    collect(upper, upper, skip, &mut items)?;
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
    let image = store.image(name)?;
    let layers = store.unpacked_layers(&image)?;
    Ok((image, layers))
}

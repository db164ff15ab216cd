//! The image store: an OCI image layout at data/images (oci-layout,
//! index.json naming each image by `org.opencontainers.image.ref.name`,
//! blobs/sha256/<hex>), plus each layer unpacked once under
//! layers/<diff-id hex>/ for overlay to use as a lowerdir.
//!
//! Content-addressed both ways: a blob is written to a temporary file while
//! its digest is computed, and renamed into place only if it matches; every
//! read recomputes the digest and refuses a blob that changed.

use super::digest::{self, DigestError, Hashing};
use super::reference::{Reference, ReferenceError};
use super::unpack::{unpack, UnpackError, UnpackOptions};
use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{
    Descriptor, Digest, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest,
    MediaType, ANNOTATION_REF_NAME,
};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Manifests, configs and indexes are small; a larger one is refused
/// rather than read into memory.
const MAX_JSON_BLOB: u64 = 16 << 20;
const LAYOUT_VERSION: &str = "1.0.0";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("blob {path}: {source}")]
    Digest { path: PathBuf, source: DigestError },
    #[error("blob {digest} is missing from the store")]
    MissingBlob { digest: Digest },
    #[error("{what} {digest} is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        what: &'static str,
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error("{what} {path}: {source}")]
    Json {
        what: &'static str,
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("building the {what}: {source}")]
    Spec {
        what: &'static str,
        source: oci_spec::OciSpecError,
    },
    #[error("image {0} is not in the store (`damda images` lists what is)")]
    NotFound(Reference),
    #[error("{what} {digest} has media type {media_type}, which damda does not read")]
    MediaType {
        what: &'static str,
        digest: Digest,
        media_type: String,
    },
    #[error(
        "image {reference}: its manifest has {layers} layers but its config {diff_ids} diff ids"
    )]
    LayerCount {
        reference: Reference,
        layers: usize,
        diff_ids: usize,
    },
    #[error("layer {digest}: {source}")]
    Unpack { digest: Digest, source: UnpackError },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// An image as the store holds it.
#[derive(Debug, Clone)]
pub struct Image {
    pub reference: Reference,
    pub manifest_digest: Digest,
    pub manifest: ImageManifest,
    pub config_digest: Digest,
    pub config: ImageConfiguration,
}

impl Image {
    /// The layers' diff ids (digests of the uncompressed tars), bottom first.
    pub fn diff_ids(&self) -> Result<Vec<Digest>, StoreError> {
        self.config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|id| {
                Digest::try_from(id.as_str()).map_err(|source| StoreError::Spec {
                    what: "diff id",
                    source,
                })
            })
            .collect()
    }

    /// The command a box runs: Entrypoint then Cmd, as `docker run` does.
    pub fn command(&self) -> Vec<String> {
        let Some(config) = self.config.config() else {
            return Vec::new();
        };
        let mut argv = config.entrypoint().clone().unwrap_or_default();
        argv.extend(config.cmd().clone().unwrap_or_default());
        argv
    }

    /// `created_by` of the history entries that made a layer, bottom first
    /// (entries marked empty_layer, such as CMD, made none).
    pub fn layer_history(&self) -> Vec<Option<String>> {
        let history = self.config.history().clone().unwrap_or_default();
        let mut made = history
            .iter()
            .filter(|h| !h.empty_layer().unwrap_or(false))
            .map(|h| h.created_by().clone());
        self.manifest
            .layers()
            .iter()
            .map(|_| made.next().flatten())
            .collect()
    }
}

/// One layer ready for overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Digest of the blob as stored (compressed or not).
    pub digest: Digest,
    /// Digest of the uncompressed tar: the layer's identity.
    pub diff_id: Digest,
    /// Size of the stored blob in bytes.
    pub size: u64,
    pub created_by: Option<String>,
    /// The unpacked layer, an overlay lowerdir.
    pub dir: PathBuf,
}

/// A layer is looked up by its directory.
impl AsRef<Path> for LayerInfo {
    fn as_ref(&self) -> &Path {
        &self.dir
    }
}

#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
    options: UnpackOptions,
}

/// Unique temporary names within this process (the pid tells processes apart).
fn temp_name(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        ".{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// reader never sees half a file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(temp_name("write"));
    let mut file = File::create(&temp).map_err(io_err("creating", &temp))?;
    file.write_all(bytes).map_err(io_err("writing", &temp))?;
    file.sync_all().map_err(io_err("syncing", &temp))?;
    fs::rename(&temp, path).map_err(io_err("renaming", &temp))
}

/// Layer media types damda unpacks, and whether each is gzip-compressed.
fn layer_compression(media: &MediaType) -> Option<bool> {
    match media.to_string().as_str() {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar" => Some(false),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => Some(true),
        _ => None,
    }
}

impl ImageStore {
    /// Opens (creating if needed) the layout at `root`, unpacking layers
    /// with the default limits and no owner shift.
    pub fn open(root: &Path) -> Result<ImageStore, StoreError> {
        Self::open_with(root, UnpackOptions::default())
    }

    /// As `open`, with other limits or an owner offset. Layers unpacked with
    /// an offset live in a directory of their own (see `layer_dir`).
    pub fn open_with(root: &Path, options: UnpackOptions) -> Result<ImageStore, StoreError> {
        let store = ImageStore {
            root: root.to_owned(),
            options,
        };
        let blobs = store.root.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_err("creating", &blobs))?;
        // Layers may hold set-uid files owned by root: keep host users out.
        // Only the group may pass through (0710), as Docker's overlay2
        // directory under userns-remap: the boxes' mapped root group, which
        // mounts the layers from inside its user namespace.
        let layers = store.root.join("layers");
        if let Err(err) = fs::DirBuilder::new().mode(0o710).create(&layers) {
            if err.kind() != io::ErrorKind::AlreadyExists {
                return Err(io_err("creating", &layers)(err));
            }
        }
        fs::set_permissions(&layers, fs::Permissions::from_mode(0o710))
            .map_err(io_err("chmod", &layers))?;
        if options.owner_offset != 0 {
            std::os::unix::fs::chown(&layers, None, Some(options.owner_offset))
                .map_err(io_err("chown", &layers))?;
        }
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            let text = format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}");
            write_atomic(&layout, text.as_bytes())?;
        }
        if !store.index_path().exists() {
            store.write_index(&store.empty_index()?)?;
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Where a blob lives; only a validated sha256 digest makes a path.
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf, StoreError> {
        let hex = digest::sha256_hex(digest).map_err(|source| StoreError::Digest {
            path: self.root.join("blobs"),
            source,
        })?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Where the layer with `diff_id` is (or will be) unpacked.
    pub fn layer_dir(&self, diff_id: &Digest) -> Result<PathBuf, StoreError> {
        let hex = digest::sha256_hex(diff_id).map_err(|source| StoreError::Digest {
            path: self.root.join("layers"),
            source,
        })?;
        let name = match self.options.owner_offset {
            0 => hex.to_owned(),
            offset => format!("{hex}-owner{offset}"),
        };
        Ok(self.root.join("layers").join(name))
    }

    /// Stores what `reader` yields as a blob. With `expected`, a blob that
    /// hashes otherwise is refused (and nothing is kept); a blob already
    /// present and intact is not written again. `copied` hears of every chunk.
    pub fn write_blob<R: Read>(
        &self,
        mut reader: R,
        expected: Option<&Digest>,
        copied: &mut dyn FnMut(u64),
    ) -> Result<(Digest, u64), StoreError> {
        if let Some(expected) = expected {
            let path = self.blob_path(expected)?;
            if path.is_file() && self.verify_blob(expected).is_ok() {
                let size = fs::metadata(&path).map_err(io_err("reading", &path))?.len();
                return Ok((expected.clone(), size));
            }
        }
        let dir = self.root.join("blobs/sha256");
        let temp = dir.join(temp_name("blob"));
        let file = File::create(&temp).map_err(io_err("creating", &temp))?;
        let mut writer = Hashing::new(file);
        let mut buffer = vec![0; 256 << 10];
        let copy = (|| -> io::Result<()> {
            loop {
                let n = reader.read(&mut buffer)?;
                if n == 0 {
                    return writer.get_mut().sync_all();
                }
                writer.write_all(&buffer[..n])?;
                copied(n as u64);
            }
        })();
        let (found, size, _) = writer.finish();
        let checked = copy.map_err(io_err("writing", &temp)).and_then(|()| {
            expected.map_or(Ok(()), |expected| {
                digest::check(expected, &found).map_err(|source| StoreError::Digest {
                    path: temp.clone(),
                    source,
                })
            })
        });
        if let Err(err) = checked {
            let _ = fs::remove_file(&temp);
            return Err(err);
        }
        let path = self.blob_path(&found)?;
        fs::rename(&temp, &path).map_err(io_err("renaming", &temp))?;
        Ok((found, size))
    }

    /// Stores bytes already in memory (a manifest, a config).
    pub fn write_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64), StoreError> {
        self.write_blob(bytes, Some(&digest::of_bytes(bytes)), &mut |_| {})
    }

    fn open_blob(&self, digest: &Digest) -> Result<(File, PathBuf), StoreError> {
        let path = self.blob_path(digest)?;
        match File::open(&path) {
            Ok(file) => Ok((file, path)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Err(StoreError::MissingBlob {
                digest: digest.clone(),
            }),
            Err(err) => Err(io_err("opening", &path)(err)),
        }
    }

    /// Recomputes a blob's digest; refuses one that does not match its name.
    pub fn verify_blob(&self, digest: &Digest) -> Result<u64, StoreError> {
        let (file, path) = self.open_blob(digest)?;
        let mut reader = Hashing::new(BufReader::new(file));
        io::copy(&mut reader, &mut io::sink()).map_err(io_err("reading", &path))?;
        let (found, size, _) = reader.finish();
        digest::check(digest, &found).map_err(|source| StoreError::Digest { path, source })?;
        Ok(size)
    }

    /// A small blob's bytes, verified.
    pub fn read_blob(&self, digest: &Digest, what: &'static str) -> Result<Vec<u8>, StoreError> {
        let (file, path) = self.open_blob(digest)?;
        let size = file.metadata().map_err(io_err("reading", &path))?.len();
        if size > MAX_JSON_BLOB {
            return Err(StoreError::TooLarge {
                what,
                digest: digest.clone(),
                size,
                limit: MAX_JSON_BLOB,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(MAX_JSON_BLOB)
            .read_to_end(&mut bytes)
            .map_err(io_err("reading", &path))?;
        digest::check(digest, &digest::of_bytes(&bytes))
            .map_err(|source| StoreError::Digest { path, source })?;
        Ok(bytes)
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
        what: &'static str,
    ) -> Result<T, StoreError> {
        let bytes = self.read_blob(digest, what)?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what,
            path: self.blob_path(digest).unwrap_or_default(),
            source,
        })
    }

    fn empty_index(&self) -> Result<ImageIndex, StoreError> {
        ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(Vec::<Descriptor>::new())
            .build()
            .map_err(|source| StoreError::Spec {
                what: "index",
                source,
            })
    }

    fn read_index(&self) -> Result<ImageIndex, StoreError> {
        let path = self.index_path();
        let bytes = fs::read(&path).map_err(io_err("reading", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Json {
            what: "index",
            path,
            source,
        })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), StoreError> {
        let path = self.index_path();
        let bytes = serde_json::to_vec_pretty(index).map_err(|source| StoreError::Json {
            what: "index",
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes)
    }

    /// Serialises read-modify-write of index.json between processes.
    fn lock(&self) -> Result<Flock<File>, StoreError> {
        let path = self.root.join(".lock");
        let file = File::create(&path).map_err(io_err("creating", &path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| StoreError::Io {
            action: "locking",
            path,
            source: errno.into(),
        })
    }

    /// Names the manifest `manifest` (already stored) as `reference`,
    /// replacing what the name meant before.
    pub fn tag(&self, reference: &Reference, manifest: &Digest) -> Result<(), StoreError> {
        let size = self.verify_blob(manifest)?;
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let name = reference.to_string();
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| ref_name(d) != Some(name.as_str()))
            .cloned()
            .collect();
        let mut descriptor = Descriptor::new(MediaType::ImageManifest, size, manifest.clone());
        descriptor.set_annotations(Some(HashMap::from([(
            ANNOTATION_REF_NAME.to_owned(),
            name,
        )])));
        manifests.push(descriptor);
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// The manifest digest a name points at, if any.
    pub fn resolve(&self, reference: &Reference) -> Result<Option<Digest>, StoreError> {
        let name = reference.to_string();
        Ok(self
            .read_index()?
            .manifests()
            .iter()
            .find(|d| ref_name(d) == Some(name.as_str()))
            .map(|d| d.digest().clone()))
    }

    /// An image with its manifest and config, both verified.
    pub fn image(&self, reference: &Reference) -> Result<Image, StoreError> {
        let manifest_digest = self
            .resolve(reference)?
            .ok_or_else(|| StoreError::NotFound(reference.clone()))?;
        let manifest: ImageManifest = self.read_json(&manifest_digest, "manifest")?;
        let config_digest = manifest.config().digest().clone();
        let config: ImageConfiguration = self.read_json(&config_digest, "config")?;
        let (layers, diff_ids) = (manifest.layers().len(), config.rootfs().diff_ids().len());
        if layers != diff_ids {
            return Err(StoreError::LayerCount {
                reference: reference.clone(),
                layers,
                diff_ids,
            });
        }
        Ok(Image {
            reference: reference.clone(),
            manifest_digest,
            manifest,
            config_digest,
            config,
        })
    }

    /// Every named image, in the order they were tagged.
    pub fn images(&self) -> Result<Vec<Image>, StoreError> {
        let index = self.read_index()?;
        index
            .manifests()
            .iter()
            .filter_map(ref_name)
            .map(|name| self.image(&Reference::parse(name)?))
            .collect()
    }

    /// Unpacks a layer blob (verifying its digest and its diff id on the
    /// way) unless it is unpacked already; returns its directory.
    pub fn unpack_layer(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
    ) -> Result<PathBuf, StoreError> {
        let dir = self.layer_dir(diff_id)?;
        if dir.is_dir() {
            return Ok(dir);
        }
        let gzip = layer_compression(layer.media_type()).ok_or_else(|| StoreError::MediaType {
            what: "layer",
            digest: layer.digest().clone(),
            media_type: layer.media_type().to_string(),
        })?;
        let layers = self.root.join("layers");
        let staging = layers.join(temp_name("unpack"));
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&staging)
            .map_err(io_err("creating", &staging))?;
        let outcome = self.unpack_into(layer, diff_id, gzip, &staging);
        if let Err(err) = outcome {
            let _ = fs::remove_dir_all(&staging);
            return Err(err);
        }
        match fs::rename(&staging, &dir) {
            Ok(()) => Ok(dir),
            // Another process unpacked the same layer meanwhile.
            Err(_) if dir.is_dir() => {
                let _ = fs::remove_dir_all(&staging);
                Ok(dir)
            }
            Err(err) => Err(io_err("renaming", &staging)(err)),
        }
    }

    fn unpack_into(
        &self,
        layer: &Descriptor,
        diff_id: &Digest,
        gzip: bool,
        staging: &Path,
    ) -> Result<(), StoreError> {
        let digest = layer.digest();
        let (file, path) = self.open_blob(digest)?;
        let mut blob = BufReader::with_capacity(256 << 10, Hashing::new(file));
        let unpack_err = |source| StoreError::Unpack {
            digest: digest.clone(),
            source,
        };
        let read_err = io_err("reading", &path);
        // Read to the end: trailing padding counts in both digests.
        let found_diff = if gzip {
            let mut tar = Hashing::new(flate2::bufread::MultiGzDecoder::new(&mut blob));
            unpack(&mut tar, staging, &self.options).map_err(unpack_err)?;
            io::copy(&mut tar, &mut io::sink()).map_err(read_err)?;
            tar.finish().0
        } else {
            let mut tar = Hashing::new(&mut blob);
            unpack(&mut tar, staging, &self.options).map_err(unpack_err)?;
            io::copy(&mut tar, &mut io::sink()).map_err(read_err)?;
            tar.finish().0
        };
        io::copy(&mut blob, &mut io::sink()).map_err(io_err("reading", &path))?;
        let (found, _, _) = blob.into_inner().finish();
        digest::check(digest, &found).map_err(|source| StoreError::Digest {
            path: path.clone(),
            source,
        })?;
        digest::check(diff_id, &found_diff).map_err(|source| StoreError::Digest { path, source })
    }

    /// The image's layers, bottom first, each unpacked (once) and ready to
    /// be an overlay lowerdir. (overlay's lowerdir= option lists them the
    /// other way round, top first.)
    pub fn unpacked_layers(&self, image: &Image) -> Result<Vec<LayerInfo>, StoreError> {
        let history = image.layer_history();
        image
            .manifest
            .layers()
            .iter()
            .zip(image.diff_ids()?)
            .zip(history)
            .map(|((layer, diff_id), created_by)| {
                let dir = self.unpack_layer(layer, &diff_id)?;
                Ok(LayerInfo {
                    digest: layer.digest().clone(),
                    diff_id,
                    size: layer.size(),
                    created_by,
                    dir,
                })
            })
            .collect()
    }
}

fn ref_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations()
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_REF_NAME))
        .map(String::as_str)
}

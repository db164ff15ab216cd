//! `damda import PATH`: an image a user already has, from a `docker save`
//! tarball (manifest.json with `<id>/layer.tar` or, since Docker 25,
//! `blobs/sha256/…` paths), an OCI image layout directory, or an OCI layout
//! tar (plain or gzip-compressed). Every blob is verified against its
//! digest as it is stored, every layer against its diff id as it is
//! unpacked; the stored manifest always uses the OCI media types.

use super::reference::{Reference, ReferenceError};
use super::store::{ImageStore, StoreError};
use oci_spec::image::{
    Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder,
    MediaType, ANNOTATION_REF_NAME,
};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Metadata files are small; a larger one is not read into memory.
const MAX_METADATA: u64 = 16 << 20;
/// containerd's (and Docker 25's) annotation with the full image name;
/// OCI's ref.name often holds only the tag.
const CONTAINERD_NAME: &str = "io.containerd.image.name";

pub use damda_protocol::{ImportProgress as Progress, ImportStage as Stage};

/// `reading   12.3 / 45.6 MiB  27%`, the command line's progress line.
pub fn progress_line(progress: &Progress) -> String {
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    format!(
        "{:<9} {:>8.1} / {:.1} MiB {:>3}%",
        progress.stage.as_str(),
        mib(progress.done),
        mib(progress.total),
        progress.percent()
    )
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} is not an image archive damda reads: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("{what} in {path}: {source}")]
    Json {
        what: &'static str,
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} names no image (or only a tag): give one with --name")]
    NoName { path: PathBuf },
    #[error("--name names one image but {path} holds {count}")]
    NameForMany { path: PathBuf, count: usize },
    #[error("building the manifest: {0}")]
    Spec(#[source] oci_spec::OciSpecError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ImportError {
    let path = path.to_owned();
    move |source| ImportError::Io {
        action,
        path,
        source,
    }
}

fn malformed(path: &Path, reason: impl Into<String>) -> ImportError {
    ImportError::Malformed {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// One image of `docker save`'s manifest.json.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Counts bytes read from the archive file for the progress line, and
/// reports every MiB (tar reads 512-byte headers one by one).
struct Counting<'a, R> {
    inner: R,
    done: u64,
    reported: u64,
    total: u64,
    progress: &'a mut dyn FnMut(Progress),
}

impl<R> Counting<'_, R> {
    fn advance(&mut self, bytes: usize) {
        self.done += bytes as u64;
        if self.done - self.reported < 1 << 20 && self.done < self.total {
            return;
        }
        self.reported = self.done;
        (self.progress)(Progress {
            stage: Stage::Reading,
            done: self.done,
            total: self.total,
        });
    }
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.advance(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for Counting<'_, R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
        self.advance(amount);
    }
}

/// A path inside an archive, without `./`; `None` if it would leave it.
fn archive_path(raw: &str) -> Option<String> {
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    (!raw.starts_with('/')).then(|| parts.join("/"))
}

/// Where the archive's blobs come from once its metadata is read.
enum Blobs {
    /// Already streamed into the store; `files` maps archive paths to them.
    Stored {
        files: HashMap<String, Digest>,
        links: HashMap<String, String>,
    },
    /// An OCI layout directory: copied in on demand.
    Directory(PathBuf),
}

struct Importer<'a> {
    store: &'a ImageStore,
    source: PathBuf,
    blobs: Blobs,
    metadata: HashMap<String, Vec<u8>>,
}

/// Imports every image in `path`; returns the names stored. `name` replaces
/// the archive's own name (and is needed when it has none).
pub fn import(
    store: &ImageStore,
    path: &Path,
    name: Option<&Reference>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Reference>, ImportError> {
    let meta = std::fs::metadata(path).map_err(io_err("reading", path))?;
    let importer = if meta.is_dir() {
        let mut metadata = HashMap::new();
        for file in ["oci-layout", "index.json"] {
            let at = path.join(file);
            let bytes = std::fs::read(&at).map_err(|_| {
                malformed(
                    path,
                    format!("a directory must be an OCI layout, and {file} is missing"),
                )
            })?;
            metadata.insert(file.to_owned(), bytes);
        }
        Importer {
            store,
            source: path.to_owned(),
            blobs: Blobs::Directory(path.to_owned()),
            metadata,
        }
    } else {
        read_archive(store, path, meta.len(), progress)?
    };
    let images = importer.images(name)?;
    if name.is_some() && images.len() > 1 {
        return Err(ImportError::NameForMany {
            path: path.to_owned(),
            count: images.len(),
        });
    }
    let total: u64 = images
        .iter()
        .flat_map(|(_, m)| m.layers().iter().map(|l| l.size()))
        .sum();
    let mut done = 0;
    let mut names = Vec::new();
    for (reference, manifest) in images {
        let bytes = serde_json::to_vec(&manifest).map_err(|source| ImportError::Json {
            what: "the new manifest",
            path: importer.source.clone(),
            source,
        })?;
        let (digest, _) = store.write_bytes(&bytes)?;
        store.tag(&reference, &digest)?;
        progress(Progress {
            stage: Stage::Unpacking,
            done,
            total,
        });
        for layer in store.unpacked_layers(&store.image(&reference)?)? {
            done += layer.size;
            progress(Progress {
                stage: Stage::Unpacking,
                done,
                total,
            });
        }
        names.push(reference);
    }
    Ok(names)
}

/// Streams a tar (or tar.gz) once: blobs go into the store as they pass,
/// metadata files into memory.
fn read_archive<'a>(
    store: &'a ImageStore,
    path: &Path,
    total: u64,
    progress: &mut dyn FnMut(Progress),
) -> Result<Importer<'a>, ImportError> {
    let file = File::open(path).map_err(io_err("opening", path))?;
    let mut counted = Counting {
        inner: BufReader::with_capacity(256 << 10, file),
        done: 0,
        reported: 0,
        total,
        progress,
    };
    let gzipped = counted
        .fill_buf()
        .map_err(io_err("reading", path))?
        .starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read + '_> = if gzipped {
        Box::new(flate2::bufread::MultiGzDecoder::new(counted))
    } else {
        Box::new(counted)
    };
    let mut archive = tar::Archive::new(reader);
    let mut files = HashMap::new();
    let mut links = HashMap::new();
    let mut metadata = HashMap::new();
    let read_err = |e: io::Error| malformed(path, format!("reading the tar: {e}"));
    for entry in archive.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = archive_path(&raw)
            .ok_or_else(|| malformed(path, format!("entry {raw:?} leaves the archive")))?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink => {
                // docker save links a layer it already wrote.
                let target = entry
                    .link_name()
                    .map_err(read_err)?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let dir = name.rsplit_once('/').map_or("", |(dir, _)| dir);
                let joined = archive_path(&format!("{dir}/{target}"))
                    .ok_or_else(|| malformed(path, format!("link {raw:?} leaves the archive")))?;
                links.insert(name, joined);
                continue;
            }
            _ => continue,
        }
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let digest = Digest::try_from(format!("sha256:{hex}"))
                .map_err(|e| malformed(path, format!("blob {raw:?}: {e}")))?;
            store.write_blob(&mut entry, Some(&digest), &mut |_| {})?;
            files.insert(name, digest);
        } else if matches!(name.as_str(), "manifest.json" | "index.json" | "oci-layout") {
            if entry.size() > MAX_METADATA {
                return Err(malformed(path, format!("{name} is larger than 16 MiB")));
            }
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(read_err)?;
            metadata.insert(name, bytes);
        } else if name.ends_with(".tar") || name.ends_with(".json") {
            // Legacy docker save: <id>/layer.tar and <id>.json, digested here.
            let (digest, _) = store.write_blob(&mut entry, None, &mut |_| {})?;
            files.insert(name, digest);
        }
    }
    // The tar's end-of-archive padding (and a gzip trailer, checked here).
    io::copy(&mut archive.into_inner(), &mut io::sink()).map_err(read_err)?;
    Ok(Importer {
        store,
        source: path.to_owned(),
        blobs: Blobs::Stored { files, links },
        metadata,
    })
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The OCI media type for Docker's names of the same things.
fn oci_media_type(media: &MediaType) -> MediaType {
    match media.to_string().as_str() {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => MediaType::ImageLayerGzip,
        "application/vnd.docker.image.rootfs.diff.tar" => MediaType::ImageLayer,
        "application/vnd.docker.container.image.v1+json" => MediaType::ImageConfig,
        _ => media.clone(),
    }
}

impl Importer<'_> {
    fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &'static str,
        bytes: &[u8],
    ) -> Result<T, ImportError> {
        serde_json::from_slice(bytes).map_err(|source| ImportError::Json {
            what,
            path: self.source.clone(),
            source,
        })
    }

    /// Makes sure the store holds `digest` (copying it in from a layout
    /// directory, verified) and returns its size.
    fn ensure(&self, digest: &Digest) -> Result<u64, ImportError> {
        match &self.blobs {
            Blobs::Directory(dir) => {
                let hex =
                    super::digest::sha256_hex(digest).map_err(|e| malformed(dir, e.to_string()))?;
                let at = dir.join("blobs/sha256").join(hex);
                let file = File::open(&at).map_err(io_err("opening", &at))?;
                Ok(self.store.write_blob(file, Some(digest), &mut |_| {})?.1)
            }
            // Verified as it was streamed in; unpacking verifies layers again.
            Blobs::Stored { .. } => {
                let path = self.store.blob_path(digest)?;
                match std::fs::metadata(&path) {
                    Ok(meta) => Ok(meta.len()),
                    Err(_) => Err(malformed(&self.source, format!("blob {digest} is missing"))),
                }
            }
        }
    }

    /// The stored blob of an archive path (following docker save's links).
    fn file(&self, name: &str) -> Result<Digest, ImportError> {
        let Blobs::Stored { files, links } = &self.blobs else {
            return Err(malformed(&self.source, "manifest.json in a directory"));
        };
        let mut at = archive_path(name).unwrap_or_default();
        for _ in 0..8 {
            if let Some(digest) = files.get(&at) {
                return Ok(digest.clone());
            }
            match links.get(&at) {
                Some(next) => at = next.clone(),
                None => break,
            }
        }
        Err(malformed(&self.source, format!("{name} is missing")))
    }

    /// The images the archive holds: names and OCI manifests to store.
    fn images(
        &self,
        name: Option<&Reference>,
    ) -> Result<Vec<(Reference, ImageManifest)>, ImportError> {
        if let Some(bytes) = self.metadata.get("manifest.json") {
            let entries: Vec<DockerEntry> = self.json("manifest.json", bytes)?;
            return entries.iter().map(|e| self.docker_image(e, name)).collect();
        }
        let Some(bytes) = self.metadata.get("index.json") else {
            return Err(malformed(
                &self.source,
                "it has neither manifest.json (docker save) nor index.json (OCI layout)",
            ));
        };
        if !self.metadata.contains_key("oci-layout") {
            return Err(malformed(
                &self.source,
                "index.json without an oci-layout file",
            ));
        }
        let index: ImageIndex = self.json("index.json", bytes)?;
        index
            .manifests()
            .iter()
            .map(|d| self.oci_image(d, name))
            .collect()
    }

    fn docker_image(
        &self,
        entry: &DockerEntry,
        name: Option<&Reference>,
    ) -> Result<(Reference, ImageManifest), ImportError> {
        let reference = match (name, entry.repo_tags.as_deref()) {
            (Some(name), _) => name.clone(),
            (None, Some([first, ..])) => Reference::parse(first)?,
            _ => {
                return Err(ImportError::NoName {
                    path: self.source.clone(),
                })
            }
        };
        let config = self.file(&entry.config)?;
        let mut layers = Vec::new();
        for layer in &entry.layers {
            let digest = self.file(layer)?;
            let size = self.ensure(&digest)?;
            let media = if self.is_gzip(&digest)? {
                MediaType::ImageLayerGzip
            } else {
                MediaType::ImageLayer
            };
            layers.push(Descriptor::new(media, size, digest));
        }
        let config_size = self.ensure(&config)?;
        let manifest = self.manifest(
            Descriptor::new(MediaType::ImageConfig, config_size, config),
            layers,
        )?;
        Ok((reference, manifest))
    }

    fn is_gzip(&self, digest: &Digest) -> Result<bool, ImportError> {
        let path = self.store.blob_path(digest)?;
        let mut magic = [0u8; 2];
        let mut file = File::open(&path).map_err(io_err("opening", &path))?;
        let n = file.read(&mut magic).map_err(io_err("reading", &path))?;
        Ok(n == 2 && magic == [0x1f, 0x8b])
    }

    /// An OCI manifest with OCI media types, after checking that the config
    /// parses and names as many diff ids as there are layers.
    fn manifest(
        &self,
        config: Descriptor,
        layers: Vec<Descriptor>,
    ) -> Result<ImageManifest, ImportError> {
        let bytes = self.store.read_blob(config.digest(), "config")?;
        let parsed: ImageConfiguration = self.json("the image config", &bytes)?;
        if parsed.rootfs().diff_ids().len() != layers.len() {
            return Err(malformed(
                &self.source,
                format!(
                    "config {} has {} diff ids for {} layers",
                    config.digest(),
                    parsed.rootfs().diff_ids().len(),
                    layers.len()
                ),
            ));
        }
        ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(layers)
            .build()
            .map_err(ImportError::Spec)
    }

    fn oci_image(
        &self,
        descriptor: &Descriptor,
        name: Option<&Reference>,
    ) -> Result<(Reference, ImageManifest), ImportError> {
        let annotations = descriptor.annotations().clone().unwrap_or_default();
        let own = annotations.get(CONTAINERD_NAME).or_else(|| {
            annotations
                .get(ANNOTATION_REF_NAME)
                .filter(|n| n.contains('/') || n.contains(':'))
        });
        let reference = match (name, own) {
            (Some(name), _) => name.clone(),
            (None, Some(own)) => Reference::parse(own)?,
            (None, None) => {
                return Err(ImportError::NoName {
                    path: self.source.clone(),
                })
            }
        };
        let manifest_digest = self.platform_manifest(descriptor)?;
        let bytes = self.store.read_blob(&manifest_digest, "manifest")?;
        let manifest: ImageManifest = self.json("a manifest", &bytes)?;
        let mut layers = Vec::new();
        for layer in manifest.layers() {
            let size = self.ensure(layer.digest())?;
            layers.push(Descriptor::new(
                oci_media_type(layer.media_type()),
                size,
                layer.digest().clone(),
            ));
        }
        let config = manifest.config();
        let config_size = self.ensure(config.digest())?;
        let manifest = self.manifest(
            Descriptor::new(MediaType::ImageConfig, config_size, config.digest().clone()),
            layers,
        )?;
        Ok((reference, manifest))
    }

    /// The manifest a descriptor leads to: itself, or from an image index
    /// the one for this host's platform.
    fn platform_manifest(&self, descriptor: &Descriptor) -> Result<Digest, ImportError> {
        let mut current = descriptor.clone();
        for _ in 0..4 {
            self.ensure(current.digest())?;
            let media = current.media_type().to_string();
            let is_index = media == MediaType::ImageIndex.to_string()
                || media == "application/vnd.docker.distribution.manifest.list.v2+json";
            if !is_index {
                return Ok(current.digest().clone());
            }
            let bytes = self.store.read_blob(current.digest(), "index")?;
            let index: ImageIndex = self.json("an image index", &bytes)?;
            let pick = index
                .manifests()
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_some_and(|p| {
                        p.os().to_string() == "linux" && p.architecture().to_string() == host_arch()
                    })
                })
                .ok_or_else(|| {
                    malformed(
                        &self.source,
                        format!(
                            "index {} has no linux/{} image",
                            current.digest(),
                            host_arch()
                        ),
                    )
                })?;
            current = pick.clone();
        }
        Err(malformed(&self.source, "image indexes nest too deep"))
    }
}

//! The default image, `damda.local/busybox-httpd:latest`, built at set-up
//! from the prepared rootfs (Debian's busybox-static), never downloaded.
//! Three layers, as a Dockerfile of three COPY lines would make them:
//! the userland (busybox and its applet links), the configuration under
//! /etc, and an application layer with a web page under /www.
//!
//! The tars are deterministic (sorted entries, owner 0:0, mtime 0), so the
//! diff ids, and with them the config digest, are the same on every run.

use super::digest;
use super::provenance::{is_opaque, is_whiteout};
use super::reference::Reference;
use super::store::{ImageStore, LayerInfo, StoreError};
use super::unpack::{WHITEOUT_OPAQUE, WHITEOUT_PREFIX};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, Digest, HistoryBuilder, ImageConfiguration,
    ImageConfigurationBuilder, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const DEFAULT_IMAGE: &str = "damda.local/busybox-httpd:latest";

const MOTD: &str = "\
damda 상자에 오신 것을 환영합니다. 이 파일은 이미지의 /etc 계층에서 왔습니다.
Welcome to a damda box. This file comes from the image's /etc layer.
";

const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

const INDEX_HTML: &str = r#"<!doctype html>
<html lang="ko">
<head><meta charset="utf-8"><title>damda</title></head>
<body>
<h1>damda 상자에서 보낸 페이지</h1>
<p>이 페이지는 이미지의 세 번째 계층(/www)에 들어 있고, 상자 안의 busybox httpd가 보냈습니다.</p>
<h1 lang="en">A page sent from a damda box</h1>
<p lang="en">This page lives in the image's third layer (/www) and was served by busybox httpd inside the box.</p>
</body>
</html>
"#;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{path} holds {kind}, which the default image does not take")]
    Unexpected { path: PathBuf, kind: &'static str },
    #[error("building the image {what}: {source}")]
    Spec {
        what: &'static str,
        source: oci_spec::OciSpecError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub(super) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BuildError {
    let path = path.to_owned();
    move |source| BuildError::Io {
        action,
        path,
        source,
    }
}

pub(super) fn spec(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> BuildError {
    move |source| BuildError::Spec { what, source }
}

/// One file system entry of a layer, at its path inside the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    Symlink { target: PathBuf },
}

/// Every entry under `dir` (relative to `base`), sorted by path, without
/// `skip` (damda's own mount points in a box's upper directory). Overlay's
/// marks become what a layer tarball carries: a 0:0 character-device
/// whiteout an empty `.wh.NAME` file, an opaque directory a `.wh..wh..opq`
/// entry (a prepared rootfs has neither).
pub(super) fn collect(
    base: &Path,
    dir: &Path,
    skip: &[String],
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
            .strip_prefix(base)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        if skip.iter().any(|s| s.trim_start_matches('/') == rel) {
            continue;
        }
        let meta = fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
        let mode = meta.permissions().mode() & 0o7777;
        let kind = meta.file_type();
        if is_whiteout(&meta) {
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
            if is_opaque(&path) {
                out.push((
                    format!("{rel}/{WHITEOUT_OPAQUE}"),
                    Item::File {
                        mode: 0o644,
                        data: Vec::new(),
                    },
                ));
            }
            collect(base, &path, skip, out)?;
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

/// What a container of these layers sees, as overlay would show it: each
/// layer in order over the ones before, a `.wh.NAME` removing NAME and all
/// below it, a `.wh..wh..opq` hiding what the layers before put in its
/// directory. Keyed by path inside the image (no leading /).
pub fn flatten(layers: &[LayerInfo]) -> Result<BTreeMap<String, Item>, BuildError> {
    let mut tree = BTreeMap::new();
    for layer in layers {
        let mut items = Vec::new();
        collect(&layer.dir, &layer.dir, &[], &mut items)?;
        for (path, item) in items {
            let (parent, name) = match path.rsplit_once('/') {
                Some((parent, name)) => (format!("{parent}/"), name),
                None => (String::new(), path.as_str()),
            };
            if name == WHITEOUT_OPAQUE {
                tree.retain(|p: &String, _| !p.starts_with(&parent));
            } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                let hidden = format!("{parent}{hidden}");
                let below = format!("{hidden}/");
                tree.retain(|p: &String, _| *p != hidden && !p.starts_with(&below));
            } else {
                tree.insert(path, item);
            }
        }
    }
    Ok(tree)
}

/// A deterministic layer tar of `items`.
pub(super) fn layer_tar(items: &[(String, Item)]) -> Result<Vec<u8>, BuildError> {
    let mut builder = tar::Builder::new(Vec::new());
    let tar_err = io_err("writing a layer tar for", Path::new("the default image"));
    for (path, item) in items {
        let mut header = tar::Header::new_ustar();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let outcome = match item {
            Item::Dir { mode } => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(*mode);
                header.set_size(0);
                builder.append_data(&mut header, format!("{path}/"), io::empty())
            }
            Item::File { mode, data } => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(*mode);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, data.as_slice())
            }
            Item::Symlink { target } => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_mode(0o777);
                header.set_size(0);
                builder.append_link(&mut header, path, target)
            }
        };
        outcome.map_err(|e| io_err("adding", Path::new(path))(e))?;
    }
    builder.into_inner().map_err(tar_err)
}

/// Gzip with a fixed header (no name, mtime 0): same input, same bytes.
pub(super) fn gzip(tar: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    encoder.write_all(tar)?;
    encoder.finish()
}

/// The three layers' entries, split from the prepared rootfs.
fn split_rootfs(rootfs: &Path) -> Result<[Vec<(String, Item)>; 3], BuildError> {
    let mut all = Vec::new();
    collect(rootfs, rootfs, &[], &mut all)?;
    let (mut etc, mut userland): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(path, _)| path == "etc" || path.starts_with("etc/"));
    // The app layer owns /www; the rootfs's empty var/www stays in userland.
    userland.retain(|(path, _)| path != "www" && !path.starts_with("www/"));
    if etc.is_empty() {
        etc.push(("etc".into(), Item::Dir { mode: 0o755 }));
    }
    for (name, text) in [("etc/motd", MOTD), ("etc/hosts", HOSTS)] {
        if !etc.iter().any(|(path, _)| path == name) {
            etc.push((
                name.into(),
                Item::File {
                    mode: 0o644,
                    data: text.as_bytes().to_vec(),
                },
            ));
        }
    }
    etc.sort_by(|a, b| a.0.cmp(&b.0));
    let www = vec![
        ("www".into(), Item::Dir { mode: 0o755 }),
        (
            "www/index.html".into(),
            Item::File {
                mode: 0o644,
                data: INDEX_HTML.as_bytes().to_vec(),
            },
        ),
    ];
    Ok([userland, etc, www])
}

/// RFC 3339 of the busybox binary's mtime (when Debian built it): a fixed
/// date for a given package, so the config digest stays the same.
fn created(busybox: &Path) -> String {
    let seconds = fs::metadata(busybox).map(|m| m.mtime()).unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Stores `config` and a manifest naming it and `layers` (already stored);
/// returns the manifest's digest. `source` is what the image was made from,
/// for errors.
pub(super) fn store_manifest(
    store: &ImageStore,
    config: &ImageConfiguration,
    layers: Vec<Descriptor>,
    source: &Path,
) -> Result<Digest, BuildError> {
    let config_bytes =
        serde_json::to_vec(config).map_err(|e| io_err("encoding", source)(e.into()))?;
    let (config_digest, config_size) = store.write_bytes(&config_bytes)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::ImageConfig,
            config_size,
            config_digest,
        ))
        .layers(layers)
        .build()
        .map_err(spec("manifest"))?;
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| io_err("encoding", source)(e.into()))?;
    Ok(store.write_bytes(&manifest_bytes)?.0)
}

/// What `build_default` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub reference: Reference,
    pub manifest: Digest,
    /// False when the name already pointed at this very manifest.
    pub changed: bool,
}

/// Builds the default image from `rootfs` into `store` and unpacks its
/// layers. Idempotent: the same rootfs gives the same digests, and blobs
/// already stored and intact are not written again.
pub fn build_default(store: &ImageStore, rootfs: &Path) -> Result<Built, BuildError> {
    let reference = Reference::parse(DEFAULT_IMAGE).map_err(StoreError::from)?;
    let created_by = [
        "COPY busybox /bin/ # busybox-static and its applet links",
        "COPY etc /etc",
        "COPY www /www",
    ];
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for items in split_rootfs(rootfs)? {
        let tar = layer_tar(&items)?;
        diff_ids.push(digest::of_bytes(&tar).to_string());
        let compressed = gzip(&tar).map_err(io_err("compressing", rootfs))?;
        let (digest, size) = store.write_bytes(&compressed)?;
        layers.push(Descriptor::new(MediaType::ImageLayerGzip, size, digest));
    }
    let date = created(Path::new(crate::rootfs::BUSYBOX));
    let mut history: Vec<_> = created_by
        .iter()
        .map(|line| {
            HistoryBuilder::default()
                .created(date.clone())
                .created_by(*line)
                .build()
                .map_err(spec("history"))
        })
        .collect::<Result<_, _>>()?;
    let cmd = ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"];
    history.push(
        HistoryBuilder::default()
            .created(date.clone())
            .created_by(format!("CMD {}", serde_json::json!(cmd)))
            .empty_layer(true)
            .build()
            .map_err(spec("history"))?,
    );
    let config = ImageConfigurationBuilder::default()
        .created(date)
        .architecture(Arch::default())
        .os(Os::Linux)
        .config(
            ConfigBuilder::default()
                .cmd(cmd.map(String::from).to_vec())
                .env(vec![
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
                    "HOME=/root".to_owned(),
                ])
                .working_dir("/www")
                .exposed_ports(vec!["80/tcp".to_owned()])
                .build()
                .map_err(spec("config"))?,
        )
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids.clone())
                .build()
                .map_err(spec("rootfs"))?,
        )
        .history(history)
        .build()
        .map_err(spec("config"))?;
    let manifest_digest = store_manifest(store, &config, layers, rootfs)?;
    let changed = store.resolve(&reference)? != Some(manifest_digest.clone());
    if changed {
        store.tag(&reference, &manifest_digest)?;
    }
    store.unpacked_layers(&store.image(&reference)?)?;
    Ok(Built {
        reference,
        manifest: manifest_digest,
        changed,
    })
}

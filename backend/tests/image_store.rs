//! The image store end to end: the default image built from a rootfs
//! (deterministic, idempotent, three layers), digests verified on every
//! read, imports of `docker save` tarballs and OCI layouts (directory and
//! tar), malformed input refused, and which layer provides a path.

use damda::image::digest::of_bytes;
use damda::image::store::LayerInfo;
use damda::image::{
    build_default, import, provider, ImageStore, ImportError, Progress, Provenance, Reference,
    Stage, StoreError, UnpackOptions, DEFAULT_IMAGE,
};
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

/// A small stand-in for the prepared rootfs.
fn fake_rootfs(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "usr/bin", "etc", "tmp", "var/www"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::write(root.join("bin/busybox"), b"\x7fELF not really").unwrap();
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink("busybox", root.join("bin/sh")).unwrap();
    symlink("../../bin/busybox", root.join("usr/bin/env")).unwrap();
    fs::write(root.join("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/hostname"), b"damda-box\n").unwrap();
    root
}

fn default_reference() -> Reference {
    DEFAULT_IMAGE.parse().unwrap()
}

#[test]
fn the_default_image_is_three_verified_layers_and_the_same_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = fake_rootfs(tmp.path());
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let first = build_default(&store, &rootfs).unwrap();
    assert!(first.changed);
    let again = build_default(&store, &rootfs).unwrap();
    assert!(!again.changed, "a second build changes nothing");
    assert_eq!(first.manifest, again.manifest);
    let other = ImageStore::open(&tmp.path().join("other")).unwrap();
    assert_eq!(
        build_default(&other, &rootfs).unwrap().manifest,
        first.manifest,
        "deterministic: another store gets the same digests"
    );

    let image = store.image(&default_reference()).unwrap();
    assert_eq!(
        image.command(),
        ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]
    );
    let config = image.config.config().clone().unwrap();
    assert_eq!(config.exposed_ports().clone().unwrap(), ["80/tcp"]);
    let layers = store
        .unpacked_layers(&store.image(&default_reference()).unwrap())
        .unwrap();
    let created_by: Vec<_> = layers
        .iter()
        .map(|l| l.created_by.clone().unwrap())
        .collect();
    assert_eq!(created_by.len(), 3);
    assert!(created_by[0].starts_with("COPY busybox /bin/"));
    assert_eq!(created_by[1..], ["COPY etc /etc", "COPY www /www"]);
    for layer in &layers {
        assert_eq!(layer.dir, store.layer_dir(&layer.diff_id).unwrap());
        assert!(layer.dir.is_dir());
    }
    assert!(layers[0].dir.join("bin/busybox").is_file());
    assert!(
        !layers[0].dir.join("etc").exists(),
        "/etc is the second layer's"
    );
    let page = fs::read_to_string(layers[2].dir.join("www/index.html")).unwrap();
    assert!(page.contains("damda 상자에서 보낸 페이지"));

    assert_eq!(provider(&layers, "/bin/sh"), Provenance::Layer(0));
    assert_eq!(provider(&layers, "/usr/bin/env"), Provenance::Layer(0));
    assert_eq!(provider(&layers, "/etc/passwd"), Provenance::Layer(1));
    assert_eq!(provider(&layers, "etc/motd"), Provenance::Layer(1));
    assert_eq!(provider(&layers, "/www/index.html"), Provenance::Layer(2));
    assert_eq!(provider(&layers, "/nope"), Provenance::Missing);

    let table = damda::image::images_table(&store).unwrap();
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(
        table.contains("damda.local/busybox-httpd   latest"),
        "{table}"
    );
    let history = damda::image::history_table(&store, &default_reference()).unwrap();
    assert!(history.contains("COPY www /www"), "{history}");
    assert!(
        history.lines().nth(1).unwrap().starts_with("<none>"),
        "{history}"
    );
}

#[test]
fn a_changed_blob_is_refused_naming_both_digests() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = fake_rootfs(tmp.path());
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    build_default(&store, &rootfs).unwrap();
    let image = store.image(&default_reference()).unwrap();

    // A config edited in place.
    let config_path = store.blob_path(&image.config_digest).unwrap();
    let mut bytes = fs::read(&config_path).unwrap();
    bytes.push(b' ');
    fs::write(&config_path, &bytes).unwrap();
    let err = store.image(&default_reference()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Digest { .. }), "{err:?}");
    assert!(text.contains(&image.config_digest.to_string()), "{text}");
    assert!(text.contains(&of_bytes(&bytes).to_string()), "{text}");
    fs::write(&config_path, &bytes[..bytes.len() - 1]).unwrap();

    // A layer blob swapped before it was unpacked for the same tar
    // compressed otherwise: the content reads fine, the digest does not
    // match. Refused, and no half layer left.
    let layers = store
        .unpacked_layers(&store.image(&default_reference()).unwrap())
        .unwrap();
    fs::remove_dir_all(&layers[2].dir).unwrap();
    let blob = store.blob_path(&layers[2].digest).unwrap();
    let mut tar = Vec::new();
    let stored = fs::read(&blob).unwrap();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&stored[..]), &mut tar).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    fs::write(&blob, gz.finish().unwrap()).unwrap();
    let err = store
        .unpacked_layers(&store.image(&default_reference()).unwrap())
        .unwrap_err();
    assert!(matches!(err, StoreError::Digest { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&layers[2].digest.to_string()),
        "{err}"
    );
    assert!(!layers[2].dir.exists());
    let leftovers: Vec<_> = fs::read_dir(store.root().join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn tar_entry(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, data).unwrap();
}

fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        tar_entry(&mut builder, path, data);
    }
    builder.into_inner().unwrap()
}

/// A legacy `docker save` tarball: <id>/layer.tar, a second layer that is
/// a symlink to the first (docker save does that for repeated layers),
/// <id>.json config, manifest.json. `diff_ids` may lie.
fn docker_save(diff_ids: &[String], layer: &[u8]) -> Vec<u8> {
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": {"Cmd": ["/hello"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created_by": "ADD hello /"},
            {"created_by": "ADD hello /"},
            {"created_by": "CMD [\"/hello\"]", "empty_layer": true},
        ],
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!([{
        "Config": "cafe.json",
        "RepoTags": ["example.com/hello:v1"],
        "Layers": ["aaa/layer.tar", "bbb/layer.tar"],
    }]);
    let mut builder = tar::Builder::new(Vec::new());
    tar_entry(&mut builder, "aaa/VERSION", b"1.0");
    tar_entry(&mut builder, "aaa/layer.tar", layer);
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    link.set_mode(0o777);
    builder
        .append_link(&mut link, "bbb/layer.tar", "../aaa/layer.tar")
        .unwrap();
    tar_entry(&mut builder, "cafe.json", &config);
    tar_entry(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    builder.into_inner().unwrap()
}

#[test]
fn a_docker_save_tarball_imports_with_progress() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let layer = layer_tar(&[("hello", b"hi from a layer")]);
    let diff = of_bytes(&layer).to_string();
    let archive = tmp.path().join("hello.tar");
    fs::write(&archive, docker_save(&[diff.clone(), diff], &layer)).unwrap();

    let mut seen: Vec<Progress> = Vec::new();
    let names = import(&store, &archive, None, &mut |p| seen.push(p)).unwrap();
    let reference: Reference = "example.com/hello:v1".parse().unwrap();
    assert_eq!(names, std::slice::from_ref(&reference));
    let read = seen.iter().rfind(|p| p.stage == Stage::Reading).unwrap();
    assert_eq!(
        (read.done, read.total),
        (read.total, fs::metadata(&archive).unwrap().len())
    );
    let unpacked = seen.last().unwrap();
    assert_eq!(unpacked.stage, Stage::Unpacking);
    assert_eq!(unpacked.percent(), 100);

    let layers = store
        .unpacked_layers(&store.image(&reference).unwrap())
        .unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(
        layers[0].dir, layers[1].dir,
        "one directory per distinct layer"
    );
    assert_eq!(
        fs::read(layers[0].dir.join("hello")).unwrap(),
        b"hi from a layer"
    );
    assert_eq!(layers[1].created_by.as_deref(), Some("ADD hello /"));
    assert_eq!(store.image(&reference).unwrap().command(), ["/hello"]);

    // --name replaces the archive's own.
    let renamed: Reference = "damda.local/hello:mine".parse().unwrap();
    let names = import(&store, &archive, Some(&renamed), &mut |_| {}).unwrap();
    assert_eq!(names, [renamed]);
}

#[test]
fn oci_layouts_import_from_a_directory_and_a_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = fake_rootfs(tmp.path());
    let source = ImageStore::open(&tmp.path().join("source")).unwrap();
    let built = build_default(&source, &rootfs).unwrap();

    // The store is itself an OCI layout: import the directory.
    let from_dir = ImageStore::open(&tmp.path().join("from-dir")).unwrap();
    let names = import(&from_dir, source.root(), None, &mut |_| {}).unwrap();
    assert_eq!(names, [default_reference()]);
    assert_eq!(
        from_dir
            .unpacked_layers(&from_dir.image(&default_reference()).unwrap())
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        from_dir
            .image(&default_reference())
            .unwrap()
            .manifest_digest,
        built.manifest
    );

    // The same layout as a gzip-compressed tar (layers/ is not part of it).
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_path_with_name(source.root().join("oci-layout"), "oci-layout")
        .unwrap();
    builder
        .append_path_with_name(source.root().join("index.json"), "index.json")
        .unwrap();
    builder
        .append_dir_all("blobs", source.root().join("blobs"))
        .unwrap();
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let path = tmp.path().join("layout.tar.gz");
    fs::write(&path, gz.finish().unwrap()).unwrap();
    let from_tar = ImageStore::open(&tmp.path().join("from-tar")).unwrap();
    let name: Reference = "damda.local/copy:1".parse().unwrap();
    let names = import(&from_tar, &path, Some(&name), &mut |_| {}).unwrap();
    assert_eq!(names, std::slice::from_ref(&name));
    let layers = from_tar
        .unpacked_layers(&from_tar.image(&name).unwrap())
        .unwrap();
    assert!(layers[2].dir.join("www/index.html").is_file());

    // Docker 25's `docker save`: manifest.json naming blobs/sha256/ paths.
    let image = source.image(&default_reference()).unwrap();
    let blob = |d: &damda::image::store::Image, i: Option<usize>| {
        let digest = match i {
            Some(i) => d.manifest.layers()[i].digest().clone(),
            None => d.config_digest.clone(),
        };
        (
            format!("blobs/sha256/{}", digest.digest()),
            fs::read(source.blob_path(&digest).unwrap()).unwrap(),
        )
    };
    let mut builder = tar::Builder::new(Vec::new());
    let mut paths = Vec::new();
    for i in [None, Some(0), Some(1), Some(2)] {
        let (path, bytes) = blob(&image, i);
        tar_entry(&mut builder, &path, &bytes);
        paths.push(path);
    }
    let manifest = serde_json::json!([{
        "Config": paths[0],
        "RepoTags": ["example.com/new-docker:latest"],
        "Layers": paths[1..],
    }]);
    tar_entry(
        &mut builder,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    let path = tmp.path().join("docker25.tar");
    fs::write(&path, builder.into_inner().unwrap()).unwrap();
    let names = import(&from_tar, &path, None, &mut |_| {}).unwrap();
    assert_eq!(names[0].to_string(), "example.com/new-docker:latest");
    let layers = from_tar
        .unpacked_layers(&from_tar.image(&names[0]).unwrap())
        .unwrap();
    assert_eq!(layers.len(), 3);
}

#[test]
fn malformed_imports_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let write = |name: &str, bytes: Vec<u8>| {
        let path = tmp.path().join(name);
        fs::write(&path, bytes).unwrap();
        path
    };

    let no_metadata = write("junk.tar", layer_tar(&[("README", b"not an image")]));
    let err = import(&store, &no_metadata, None, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ImportError::Malformed { .. }), "{err:?}");

    let not_tar = write("noise.tar", vec![0x42; 4096]);
    assert!(import(&store, &not_tar, None, &mut |_| {}).is_err());

    // A config whose diff ids do not match the layer: refused at unpack.
    let layer = layer_tar(&[("hello", b"hi")]);
    let wrong = of_bytes(b"something else").to_string();
    let lying = write("lying.tar", docker_save(&[wrong.clone(), wrong], &layer));
    let err = import(&store, &lying, None, &mut |_| {}).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("digest mismatch"), "{text}");

    // A blob whose name is not its digest.
    let mut builder = tar::Builder::new(Vec::new());
    let named = of_bytes(b"the real content").digest().to_owned();
    tar_entry(
        &mut builder,
        &format!("blobs/sha256/{named}"),
        b"other content",
    );
    let forged = write("forged.tar", builder.into_inner().unwrap());
    let err = import(&store, &forged, None, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("digest mismatch"), "{err}");
    assert!(!store.has_blob(&of_bytes(b"the real content")));

    // A directory that is no OCI layout.
    let err = import(&store, tmp.path(), None, &mut |_| {}).unwrap_err();
    assert!(matches!(err, ImportError::Malformed { .. }), "{err:?}");
}

/// Unpacks one layer from tar entries for the overlay-rule test.
fn layer(dir: &Path, name: &str, entries: &[(&str, &[u8])]) -> LayerInfo {
    let tar = layer_tar(entries);
    let at = dir.join(name);
    fs::create_dir(&at).unwrap();
    damda::image::unpack(&tar[..], &at, &UnpackOptions::default()).unwrap();
    LayerInfo {
        digest: of_bytes(&tar),
        diff_id: of_bytes(&tar),
        size: tar.len() as u64,
        created_by: None,
        dir: at,
    }
}

#[test]
fn the_provider_follows_whiteouts_and_opaque_directories() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: overlay whiteouts need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lower = layer(
        tmp.path(),
        "lower",
        &[("a/x", b"1"), ("a/y", b"2"), ("b/z", b"3"), ("c", b"4")],
    );
    let upper = layer(
        tmp.path(),
        "upper",
        &[
            ("a/.wh..wh..opq", b""),
            ("a/new", b"5"),
            (".wh.b", b""),
            ("c", b"6"),
        ],
    );
    let layers = [lower, upper];
    assert_eq!(provider(&layers, "/a/new"), Provenance::Layer(1));
    assert_eq!(provider(&layers, "/a/x"), Provenance::Deleted(1), "opaque");
    assert_eq!(provider(&layers, "/a"), Provenance::Layer(1));
    assert_eq!(provider(&layers, "/b"), Provenance::Deleted(1));
    assert_eq!(provider(&layers, "/b/z"), Provenance::Deleted(1));
    assert_eq!(provider(&layers, "/c"), Provenance::Layer(1));
    assert_eq!(provider(&layers, "/d"), Provenance::Missing);
    assert_eq!(provider(&layers[..1], "/a/x"), Provenance::Layer(0));
}

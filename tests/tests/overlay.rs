//! The `overlay` and `run` steps against the real kernel: the box's `/` is
//! an overlay of the image's layers (as its mountinfo says), entered by
//! pivot_root after a rebuild whose reason is the kernel's own errno; the
//! chroot escape no longer gets out; writes copy up and deletions leave
//! whiteouts in the box's upper directory; the image's command serves its
//! page through the forwarded port; the same mount and pivot_root done by
//! hand give the same root; and the box's directories go with it.

use damda_e2e::*;
use damda_protocol::StepId;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

#[test]
fn the_root_is_the_images_overlay_entered_by_pivot_root() {
    become_subreaper();
    let walk = HeldWalk::start("overlay");
    let snapshot = walk.last().clone();
    let pid = walk.pid();
    let view = image_view(&snapshot);

    // Rebuilt without chroot, with the errno the live box got: the overlay
    // mount on the host's path of the box's directory, which the chrooted
    // box cannot see.
    let note = snapshot.rebuild.as_ref().expect("a rebuild note");
    assert_eq!(note.step, StepId::Overlay);
    assert_eq!(
        (note.refused.errno, note.refused.errno_name.as_str()),
        (2, "ENOENT"),
        "{note:?}"
    );
    assert!(
        note.refused.syscall.starts_with("mount(\"overlay\", "),
        "{note:?}"
    );

    // The box's / is overlay, lowerdir the image's layers, top first.
    let mounts = mountinfo_of(pid);
    let root_mount = mounts
        .iter()
        .find(|m| m.point == "/")
        .expect("a mount at /");
    assert_eq!(root_mount.fstype, "overlay", "{}", root_mount.line);
    let lowers: Vec<&str> = view.layers.iter().rev().map(|l| l.dir.as_str()).collect();
    let options: Vec<&str> = root_mount.super_options.split(',').collect();
    assert!(
        options.contains(&format!("lowerdir={}", lowers.join(":")).as_str()),
        "{}",
        root_mount.line
    );
    assert!(
        options.contains(&format!("upperdir={}", view.upper_dir).as_str()),
        "{}",
        root_mount.line
    );
    assert_eq!(view.layers.len(), 3);
    assert_eq!(view.mount, root_mount.line);
    // Nothing of the host's tree is mounted in the box any more: not the
    // host's root filesystem anywhere, nor anything at /work.
    assert!(
        !mounts.iter().any(|m| m.point == "/work"),
        "the old root is detached: {mounts:#?}"
    );
    let host_root = mountinfo_of(std::process::id())
        .into_iter()
        .find(|m| m.point == "/")
        .expect("our own mount at /");
    assert!(
        !mounts.iter().any(|m| m.dev == host_root.dev),
        "the host's root filesystem ({}) is mounted in the box: {mounts:#?}",
        host_root.dev
    );
    assert_eq!(root_of(pid), "/");
    let upper = std::fs::metadata(&view.upper_dir).unwrap();
    assert_eq!(upper.mode() & 0o777, 0o700);

    // The chroot escape finds no old root to climb to.
    assert!(sh_as_box_root(pid, "mkdir -p /tmp").status.success());
    let escape = box_escape(pid);
    assert!(
        escape.status.success(),
        "the escape did not run: {escape:?}"
    );
    assert!(
        escape.stdout.lines().any(|l| l.starts_with("CONTAINED:")),
        "the escape ran to its end: {escape:?}"
    );
    assert!(
        !escape.stdout.contains("ESCAPED:"),
        "the escape got out: {}",
        escape.stdout
    );

    // Copy-up and whiteout in the upper directory; the layers untouched.
    let change = sh_as_box_root(pid, "echo changed >> /etc/motd && rm /www/index.html");
    assert!(change.status.success(), "{change:?}");
    let copied = Path::new(&view.upper_dir).join("etc/motd");
    assert!(std::fs::read_to_string(&copied)
        .unwrap()
        .ends_with("changed\n"));
    assert_whiteout(&Path::new(&view.upper_dir).join("www/index.html"));
    let etc_layer = view
        .layers
        .iter()
        .find(|l| Path::new(&l.dir).join("etc/motd").exists())
        .unwrap();
    let original = std::fs::read_to_string(Path::new(&etc_layer.dir).join("etc/motd")).unwrap();
    assert!(
        !original.contains("changed"),
        "the layer is read-only to the box"
    );

    let dir = overlay_dir(view);
    walk.end_cleanly();
    assert!(!dir.exists(), "{} is left", dir.display());
}

#[test]
fn run_serves_the_images_page_through_the_forwarded_port() {
    become_subreaper();
    let walk = HeldWalk::start("run");
    let snapshot = walk.last().clone();
    let view = image_view(&snapshot);
    let service = view.service_pid.expect("the service's pid");
    assert_eq!(
        ppid_of(service),
        Some(walk.pid()),
        "a child of the box's PID 1"
    );
    assert_eq!(cmdline_of(service), view.command);

    let port = snapshot
        .network
        .as_ref()
        .unwrap()
        .forward
        .as_ref()
        .unwrap()
        .host_port;
    assert_eq!(
        view.docker,
        format!("docker run -d -p {port}:80 {}", view.name),
        "the page's Docker line forwards the same port"
    );
    let page = get_page(&format!("127.0.0.1:{port}"));
    let served =
        std::fs::read_to_string(Path::new(&view.layers[2].dir).join("www/index.html")).unwrap();
    assert!(
        page.ends_with(&served),
        "the page is the application layer's: {page}"
    );
    let dir = overlay_dir(view);
    walk.end_cleanly();
    assert!(!dir.exists(), "{} is left", dir.display());
}

#[test]
fn the_same_overlay_and_pivot_root_by_hand_give_the_same_root() {
    become_subreaper();
    let walk = HeldWalk::start("overlay");
    let view = image_view(walk.last()).clone();
    let listing = "ls -a / && cat /www/index.html /etc/hostname";
    let boxed = sh_as_box_root(walk.pid(), listing);
    assert!(boxed.status.success(), "{boxed:?}");

    let scratch = TempDir::new("overlay-by-hand");
    let (upper, work, merged) = (
        scratch.join("upper"),
        scratch.join("work"),
        scratch.join("merged"),
    );
    for dir in [&upper, &work, &merged] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let lowers: Vec<&str> = view.layers.iter().rev().map(|l| l.dir.as_str()).collect();
    let script = format!(
        "mount -t overlay overlay -o lowerdir={},upperdir={},workdir={} {m} && \
         mkdir -p {m}/dev && mount -t proc proc {m}/proc && cd {m} && pivot_root . . && umount -l . && cd / && \
         /bin/busybox sh -c '{listing}'",
        lowers.join(":"),
        upper.display(),
        work.display(),
        m = merged.display()
    );
    let by_hand = run(
        "unshare",
        &["--mount", "--pid", "--fork", "sh", "-c", &script],
        Duration::from_secs(30),
    );
    drop(scratch);
    assert!(by_hand.status.success(), "{by_hand:?}");
    // The box's root has the device mount points damda adds under /dev;
    // the listings of / and the image's files are the same.
    assert_eq!(boxed.stdout, by_hand.stdout);
    walk.end_cleanly();
}

#[test]
fn a_volumes_data_outlives_the_box() {
    become_subreaper();
    // The volume's host directory does not exist yet: the box makes it.
    let scratch = TempDir::new("volume");
    let host = scratch.join("data");
    let volume = format!("{}:/data", host.display());
    let first = HeldWalk::start_with("overlay", &["--volume", &volume], &[]);
    let view = image_view(first.last()).clone();
    assert_eq!(view.volumes, vec![volume.clone()]);
    let write = sh_as_box_root(
        first.pid(),
        "echo kept > /data/note && echo lost > /etc/note",
    );
    assert!(write.status.success(), "{write:?}");
    assert!(
        !Path::new(&view.upper_dir).join("data/note").exists(),
        "the volume's file is not in the upper directory"
    );
    first.end_cleanly();
    assert_eq!(
        std::fs::read_to_string(host.join("note")).unwrap(),
        "kept\n"
    );

    let second = HeldWalk::start_with("overlay", &["--volume", &volume], &[]);
    let read = sh_as_box_root(second.pid(), "cat /data/note; cat /etc/note 2>&1 || true");
    assert!(read.stdout.starts_with("kept\n"), "{read:?}");
    assert!(
        !read.stdout.contains("lost"),
        "the first box's own changes went with it"
    );
    second.end_cleanly();
}

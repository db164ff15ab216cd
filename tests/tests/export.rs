//! `damda export` writes a real OCI runtime bundle: runc and crun (Debian's,
//! as set-up installs them) run it as they are, and the box they make is
//! the one the steps make — hostname `damda-box`, root mapped to 100000 for
//! 65536 ids, the image's files — and nothing of it is left afterwards.
//!
//! Each runtime gets a private `--root` state directory, so nothing is
//! written to /run/runc or /run/crun, and a container id with this test's
//! pid, so parallel runs do not meet.

use damda_e2e::*;
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a runtime may take to run the box's short script.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `damda export` may take to copy the image's layers.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(60);
/// What the box runs: the facts the steps show, in the box's own words.
const SCRIPT: &str = "hostname; cat /proc/self/uid_map; id -u; ls /";

#[derive(Clone, Copy, PartialEq)]
enum Runtime {
    Runc,
    Crun,
}

/// A bundle directory and a runtime's state directory under one temporary
/// directory, and the container id; the container is deleted and the
/// directory removed when dropped, whatever the test asserted.
struct Bundle {
    runtime: Runtime,
    id: String,
    /// Searchable by all: runc's init opens the rootfs as the box's root
    /// (uid 100000), already inside the user namespace. Removed after the
    /// container is deleted (fields drop after `Drop::drop`).
    base: TempDir,
}

impl Bundle {
    fn new(runtime: Runtime) -> Self {
        let name = match runtime {
            Runtime::Runc => "runc",
            Runtime::Crun => "crun",
        };
        let base = TempDir::new(&format!("export-{name}"));
        let id = match runtime {
            Runtime::Runc => format!("damda-export-{}", std::process::id()),
            Runtime::Crun => format!("damda-export-crun-{}", std::process::id()),
        };
        Bundle { base, runtime, id }
    }

    fn dir(&self) -> PathBuf {
        self.base.join("bundle")
    }

    fn text(path: &Path) -> String {
        path.to_string_lossy().into_owned()
    }

    /// `damda export`'s arguments: into the bundle directory, with `args`
    /// after `--`.
    fn export_args(&self, options: &[&str], args: &[&str]) -> Vec<String> {
        let mut all = vec!["export".to_owned(), Self::text(&self.dir())];
        all.extend(options.iter().map(|o| (*o).to_owned()));
        if !args.is_empty() {
            all.push("--".to_owned());
            all.extend(args.iter().map(|a| (*a).to_owned()));
        }
        all
    }

    /// `damda export`, which may fail.
    fn export(&self, options: &[&str], args: &[&str]) -> Output {
        let all = self.export_args(options, args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run(damda_bin(), &all, EXPORT_TIMEOUT)
    }

    /// `damda export`, which must succeed: what it printed.
    fn export_ok(&self, options: &[&str], args: &[&str]) -> String {
        let all = self.export_args(options, args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run_ok_within(damda_bin(), &all, EXPORT_TIMEOUT).stdout
    }

    /// The runtime with a private state directory and `args`. crun 1.8.1
    /// refuses a hybrid cgroup layout ("cgroups in hybrid mode not
    /// supported, drop all controllers from cgroupv2") while a cgroup2 tree
    /// is mounted at /sys/fs/cgroup/unified, even one without controllers:
    /// it runs in a private mount namespace without that mount, and uses
    /// the v1 hierarchies as runc does. (On a cgroup2-only host the umount
    /// finds nothing and crun runs as it is.)
    fn runtime(&self, args: &[&str]) -> Output {
        let state = Self::text(&self.base.join("state"));
        match self.runtime {
            Runtime::Runc => {
                let mut all = vec!["--root", state.as_str()];
                all.extend_from_slice(args);
                run("runc", &all, RUN_TIMEOUT)
            }
            Runtime::Crun => {
                let script = format!(
                    "umount /sys/fs/cgroup/unified 2>/dev/null; exec crun --root {state} {}",
                    args.join(" ")
                );
                run("unshare", &["-m", "sh", "-c", &script], RUN_TIMEOUT)
            }
        }
    }

    /// `run --bundle DIR ID`: the container's output and exit.
    fn run_container(&self) -> Output {
        let dir = Self::text(&self.dir());
        self.runtime(&["run", "--bundle", &dir, &self.id])
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        // Gone already after a run that ended; this is for one that did not.
        let id = self.id.clone();
        let _ = self.runtime(&["delete", "-f", &id]);
    }
}

/// What `damda sweep --check` lists as left behind (by anyone: parallel
/// tests' boxes too). Every line is `left behind: …`, or the one line
/// `nothing left behind`; the exit status says which.
fn sweep_check() -> Vec<String> {
    let check = run(damda_bin(), &["sweep", "--check"], Duration::from_secs(20));
    let lines: Vec<&str> = check.stdout.lines().collect();
    if lines == ["nothing left behind"] {
        assert!(check.status.success(), "{check:?}");
        return Vec::new();
    }
    let left: Vec<String> = lines
        .iter()
        .map(|line| {
            line.strip_prefix("left behind: ")
                .unwrap_or_else(|| panic!("sweep --check printed {line:?}: {check:?}"))
                .to_owned()
        })
        .collect();
    assert!(!left.is_empty(), "sweep --check printed nothing: {check:?}");
    assert_eq!(check.status.code(), Some(1), "{check:?}");
    assert!(
        check
            .stderr
            .contains(&format!("{} damda object(s) left behind", left.len())),
        "{check:?}"
    );
    left
}

/// Nothing named `id` left: no cgroup, nothing the leak check lists.
fn assert_nothing_left(id: &str) {
    poll(
        GONE_TIMEOUT,
        &format!("sweep --check to list nothing of {id}"),
        || {
            let ours: Vec<String> = sweep_check()
                .into_iter()
                .filter(|item| item.split(['/', ' ']).any(|word| word == id))
                .collect();
            if ours.is_empty() {
                Ok(())
            } else {
                Err(format!("{ours:?}"))
            }
        },
    );
}

/// Runs the exported box with `runtime` and checks what it printed.
fn run_bundle_with(runtime: Runtime) {
    let bundle = Bundle::new(runtime);
    let id = bundle.id.clone();
    let written = bundle.export_ok(&[], &["/bin/busybox", "sh", "-c", SCRIPT]);
    assert!(written.contains("config.json"), "{written}");
    assert!(written.contains("runc run --bundle"), "{written}");

    let out = bundle.run_container();
    assert!(
        out.status.success(),
        "the runtime failed ({}): {}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    let lines: Vec<String> = normalise_lines(&out.stdout);
    // hostname; the uid map (root inside is 100000 outside); id -u.
    assert_eq!(
        lines.get(..3),
        Some(
            &[
                BOX_HOSTNAME.to_owned(),
                "0 100000 65536".to_owned(),
                "0".to_owned()
            ][..]
        ),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l == "www"),
        "the image's top layer is in /: {lines:?}"
    );
    drop(bundle);
    assert_nothing_left(&id);
}

#[test]
fn runc_runs_the_exported_bundle() {
    run_bundle_with(Runtime::Runc);
}

#[test]
fn crun_runs_the_exported_bundle() {
    run_bundle_with(Runtime::Crun);
}

#[test]
fn the_config_is_a_runtime_spec_of_the_steps() {
    let bundle = Bundle::new(Runtime::Runc);
    bundle.export_ok(&["--memory-mib", "48", "--pids", "32"], &[]);
    let path = bundle.dir().join("config.json");
    let text = std::fs::read_to_string(&path).expect("config.json is written");
    let config: Value = serde_json::from_str(&text).expect("config.json is JSON");

    assert_eq!(config["ociVersion"], "1.0.2");
    assert_eq!(config["hostname"], BOX_HOSTNAME);
    assert_eq!(config["root"]["path"], "rootfs");
    // The image's Entrypoint + Cmd, as the run step starts it.
    let args: Vec<&str> = config["process"]["args"]
        .as_array()
        .expect("process.args")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]
    );
    assert_eq!(config["process"]["user"]["uid"], 0);
    assert_eq!(config["process"]["noNewPrivileges"], true);
    assert_eq!(config["process"]["terminal"], false);

    let linux = &config["linux"];
    for key in ["uidMappings", "gidMappings"] {
        assert_eq!(
            linux[key],
            serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]),
            "{key}"
        );
    }
    let mut namespaces: Vec<&str> = linux["namespaces"]
        .as_array()
        .expect("linux.namespaces")
        .iter()
        .map(|n| n["type"].as_str().unwrap())
        .collect();
    namespaces.sort_unstable();
    assert_eq!(
        namespaces,
        ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"]
    );
    let resources = &linux["resources"];
    assert_eq!(resources["memory"]["limit"], 48 << 20);
    assert_eq!(resources["pids"]["limit"], 32);
    assert_eq!(resources["cpu"]["quota"], 50_000);
    assert_eq!(resources["cpu"]["period"], 100_000);
    assert!(
        linux.get("cgroupsPath").is_none(),
        "the runtime names the group"
    );

    // The rootfs belongs to the box's root, as the layers it came from.
    let rootfs = bundle.dir().join("rootfs");
    for path in [rootfs.clone(), rootfs.join("www"), rootfs.join("proc")] {
        let meta =
            std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            (meta.uid(), meta.gid()),
            (100_000, 100_000),
            "{}",
            path.display()
        );
    }

    // A second export into the same directory refuses to overwrite it.
    let again = bundle.export(&[], &[]);
    assert!(!again.status.success(), "{}", again.stdout);
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
}

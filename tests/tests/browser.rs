//! The page in headless Chromium, driven over WebDriver (fantoccini against
//! chromedriver), against a real `damda serve` with real boxes.
//!
//! Every test starts its own server, chromedriver and Chromium (a fresh
//! profile), runs its body, and then — whatever the body did, panics
//! included — closes the browser session, ends chromedriver's process group
//! and stops the server with SIGTERM (it destroys its boxes then). Only after
//! that is the body's result checked.
//!
//! Yew renders asynchronously: every check first waits, with a deadline, for
//! the element or attribute it is about; nothing sleeps and hopes.

use damda_e2e::{collect, free_port, workspace_root, Server, BOX_HOSTNAME, COMPARISON_TIMEOUT};
use damda_protocol::FigureId;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type R<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long the page may take to show a step the server applies directly.
const STEP_WAIT: Duration = Duration::from_secs(30);
/// How long a goto that replays several steps may take (two cores, boxes).
const REPLAY_WAIT: Duration = Duration::from_secs(60);
/// How long the first snapshot may take after the page is opened.
const FIRST_WAIT: Duration = Duration::from_secs(30);
/// How often the page is asked again while waiting.
const POLL: Duration = Duration::from_millis(50);

/// The namespace rows of the map, in its order.
const NS_ROWS: [&str; 8] = ["mnt", "uts", "ipc", "pid", "net", "user", "cgroup", "time"];

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

// ------------------------------------------------------------------ paths --

fn screenshot_dir() -> PathBuf {
    workspace_root().join("target/screenshots")
}

/// The `# title` line of a lesson, as the page's `<h1>` shows it.
fn lesson_title(lang: &str, id: &str) -> String {
    let path = workspace_root().join(format!("lessons/{lang}/{id}.md"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .find_map(|line| line.strip_prefix("# "))
        .unwrap_or_else(|| panic!("{} has no `# ` title", path.display()))
        .trim()
        .to_owned()
}

/// Processes the host's /proc lists now.
fn host_process_count() -> usize {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .count()
}

// -------------------------------------------------------------- processes --

fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// chromedriver in a process group of its own, with Chromium under it; the
/// whole group is ended when dropped, and the fresh profile removed.
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
    log: Arc<Mutex<String>>,
}

fn make_profile_dir() -> PathBuf {
    let out = Command::new("mktemp")
        .args(["-d", "-t", "damda-chromium.XXXXXX"])
        .output()
        .expect("mktemp");
    assert!(out.status.success(), "mktemp -d failed");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl Driver {
    fn start() -> Self {
        let port = free_port();
        let profile = make_profile_dir();
        let mut child = match Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
        {
            Ok(child) => child,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&profile);
                panic!("starting chromedriver: {e}");
            }
        };
        let log = collect(child.stdout.take().expect("piped"));
        let _stderr = collect(child.stderr.take().expect("piped"));
        Driver {
            child,
            port,
            profile,
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn capabilities(&self) -> serde_json::Map<String, Value> {
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=1280,800".to_owned(),
            format!("--user-data-dir={}", self.profile.display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args },
        });
        match caps {
            Value::Object(map) => map,
            _ => unreachable!(),
        }
    }

    /// A session, once chromedriver listens (it takes a moment to start).
    async fn connect(&mut self) -> R<Client> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut builder = ClientBuilder::rustls()?;
        builder.capabilities(self.capabilities());
        loop {
            match builder.connect(&self.url()).await {
                Ok(client) => return Ok(client),
                Err(e) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        return Err(
                            format!("chromedriver exited ({status}): {}", self.log()).into()
                        );
                    }
                    if Instant::now() >= deadline {
                        return Err(format!("no WebDriver session: {e}; {}", self.log()).into());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group is chromedriver's own (process_group(0) above): it and the
        // Chromium it started, nothing else.
        let group = Pid::from_raw(self.child.id() as i32);
        let _ = signal::killpg(group, Signal::SIGTERM);
        if wait_exit(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = signal::killpg(group, Signal::SIGKILL);
            let _ = self.child.wait();
        }
        // Chromium children may outlive chromedriver by a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while signal::killpg(group, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if signal::killpg(group, None).is_ok() {
            let _ = signal::killpg(group, Signal::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

// ------------------------------------------------------------------- page --

/// A server, a browser and a WebDriver session on the server's page.
struct Page {
    // Dropped in this order: the session's handle, the browser, the server.
    client: Option<Client>,
    _driver: Driver,
    server: Server,
}

impl Page {
    async fn open() -> Self {
        let server = Server::start(&[]);
        let mut driver = Driver::start();
        let client = match driver.connect().await {
            Ok(client) => client,
            // `driver` and `server` are dropped here: the group is ended, the
            // server stopped.
            Err(e) => panic!("opening the browser: {e}"),
        };
        let page = Page {
            client: Some(client),
            _driver: driver,
            server,
        };
        if let Err(e) = page.c().goto(&page.server.url).await {
            page.close().await;
            panic!("loading {}: {e}", "the page");
        }
        page
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Closes the session, ends chromedriver and Chromium, stops the server.
    /// Returns the server's exit status and its stderr.
    async fn close(mut self) -> (ExitStatus, String) {
        if let Some(client) = self.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
        }
        let stderr = self.server.stderr();
        let status = self.server.stop();
        // Dropping `self` ends the driver's group (and re-checks the server).
        (status, stderr)
    }

    /// Runs `script` (a function body) in the page.
    async fn js(&self, script: &str) -> R<Value> {
        Ok(self.c().execute(script, vec![]).await?)
    }

    /// An attribute of the first element matching `selector`, if both exist.
    async fn attr(&self, selector: &str, name: &str) -> R<Option<String>> {
        let value = self
            .c()
            .execute(
                "const e = document.querySelector(arguments[0]); \
                 return e ? e.getAttribute(arguments[1]) : null;",
                vec![json!(selector), json!(name)],
            )
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// The text of the first element matching `selector`, if it exists.
    async fn text(&self, selector: &str) -> R<Option<String>> {
        let value = self
            .c()
            .execute(
                "const e = document.querySelector(arguments[0]); \
                 return e ? e.textContent : null;",
                vec![json!(selector)],
            )
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    /// What the page says about itself, for failure messages.
    async fn state(&self) -> String {
        let script = "const m = document.querySelector('main#app'); \
            const b = document.querySelector('#error-banner'); \
            if (!m) return 'no main#app yet'; \
            return `step=${m.dataset.currentStep} snapshots=${m.dataset.snapshots} \
            connection=${m.dataset.connection} busy=${m.dataset.busy} lang=${m.dataset.lang}` + \
            (b ? ` error[${b.dataset.code}]: ${b.textContent.trim()}` : '');";
        match self.js(script).await {
            Ok(Value::String(s)) => s,
            Ok(other) => other.to_string(),
            Err(e) => format!("(cannot read the page: {e})"),
        }
    }

    /// Polls `script` until it returns something truthy; returns that.
    async fn wait_js(&self, what: &str, within: Duration, script: &str) -> R<Value> {
        let deadline = Instant::now() + within;
        loop {
            let last = match self.js(script).await {
                Ok(value) => {
                    let truthy = match &value {
                        Value::Null => false,
                        Value::Bool(b) => *b,
                        Value::String(s) => !s.is_empty(),
                        _ => true,
                    };
                    if truthy {
                        return Ok(value);
                    }
                    value
                }
                Err(e) => Value::String(format!("error: {e}")),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "waited {within:?} for {what}; last saw {last}; page: {}",
                    self.state().await
                )
                .into());
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the page shows the box at `step`, with no replay running.
    async fn wait_step(&self, step: &str, within: Duration) -> R<()> {
        let script = format!(
            "const m = document.querySelector('main#app'); \
             return !!m && m.dataset.currentStep === '{step}' && m.dataset.busy === 'false' \
             && m.dataset.connection === 'open';"
        );
        self.wait_js(&format!("data-current-step={step}"), within, &script)
            .await?;
        Ok(())
    }

    /// Waits for the lesson `id` in `lang` with its title; returns the title.
    async fn wait_lesson(&self, id: &str, lang: &str) -> R<String> {
        let script = format!(
            "const a = document.querySelector('article#lesson[data-lesson=\"{id}\"][lang=\"{lang}\"]'); \
             const h = a && a.querySelector('h1'); \
             return h && a.firstElementChild === h ? h.textContent : null;"
        );
        let title = self
            .wait_js(
                &format!("lesson {id} ({lang}) with its <h1>"),
                STEP_WAIT,
                &script,
            )
            .await?;
        Ok(title.as_str().unwrap_or_default().to_owned())
    }

    /// Presses a key with the focus on the page's body.
    async fn press(&self, key: Key) -> R<()> {
        let body = self.c().find(Locator::Css("body")).await?;
        body.send_keys(&key.to_string()).await?;
        Ok(())
    }

    /// Runs `command` in the page's terminal and waits for it to end with
    /// `expected` in its output; returns the terminal's text.
    async fn run_in_terminal(&self, command: &str, expected: &str) -> R<String> {
        self.wait_js(
            "#term-input enabled",
            STEP_WAIT,
            "const i = document.querySelector('#term-input'); return !!i && !i.disabled;",
        )
        .await?;
        let input = self.c().find(Locator::Css("#term-input")).await?;
        input.send_keys(command).await?;
        input.send_keys(&Key::Enter.to_string()).await?;
        let script = format!(
            "const t = document.querySelector('#terminal'); \
             const o = t && t.querySelector('.term-out'); \
             return o && t.dataset.running === 'false' && o.querySelector('.term-exit') \
               && o.textContent.includes({}) ? o.textContent : null;",
            json!(expected)
        );
        let out = self
            .wait_js(
                &format!("{command}: its output and its end"),
                STEP_WAIT,
                &script,
            )
            .await?;
        Ok(out.as_str().unwrap_or_default().to_owned())
    }

    /// Clicks a stepper button, once the page lets it be clicked.
    async fn goto_step(&self, step: &str) -> R<()> {
        let selector = format!("button[data-step=\"{step}\"]");
        let script =
            format!("const b = document.querySelector('{selector}'); return !!b && !b.disabled;");
        self.wait_js(&format!("{selector} enabled"), STEP_WAIT, &script)
            .await?;
        self.c()
            .find(Locator::Css(&selector))
            .await?
            .click()
            .await?;
        Ok(())
    }

    /// `data-shared` of every namespace row, by name.
    async fn ns_shared(&self) -> R<Vec<(String, String)>> {
        let mut rows = Vec::new();
        for ns in NS_ROWS {
            let shared = self
                .attr(&format!("tr[data-ns=\"{ns}\"]"), "data-shared")
                .await?
                .ok_or_else(|| format!("no namespace row tr[data-ns={ns}]"))?;
            rows.push((ns.to_owned(), shared));
        }
        Ok(rows)
    }

    /// Writes a screenshot of the window to target/screenshots/NAME.png.
    async fn screenshot(&self, name: &str) -> R<PathBuf> {
        let png = self.c().screenshot().await?;
        ensure!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot is not a PNG"
        );
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, &png)?;
        println!("screenshot: {} ({} bytes)", path.display(), png.len());
        Ok(path)
    }
}

/// Opens the page, runs `body`, closes everything, then fails if the body did.
async fn run<F>(name: &str, body: F)
where
    F: AsyncFnOnce(&Page) -> R<()>,
{
    let started = Instant::now();
    let page = Page::open().await;
    let outcome = AssertUnwindSafe(body(&page)).catch_unwind().await;
    let (status, stderr) = page.close().await;
    println!(
        "{name}: {:.1?} including set-up and clean-up",
        started.elapsed()
    );
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(panic) => Some(
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "a panic".to_owned()),
        ),
    };
    if let Some(failure) = failure {
        panic!("{name}: {failure}\n--- damda serve stderr ---\n{stderr}");
    }
    assert!(
        status.success(),
        "damda serve did not exit cleanly on SIGTERM ({status:?}); stderr:\n{stderr}"
    );
}

// ------------------------------------------------------------------ tests --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_steps_to_uts_and_marks_it_changed() {
    run("keyboard_steps_to_uts_and_marks_it_changed", async |page: &Page| {
        page.wait_step("host", FIRST_WAIT).await?;
        let first = page
            .wait_js(
                "window.__damdaFirstSnapshotMs",
                STEP_WAIT,
                "return window.__damdaFirstSnapshotMs;",
            )
            .await?;
        println!("first snapshot on screen {first} ms after navigation start");
        ensure!(
            page.attr("button[data-step=\"host\"]", "aria-current").await? == Some("step".into()),
            "the host step is not marked aria-current=step"
        );

        page.press(Key::Right).await?;
        page.wait_step("chroot", STEP_WAIT).await?;
        page.press(Key::Right).await?;
        page.wait_step("uts", STEP_WAIT).await?;

        // The stepper follows.
        for (step, state) in [("host", "done"), ("chroot", "done"), ("uts", "current"), ("pid", "todo")] {
            let seen = page.attr(&format!("button[data-step=\"{step}\"]"), "data-state").await?;
            ensure!(seen.as_deref() == Some(state), "stepper {step}: data-state {seen:?}, want {state}");
        }
        ensure!(
            page.attr("button[data-step=\"uts\"]", "aria-current").await? == Some("step".into()),
            "the uts step is not marked aria-current=step"
        );
        // Every step of the lesson can be applied now: none is unavailable.
        let unavailable = page
            .js("return document.querySelectorAll('button[data-step][data-state=\"unavailable\"]').length;")
            .await?;
        ensure!(unavailable == json!(0), "steps marked unavailable: {unavailable}");
        ensure!(
            page.attr("button[data-step=\"run\"]", "data-state").await? == Some("todo".into()),
            "the last step, run, is still to do"
        );

        // Only the UTS namespace is the box's own, and it just changed.
        for (ns, shared) in page.ns_shared().await? {
            let want = if ns == "uts" { "false" } else { "true" };
            ensure!(shared == want, "tr[data-ns={ns}] data-shared={shared}, want {want}");
        }
        ensure!(
            page.attr("tr[data-ns=\"uts\"]", "data-changed").await? == Some("true".into()),
            "tr[data-ns=uts] is not marked data-changed=true"
        );
        let changed = page.js(
            "return [...document.querySelectorAll('tr[data-ns][data-changed=\"true\"]')].map(r => r.dataset.ns);",
        ).await?;
        ensure!(changed == json!(["uts"]), "rows marked changed: {changed}");
        let badge = page
            .c()
            .find(Locator::Css("tr[data-ns=\"uts\"] .badge-changed"))
            .await?;
        ensure!(badge.is_displayed().await?, "the uts row's badge is not visible");
        let badge_text = badge.text().await?;
        ensure!(badge_text.contains("방금 바뀜"), "the uts row's badge says {badge_text:?}");

        // The lesson is the UTS one, in Korean.
        let title = page.wait_lesson("uts", "ko").await?;
        ensure!(title.contains("UTS 네임스페이스"), "lesson title {title:?}");

        // The process card: the box's hostname is its own now.
        let hostname = page
            .text("td[data-field=\"hostname\"][data-side=\"box\"]")
            .await?
            .unwrap_or_default();
        ensure!(hostname.contains(BOX_HOSTNAME), "box hostname cell {hostname:?}");
        let host_hostname = page
            .text("td[data-field=\"hostname\"][data-side=\"host\"] .line")
            .await?
            .unwrap_or_default();
        ensure!(
            host_hostname.trim() != BOX_HOSTNAME && !host_hostname.trim().is_empty(),
            "host hostname cell {host_hostname:?}"
        );
        ensure!(
            page.attr("td[data-field=\"hostname\"][data-side=\"box\"]", "data-differs").await?
                == Some("true".into()),
            "the hostname row is not marked as differing"
        );

        let shot = page.screenshot("uts").await?;
        let docs = workspace_root().join("docs/screenshot.png");
        std::fs::create_dir_all(docs.parent().expect("docs/"))?;
        std::fs::copy(&shot, &docs)?;
        println!("copied to {}", docs.display());

        // Back to chroot: the box is rebuilt, the UTS namespace shared again.
        let before = page.attr("main#app", "data-snapshots").await?;
        page.press(Key::Left).await?;
        page.wait_step("chroot", REPLAY_WAIT).await?;
        let after = page.attr("main#app", "data-snapshots").await?;
        ensure!(before != after, "no new snapshot after ArrowLeft");
        for (ns, shared) in page.ns_shared().await? {
            ensure!(shared == "true", "after going back, tr[data-ns={ns}] data-shared={shared}");
        }
        ensure!(
            page.attr("tr[data-ns=\"uts\"]", "data-changed").await? == Some("true".into()),
            "going back should mark the uts row changed (separate → shared)"
        );
        let hostname = page
            .text("td[data-field=\"hostname\"][data-side=\"box\"] .line")
            .await?
            .unwrap_or_default();
        ensure!(hostname.trim() != BOX_HOSTNAME, "after going back the box is still {hostname:?}");
        page.wait_lesson("chroot", "ko").await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stepping_to_user_shows_process_tree_and_proc_views() {
    run("stepping_to_user_shows_process_tree_and_proc_views", async |page: &Page| {
        page.wait_step("host", FIRST_WAIT).await?;
        page.goto_step("user").await?;
        page.wait_step("user", REPLAY_WAIT).await?;

        // The kernel refuses a user namespace after the others: the box was
        // rebuilt in another order, and the page says why.
        page.wait_js("#rebuild-note", STEP_WAIT, "return !!document.querySelector('#rebuild-note');")
            .await?;
        let errno = page.attr("#rebuild-note", "data-errno").await?;
        ensure!(errno.as_deref() == Some("EPERM"), "#rebuild-note data-errno {errno:?}");
        let refused = page.attr("#rebuild-note", "data-step").await?;
        ensure!(refused.as_deref() == Some("user"), "#rebuild-note data-step {refused:?}");

        let rows = page.ns_shared().await?;
        for (ns, shared) in &rows {
            // Every namespace up to user is the box's own by now; cgroup and
            // time come later (or never).
            let want = if ["cgroup", "time"].contains(&ns.as_str()) { "true" } else { "false" };
            ensure!(shared == want, "tr[data-ns={ns}] data-shared={shared}, want {want} ({rows:?})");
        }

        // The box's own /proc lists only the box, with itself as pid 1.
        let total: usize = page
            .attr("#process-tree", "data-box-total")
            .await?
            .ok_or("no #process-tree[data-box-total]")?
            .parse()?;
        ensure!((1..=5).contains(&total), "#process-tree data-box-total={total}");
        let pids = page.js(
            "const t = document.querySelectorAll('#process-tree .two-up > div')[1]; \
             return t ? [...t.querySelectorAll('tbody tr')].map(r => r.cells[0].textContent.trim()) : null;",
        ).await?;
        let pids: Vec<String> = serde_json::from_value(pids.clone())
            .map_err(|e| format!("box process list {pids}: {e}"))?;
        ensure!(pids.iter().any(|p| p == "1"), "the box's process list has no pid 1: {pids:?}");
        ensure!(pids.len() <= 5, "the box's process list is long: {pids:?}");

        // /proc files read from both sides.
        let uid_map = ".proc-file[data-path=\"/proc/self/uid_map\"]";
        ensure!(
            page.attr(uid_map, "data-differs").await? == Some("true".into()),
            "{uid_map} does not differ"
        );
        let boxed = page.text(&format!("{uid_map} pre[data-side=\"box\"]")).await?.unwrap_or_default();
        ensure!(boxed.contains("100000"), "the box's uid_map reads {boxed:?}");
        let host = page.text(&format!("{uid_map} pre[data-side=\"host\"]")).await?.unwrap_or_default();
        ensure!(!host.contains("100000"), "the host's uid_map reads {host:?}");
        let hostname = ".proc-file[data-path=\"/proc/sys/kernel/hostname\"]";
        ensure!(
            page.attr(hostname, "data-differs").await? == Some("true".into()),
            "{hostname} does not differ"
        );
        let boxed = page.text(&format!("{hostname} pre[data-side=\"box\"]")).await?.unwrap_or_default();
        ensure!(boxed.contains(BOX_HOSTNAME), "the box's hostname file reads {boxed:?}");

        // The network namespace has only a loopback device, down.
        let links = page.js(
            "return [...document.querySelectorAll('#links tr[data-link]')].map(r => [r.dataset.link, r.dataset.up]);",
        ).await?;
        ensure!(links == json!([["lo", "false"]]), "#links rows {links}");

        page.screenshot("user").await?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn english_toggle_and_reload_resumes_the_box() {
    run(
        "english_toggle_and_reload_resumes_the_box",
        async |page: &Page| {
            page.wait_step("host", FIRST_WAIT).await?;
            let korean = page.wait_lesson("host", "ko").await?;
            ensure!(
                korean == lesson_title("ko", "host"),
                "Korean host title {korean:?}"
            );

            page.c()
                .find(Locator::Css("button[data-lang=\"en\"]"))
                .await?
                .click()
                .await?;
            page.wait_js(
                "main#app[data-lang=en]",
                STEP_WAIT,
                "return !!document.querySelector('main#app[data-lang=\"en\"]');",
            )
            .await?;
            let english = page.wait_lesson("host", "en").await?;
            ensure!(
                english == lesson_title("en", "host"),
                "English host title {english:?}"
            );
            ensure!(
                !english
                    .chars()
                    .any(|c| ('\u{ac00}'..='\u{d7a3}').contains(&c)),
                "the English title has Hangul: {english:?}"
            );
            ensure!(
                page.attr("html", "lang").await? == Some("en".into()),
                "<html lang> did not follow the toggle"
            );

            page.goto_step("uts").await?;
            page.wait_step("uts", REPLAY_WAIT).await?;
            let title = page.wait_lesson("uts", "en").await?;
            ensure!(
                title == lesson_title("en", "uts"),
                "English uts title {title:?}"
            );
            let pid_cell = "td[data-field=\"pid\"][data-side=\"box\"]";
            let pid = page
                .text(pid_cell)
                .await?
                .unwrap_or_default()
                .trim()
                .to_owned();
            ensure!(
                pid.parse::<u32>().is_ok_and(|p| p > 1),
                "box pid cell {pid:?}"
            );
            let session = page
                .js("return sessionStorage.getItem('damda.session');")
                .await?;
            ensure!(
                session.is_string(),
                "no session id in sessionStorage: {session}"
            );

            page.c().refresh().await?;
            // A fresh page: wait for its first snapshot, then it must be the old box.
            page.wait_js(
                "the first snapshot after the reload",
                FIRST_WAIT,
                "const m = document.querySelector('main#app'); \
             return !!m && m.dataset.currentStep && m.dataset.busy === 'false';",
            )
            .await?;
            let step = page.attr("main#app", "data-current-step").await?;
            ensure!(
                step.as_deref() == Some("uts"),
                "after the reload the page is at {step:?}"
            );
            let again = page
                .text(pid_cell)
                .await?
                .unwrap_or_default()
                .trim()
                .to_owned();
            ensure!(
                again == pid,
                "after the reload the box pid is {again}, was {pid}"
            );
            let session_again = page
                .js("return sessionStorage.getItem('damda.session');")
                .await?;
            ensure!(
                session_again == session,
                "session {session_again}, was {session}"
            );
            ensure!(
                page.attr("main#app", "data-lang").await? == Some("en".into()),
                "the language was not remembered across the reload"
            );
            page.wait_lesson("uts", "en").await?;
            ensure!(
                page.attr("tr[data-ns=\"uts\"]", "data-shared").await? == Some("false".into()),
                "after the reload the uts row is shared"
            );
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_runs_a_command_in_the_box() {
    run("terminal_runs_a_command_in_the_box", async |page: &Page| {
        page.wait_step("host", FIRST_WAIT).await?;
        page.goto_step("mnt").await?;
        page.wait_step("mnt", REPLAY_WAIT).await?;

        let out = page.run_in_terminal("hostname; ps", BOX_HOSTNAME).await?;
        println!("terminal:\n{out}");
        ensure!(out.contains("hostname; ps"), "the command is not echoed: {out:?}");
        let stdout = page
            .js("return [...document.querySelectorAll('#terminal .term-stdout')].map(s => s.textContent).join('');")
            .await?;
        let stdout = stdout.as_str().unwrap_or_default();
        let mut lines = stdout.lines().map(str::trim).filter(|l| !l.is_empty());
        ensure!(lines.next() == Some(BOX_HOSTNAME), "hostname printed {stdout:?}");
        ensure!(
            lines.next().is_some_and(|l| l.starts_with("PID")),
            "no ps header in {stdout:?}"
        );
        let procs: Vec<&str> = lines.collect();
        let pids: Vec<u32> = procs
            .iter()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        ensure!(pids.len() == procs.len(), "ps lines without a pid: {procs:?}");
        ensure!(pids.contains(&1), "ps in the box lists no pid 1: {procs:?}");
        let host = host_process_count();
        ensure!(
            pids.len() <= 6 && pids.len() < host,
            "ps in the box lists {} processes (the host has {host}): {procs:?}",
            pids.len()
        );
        let exit = page.text("#terminal .term-exit").await?.unwrap_or_default();
        ensure!(exit.contains(" 0]"), "the command did not exit 0: {exit:?}");
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_step_draws_the_bridge_and_the_box_pings_its_gateway() {
    run(
        "network_step_draws_the_bridge_and_the_box_pings_its_gateway",
        async |page: &Page| {
            page.wait_step("host", FIRST_WAIT).await?;
            page.goto_step("network").await?;
            page.wait_step("network", REPLAY_WAIT).await?;
            let address = page
                .wait_js(
                    "this box on the topology drawing",
                    STEP_WAIT,
                    "const b = document.querySelector('#network-topology .topology-box.this-box'); \
                     return b && b.dataset.boxAddress;",
                )
                .await?;
            let address = address.as_str().unwrap_or_default().to_owned();
            ensure!(address.starts_with("10.221.0."), "box address {address:?}");
            let driver = page.attr("#network-drivers", "data-current").await?;
            ensure!(driver.as_deref() == Some("bridge"), "driver {driver:?}");
            let rules = page.text("#network-rules").await?.unwrap_or_default();
            ensure!(
                rules.contains(&format!("dnat to {address}:80")),
                "the rules card lacks the DNAT rule: {rules}"
            );

            // The page's terminal runs without capabilities: ping works
            // because the step opened ping_group_range as Docker does.
            let out = page
                .run_in_terminal("ping -c 1 -W 3 10.221.0.1", "packets transmitted")
                .await?;
            ensure!(
                out.contains("1 packets received"),
                "ping from the page: {out}"
            );
            page.screenshot("network").await?;
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comparison_view_runs_a_vm_and_a_box_and_charts_them() {
    run(
        "comparison_view_runs_a_vm_and_a_box_and_charts_them",
        async |page: &Page| {
            page.wait_step("host", FIRST_WAIT).await?;
            page.c()
                .find(Locator::Css("#view-compare"))
                .await?
                .click()
                .await?;
            let title = page.wait_lesson("compare", "ko").await?;
            ensure!(
                title == lesson_title("ko", "compare"),
                "the comparison's lesson {title:?}"
            );
            // The two stacks are drawn before any run: the VM has a guest
            // kernel of its own, the containers share the host's.
            let vm_stack = page.text("#stack-vm").await?.unwrap_or_default();
            let box_stack = page.text("#stack-container").await?.unwrap_or_default();
            ensure!(!vm_stack.is_empty() && !box_stack.is_empty(), "no stacks");
            page.c()
                .execute(
                    "document.querySelector('#stack-diagram').scrollIntoView();",
                    vec![],
                )
                .await?;
            page.screenshot("compare-stacks").await?;
            page.c()
                .find(Locator::Css("#compare-runs"))
                .await?
                .select_by_value("1")
                .await?;
            page.c()
                .find(Locator::Css("#compare-run"))
                .await?
                .click()
                .await?;
            page.wait_js(
                "progress while the comparison runs",
                STEP_WAIT,
                "return !!document.querySelector('#compare-progress');",
            )
            .await?;
            let accelerator = page
                .wait_js(
                    "the comparison's result",
                    COMPARISON_TIMEOUT,
                    "const r = document.querySelector('#compare-results'); \
                     return r && r.dataset.accelerator;",
                )
                .await?;
            let accelerator = accelerator.as_str().unwrap_or_default().to_owned();
            ensure!(
                accelerator == "TCG" || accelerator == "KVM",
                "accelerator {accelerator:?}"
            );
            let shown = page.text("#compare-accelerator").await?.unwrap_or_default();
            ensure!(shown.contains(&accelerator), "{shown:?}");
            for figure in FigureId::ALL.map(FigureId::as_str) {
                for side in ["container", "vm"] {
                    let selector = format!(
                        ".compare-figure[data-figure=\"{figure}\"] .compare-{side}-value"
                    );
                    let value = page.text(&selector).await?.unwrap_or_default();
                    ensure!(
                        value.chars().any(|c| c.is_ascii_digit()),
                        "{selector}: {value:?}"
                    );
                }
            }
            page.screenshot("compare").await?;
            page.c()
                .execute(
                    "document.querySelector('.compare-figure[data-figure=\"memory\"]').scrollIntoView();",
                    vec![],
                )
                .await?;
            page.screenshot("compare-charts").await?;
            // Back to the steps: the stepper is there again.
            page.c()
                .find(Locator::Css("#view-steps"))
                .await?
                .click()
                .await?;
            page.wait_js(
                "the steps view again",
                STEP_WAIT,
                "return !!document.querySelector('main#app[data-view=\"steps\"] button[data-step=\"host\"]');",
            )
            .await?;
            Ok(())
        },
    )
    .await;
}

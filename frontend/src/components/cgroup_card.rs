use damda_protocol::{CgroupFile, CgroupLimits, CgroupView};
use yew::prelude::*;

use crate::components::command_line::CommandLine;
use crate::components::copy_button::CopyButton;
use crate::i18n::{cg_other_title, cg_other_toggle, Lang};

#[derive(PartialEq, Properties)]
pub struct CgroupCardProps {
    pub lang: Lang,
    pub cgroup: CgroupView,
}

const MIB: u64 = 1 << 20;

/// Bytes as MiB (or KiB below one MiB), as the limits tiles show them.
fn size(bytes: u64) -> String {
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

/// The three limits (and the I/O weight when set) as big numbers.
fn limit_tiles(lang: Lang, limits: &CgroupLimits) -> Html {
    let t = lang.t();
    let tile = |key: &'static str, name: &'static str, value: Option<String>, detail: String| {
        let limited = value.is_some();
        html! {
            <div class={classes!("limit-tile", (!limited).then_some("is-unlimited"))}
                data-limit={key} key={key}>
                <span class="limit-name">{ name }</span>
                <strong class="limit-value">
                    { value.unwrap_or_else(|| format!("∞ {}", t.cg_unlimited)) }
                </strong>
                <span class="limit-detail mono">{ detail }</span>
            </div>
        }
    };
    let swap = match (limits.memory_bytes, limits.swap_bytes) {
        (None, _) => String::new(),
        (Some(_), Some(0)) => t.cg_no_swap.to_owned(),
        (Some(_), Some(swap)) => format!("{} {}", t.cg_swap, size(swap)),
        (Some(_), None) => format!("{} {}", t.cg_swap, t.cg_unlimited),
    };
    let cpu_detail = match limits.cpu_quota_us {
        Some(quota) => format!("{quota} / {} µs", limits.cpu_period_us),
        None => String::new(),
    };
    html! {
        <div class="limit-tiles">
            { tile("memory", t.cg_memory, limits.memory_bytes.map(size), swap) }
            { tile("cpu", t.cg_cpu,
                limits.cpus().map(|c| format!("{} {}", trim_float(c), t.cg_cores)), cpu_detail) }
            { tile("pids", t.cg_pids, limits.pids_max.map(|p| p.to_string()), "pids.max".to_owned()) }
            if let Some(weight) = limits.io_weight {
                { tile("io", t.cg_io_weight, Some(weight.to_string()), "io.weight".to_owned()) }
            }
        </div>
    }
}

/// 0.5 → "0.5", 2.0 → "2", 0.25 → "0.25".
pub fn trim_float(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// `v1` or `v2` from the version as the server words it (`cgroup v1`).
pub fn version_tag(version: &str) -> &'static str {
    if version.contains("v2") {
        "v2"
    } else {
        "v1"
    }
}

/// A path with its file name set apart from the directory.
fn split_path(path: &str) -> Html {
    match path.rfind('/') {
        Some(at) => html! {
            <>
                <span class="cg-dir">{ &path[..=at] }</span>
                <span class="cg-file">{ &path[at + 1..] }</span>
            </>
        },
        None => html! { <span class="cg-file">{ path }</span> },
    }
}

fn files_table(lang: Lang, files: &[CgroupFile]) -> Html {
    let t = lang.t();
    html! {
        <div class="scroll-box cg-files-box">
            <table class="mini-table cg-files">
                <thead>
                    <tr>
                        <th scope="col">{ t.cg_col_file }</th>
                        <th scope="col">{ t.cg_col_value }</th>
                    </tr>
                </thead>
                <tbody>
                    for file in files.iter() {
                        <tr data-path={file.path.clone()}>
                            <td class="mono cg-path">{ split_path(&file.path) }</td>
                            <td class="mono cg-value">{ &file.value }</td>
                        </tr>
                    }
                </tbody>
            </table>
        </div>
    }
}

/// The commands, each with a copy button; `# …` lines are notes, not
/// commands.
fn command_list(lang: Lang, commands: &[&String]) -> Html {
    html! {
        <ol class="cmd-list cg-cmds">
            for command in commands.iter() {
                if let Some(note) = command.strip_prefix('#') {
                    <li class="cmd-comment">
                        <span class="ico" aria-hidden="true">{ "ℹ" }</span>{ note.trim() }
                    </li>
                } else {
                    <CommandLine {lang} text={(*command).clone()} item=true />
                }
            }
        </ol>
    }
}

/// The commands to show and copy: the docker line has its own place.
fn shell_commands<'a>(commands: &'a [String], docker: &str) -> Vec<&'a String> {
    commands.iter().filter(|c| c.as_str() != docker).collect()
}

/// What "copy all" copies: the commands without the notes.
fn copy_all(commands: &[&String]) -> String {
    commands
        .iter()
        .filter(|c| !c.starts_with('#'))
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The box's cgroup: the version and layout, its directories, the limits,
/// the files written for them, and the same by hand on either version or
/// with docker.
#[function_component(CgroupCard)]
pub fn cgroup_card(props: &CgroupCardProps) -> Html {
    let lang = props.lang;
    let t = lang.t();
    let cg = &props.cgroup;
    let commands = shell_commands(&cg.commands, &cg.docker);
    let other_commands = shell_commands(&cg.other_commands, &cg.docker);
    let all = copy_all(&commands);
    let other_all = copy_all(&other_commands);
    html! {
        <section class="card" id="cgroup" aria-labelledby="cgroup-title"
            data-version={version_tag(&cg.version)}>
            <header class="card-head">
                <h2 id="cgroup-title">{ t.cg_title }</h2>
                <span class="version-pill" title={t.cg_version}>
                    <span class="version-label">{ t.cg_version }</span>
                    <strong class="mono">{ version_tag(&cg.version) }</strong>
                </span>
            </header>
            <p class="card-caption">{ t.cg_caption }</p>
            <dl class="cg-facts">
                <div>
                    <dt>{ t.cg_layout }</dt>
                    <dd class="mono" id="cgroup-layout">{ &cg.layout }</dd>
                </div>
                <div>
                    <dt>{ t.cg_dirs }</dt>
                    <dd class="mono" id="cgroup-dirs">
                        for dir in cg.dirs.iter() {
                            <span class="line">{ dir }</span>
                        }
                    </dd>
                </div>
            </dl>

            <h3 class="sub-head">{ t.cg_limits }</h3>
            { limit_tiles(lang, &cg.limits) }

            if !cg.skipped.is_empty() {
                <div class="cg-skipped" role="note">
                    <p class="cg-skipped-title">
                        <span class="ico" aria-hidden="true">{ "⚠" }</span>{ t.cg_skipped }
                    </p>
                    <ul>
                        for reason in cg.skipped.iter() {
                            <li>{ reason }</li>
                        }
                    </ul>
                </div>
            }

            <h3 class="sub-head">
                { t.cg_written }{ " " }<code class="sub-version">{ version_tag(&cg.version) }</code>
            </h3>
            { files_table(lang, &cg.written) }

            <div class="sub-head-row">
                <h3 class="sub-head">{ t.cg_commands }</h3>
                if commands.len() > 1 {
                    <CopyButton {lang} text={all} label={Some(t.copy_all)} />
                }
            </div>
            <div class="scroll-box cg-cmds-box">{ command_list(lang, &commands) }</div>

            <h3 class="sub-head">{ t.cg_docker }</h3>
            <CommandLine {lang} text={cg.docker.clone()} id="cgroup-docker" />

            <details id="cgroup-other" class="cg-other" data-version={version_tag(&cg.other_version)}>
                <summary>{ cg_other_toggle(lang, &cg.other_version) }</summary>
                <h3 class="sub-head">{ cg_other_title(lang, &cg.other_version) }</h3>
                { files_table(lang, &cg.other_files) }
                <div class="sub-head-row">
                    <h3 class="sub-head">{ t.cg_commands }</h3>
                    if other_commands.len() > 1 {
                        <CopyButton {lang} text={other_all} label={Some(t.copy_all)} />
                    }
                </div>
                <div class="scroll-box cg-cmds-box">{ command_list(lang, &other_commands) }</div>
            </details>

            <ul class="cg-notes">
                <li><span class="ico" aria-hidden="true">{ "⇄" }</span>{ t.cg_note_net }</li>
                <li><span class="ico" aria-hidden="true">{ "▣" }</span>{ t.cg_note_devices }</li>
            </ul>
        </section>
    }
}

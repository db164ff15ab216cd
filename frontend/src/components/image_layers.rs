use damda_protocol::{binary_size, ImageView, Provenance};
use web_sys::HtmlInputElement;
use yew::prelude::*;

use crate::components::pending_line::PendingLine;
use crate::i18n::{layer_name, upper_count, which_layer, Lang};
use crate::state::WhichState;

/// What the "which layer?" form holds before anyone types.
const WHICH_DEFAULT: &str = "/etc/passwd";

#[derive(PartialEq, Properties)]
pub struct ImageLayersProps {
    pub lang: Lang,
    pub image: ImageView,
    pub which: WhichState,
    /// Whether the page can ask the server now.
    pub ready: bool,
    pub on_which: Callback<String>,
    /// Shown under `docker images`: the image picker.
    #[prop_or_default]
    pub children: Html,
}

/// `registry/repo:tag` as `docker images` splits it; a colon inside the
/// registry's host:port is not a tag.
fn split_name(name: &str) -> (&str, &str) {
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (name, "<none>"),
    }
}

/// `sha256:` and the first 12 hex digits.
pub fn short_digest(digest: &str) -> String {
    let (algo, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    format!("{algo}:{}", hex.get(..12).unwrap_or(hex))
}

/// The lower directories the mount line names, top first (`lowerdir=a:b`,
/// or one `lowerdir+=` each; `::` before data-only layers).
fn lower_dirs(mount: &str) -> Vec<&str> {
    let mut dirs = Vec::new();
    for option in mount.split([' ', ',']) {
        if let Some(list) = option.strip_prefix("lowerdir=") {
            dirs.extend(list.split(':').filter(|d| !d.is_empty()));
        } else if let Some(dir) = option.strip_prefix("lowerdir+=") {
            dirs.push(dir);
        }
    }
    dirs
}

/// The badge on the row an answer points at.
fn here_badge(text: &'static str, path: &str) -> Html {
    html! {
        <span class="badge badge-which">
            <span class="ico" aria-hidden="true">{ "◀" }</span>
            { format!("{text}:") }<code>{ path.to_owned() }</code>
        </span>
    }
}

/// `docker images` and `docker history` for the image under the box's root:
/// its layers stacked under the box's writable one, the overlay mount that
/// stacks them, and which layer a path comes from.
#[function_component(ImageLayers)]
pub fn image_layers(props: &ImageLayersProps) -> Html {
    let lang = props.lang;
    let t = lang.t();
    let image = &props.image;
    let path = use_state(|| WHICH_DEFAULT.to_owned());

    let (repo, tag) = split_name(&image.name);
    let total: u64 = image.layers.iter().map(|l| l.size).sum();
    let biggest = image
        .layers
        .iter()
        .map(|l| l.size)
        .max()
        .unwrap_or(0)
        .max(1);

    // The row the answer points at, while it is not being asked again.
    let answer = props
        .which
        .answer
        .as_ref()
        .filter(|_| props.which.asked.is_none());
    let points_at_upper = matches!(answer, Some((_, Provenance::Upper)));
    let points_at_layer = |index: usize| {
        answer.and_then(|(path, p)| match p {
            Provenance::Layer { index: i } if *i == index => Some(path.as_str()),
            _ => None,
        })
    };

    let oninput = {
        let path = path.clone();
        Callback::from(move |e: InputEvent| {
            let field: HtmlInputElement = e.target_unchecked_into();
            path.set(field.value());
        })
    };
    let onsubmit = {
        let path = path.clone();
        let on_which = props.on_which.clone();
        let ready = props.ready;
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let asked = path.trim();
            if ready && asked.starts_with('/') {
                on_which.emit(asked.to_owned());
            }
        })
    };

    let upper_row = html! {
        <li class={classes!("stack-row", "upper-row", points_at_upper.then_some("is-which"))}
            data-which={points_at_upper.then_some("true")}>
            <div class="stack-bar">
                <span class="stack-name">{ t.img_upper_name }</span>
                <span class="badge badge-own">
                    <span class="ico" aria-hidden="true">{ "✎" }</span>{ t.img_rw }
                </span>
                <span class="stack-size">{ upper_count(lang, image.upper.len()) }</span>
                if let Some((path, _)) = answer.filter(|_| points_at_upper) {
                    { here_badge(t.which_here, path) }
                }
            </div>
            <p class="stack-what">{ t.img_upper_what }</p>
            <details class="stack-details">
                <summary>{ t.img_details }</summary>
                <dl>
                    <dt>{ "upperdir" }</dt>
                    <dd class="mono">{ &image.upper_dir }</dd>
                    <dt>{ t.img_workdir }</dt>
                    <dd class="mono">{ &image.work_dir }</dd>
                </dl>
                <p class="stack-note">{ t.img_per_box }</p>
            </details>
        </li>
    };
    let layer_rows = image.layers.iter().enumerate().rev().map(|(index, layer)| {
        let here = points_at_layer(index);
        let share = (layer.size as f64 / biggest as f64 * 100.0).max(2.0);
        html! {
            <li class={classes!("stack-row", "layer-row", here.is_some().then_some("is-which"))}
                data-index={index.to_string()}
                data-which={here.is_some().then_some("true")}>
                <div class="stack-bar">
                    <span class="stack-name">{ layer_name(lang, index) }</span>
                    if index == 0 {
                        <span class="muted">{ format!("({})", t.img_bottom) }</span>
                    }
                    <span class="badge badge-shared">
                        <span class="ico" aria-hidden="true">{ "▤" }</span>{ t.img_ro }
                    </span>
                    <code class="stack-digest" title={layer.digest.clone()}>
                        { short_digest(&layer.digest) }
                    </code>
                    <span class="stack-size">{ binary_size(layer.size) }</span>
                    if let Some(path) = here {
                        { here_badge(t.which_here, path) }
                    }
                </div>
                <div class="stack-meter" aria-hidden="true">
                    <span style={format!("width: {share:.1}%")}></span>
                </div>
                <p class="stack-created mono">{ &layer.created_by }</p>
                <details class="stack-details">
                    <summary>{ t.img_details }</summary>
                    <dl>
                        <dt>{ t.img_host_dir }</dt>
                        <dd class="mono">{ &layer.dir }</dd>
                        <dt>{ t.img_digest }</dt>
                        <dd class="mono">{ &layer.digest }</dd>
                        <dt>{ t.img_diff_id }</dt>
                        <dd class="mono">{ &layer.diff_id }</dd>
                    </dl>
                </details>
            </li>
        }
    });

    let answer_view = match (&props.which.asked, &props.which.answer) {
        (Some(asked), _) => html! {
            <PendingLine id="which-pending" text={t.which_asking} subject={asked.clone()} />
        },
        (None, Some((path, provenance))) => {
            let index = match provenance {
                Provenance::Layer { index } => Some(*index),
                _ => None,
            };
            let (icon, text) = match provenance {
                Provenance::Upper => ("✎", t.which_upper.to_owned()),
                Provenance::Layer { index } => (
                    "▤",
                    which_layer(
                        lang,
                        *index,
                        image
                            .layers
                            .get(*index)
                            .map_or("?", |l| l.created_by.as_str()),
                    ),
                ),
                Provenance::Deleted => ("✕", t.which_deleted.to_owned()),
                Provenance::Missing => ("∅", t.which_missing.to_owned()),
            };
            html! {
                <div id="which-answer"
                    class={classes!("which-answer", format!("from-{}", provenance.as_str()))}
                    data-from={provenance.as_str()}
                    data-index={index.map(|i| i.to_string())}
                    data-path={path.clone()}
                    data-stale={props.which.stale.to_string()}>
                    <p>
                        <code class="which-path">{ path }</code>
                        <span class="which-arrow" aria-hidden="true">{ " ← " }</span>
                        <span class="ico" aria-hidden="true">{ icon }</span>
                        { text }
                    </p>
                    if props.which.stale {
                        <p class="which-stale">
                            <span class="ico" aria-hidden="true">{ "⚠" }</span>{ t.which_stale }
                        </p>
                    }
                </div>
            }
        }
        (None, None) => html! {},
    };

    let lowers = lower_dirs(&image.mount);

    html! {
        <section class="card" id="image-layers" aria-labelledby="image-layers-title"
            data-layers={image.layers.len().to_string()}
            data-image={image.name.clone()}>
            <header class="card-head">
                <h2 id="image-layers-title">{ t.img_title }</h2>
            </header>
            <p class="card-caption">{ t.img_caption }</p>

            <p class="cmd-label"><code>{ "docker images" }</code></p>
            <table class="mini-table image-table">
                <thead>
                    <tr>
                        <th scope="col">{ t.img_col_repo }</th>
                        <th scope="col">{ t.img_col_tag }</th>
                        <th scope="col">{ t.img_col_id }</th>
                        <th scope="col" title={t.img_size_note}>{ t.img_col_size }</th>
                    </tr>
                </thead>
                <tbody>
                    <tr>
                        <td class="mono">{ repo }</td>
                        <td class="mono">{ tag }</td>
                        <td class="mono">{ &image.id }</td>
                        <td class="mono">{ binary_size(total) }</td>
                    </tr>
                </tbody>
            </table>
            <p class="img-note">{ t.img_size_note }</p>
            { props.children.clone() }

            <h3 class="sub-head">{ t.img_stack_title }</h3>
            <p class="card-caption">{ t.img_stack_caption }</p>
            <ul class="layer-stack" aria-label={t.img_stack_title}>
                { upper_row }
                { for layer_rows }
            </ul>

            <form id="which-form" class="which-form" {onsubmit}>
                <label for="which-path">{ t.which_title }</label>
                <div class="which-row">
                    <input id="which-path" type="text" class="which-input mono"
                        value={(*path).clone()}
                        {oninput}
                        aria-label={t.which_label}
                        placeholder={t.which_label}
                        autocomplete="off"
                        autocapitalize="off"
                        spellcheck="false" />
                    <button type="submit" class="btn btn-primary btn-small" disabled={!props.ready}>
                        { t.which_button }
                    </button>
                </div>
            </form>
            <div class="which-result" aria-live="polite">{ answer_view }</div>

            if !image.volumes.is_empty() {
                <h3 class="sub-head">{ t.img_volumes_title }</h3>
                <p class="img-note">{ t.img_volumes_note }</p>
                <ul id="image-volumes">
                    for volume in image.volumes.iter() {
                        <li><code>{ volume }</code></li>
                    }
                </ul>
            }
            <h3 class="sub-head">{ t.img_mount_title }</h3>
            <pre class="cmd-shell mount-line"><code>{ &image.mount }</code></pre>
            if !lowers.is_empty() {
                <p class="img-note">{ t.img_lower_order }</p>
                <ol class="lower-order">
                    for dir in lowers {
                        <li>
                            <code>{ dir }</code>
                            if let Some(index) = image.layers.iter().position(|l| l.dir == dir) {
                                <span class="lower-layer">{ format!("= {}", layer_name(lang, index)) }</span>
                            }
                        </li>
                    }
                </ol>
            }
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_digests() {
        assert_eq!(
            split_name("damda.local/busybox-httpd:latest"),
            ("damda.local/busybox-httpd", "latest")
        );
        assert_eq!(
            split_name("localhost:5000/x"),
            ("localhost:5000/x", "<none>")
        );
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
    }

    #[test]
    fn lowerdirs_top_first() {
        let line = "90 80 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/l/c:/l/b:/l/a,upperdir=/u,workdir=/w";
        assert_eq!(lower_dirs(line), ["/l/c", "/l/b", "/l/a"]);
        let plus = "- overlay overlay rw,lowerdir+=/l/c,lowerdir+=/l/b,upperdir=/u";
        assert_eq!(lower_dirs(plus), ["/l/c", "/l/b"]);
    }
}

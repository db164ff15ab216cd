use web_sys::HtmlInputElement;
use yew::prelude::*;

use crate::components::error_note::ErrorNote;
use crate::components::pending_line::PendingLine;
use crate::i18n::{import_progress, Lang};
use crate::state::ImportState;

/// What the path field shows before anyone types.
const IMPORT_PLACEHOLDER: &str = "/path/to/image.tar";

#[derive(PartialEq, Properties)]
pub struct ImageImportProps {
    pub lang: Lang,
    pub state: ImportState,
    /// Whether the page can ask the server now.
    pub ready: bool,
    pub on_import: Callback<String>,
}

/// A path the server may take: absolute. The server checks the rest.
fn valid_path(path: &str) -> bool {
    path.starts_with('/')
}

/// `docker load`: an image from a `docker save` tarball or an OCI layout on
/// the server's host, stored beside the others, with how far it is.
#[function_component(ImageImport)]
pub fn image_import(props: &ImageImportProps) -> Html {
    let lang = props.lang;
    let t = lang.t();
    let path = use_state(String::new);
    let bad = use_state(|| false);

    let pending = props.state.pending.is_some();
    let refused = props.state.refused;
    let disabled = !props.ready || pending || refused;
    let oninput = {
        let path = path.clone();
        let bad = bad.clone();
        Callback::from(move |e: InputEvent| {
            path.set(e.target_unchecked_into::<HtmlInputElement>().value());
            bad.set(false);
        })
    };
    let onsubmit = {
        let path = path.clone();
        let bad = bad.clone();
        let on_import = props.on_import.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let wanted = path.trim();
            if !valid_path(wanted) {
                bad.set(true);
            } else if !disabled {
                on_import.emit(wanted.to_owned());
            }
        })
    };

    let progress = props.state.progress.as_ref().map(|p| {
        let percent = p.percent();
        html! {
            <div id="import-progress" class="import-progress"
                data-stage={p.stage.as_str()}
                data-done={p.done.to_string()}
                data-total={p.total.to_string()}>
                <progress max="100" value={percent.to_string()}
                    aria-labelledby="import-progress-text">
                    { format!("{percent}%") }
                </progress>
                <span id="import-progress-text" class="import-progress-text mono">
                    { import_progress(lang, p) }
                </span>
            </div>
        }
    });
    let result = props.state.result.as_ref().map(|names| {
        html! {
            <div id="import-result" class="import-result" role="status"
                data-names={names.join(" ")}>
                if names.is_empty() {
                    <p class="import-made">{ t.import_none }</p>
                } else {
                    <p class="import-made">
                        <span class="ico" aria-hidden="true">{ "✔" }</span>
                        { format!("{} ", t.import_made) }
                        for (i, name) in names.iter().enumerate() {
                            if i > 0 { { ", " } }
                            <code class="import-name">{ name }</code>
                        }
                    </p>
                    <p class="img-note">{ t.import_hint }</p>
                }
            </div>
        }
    });

    html! {
        <div id="image-import" class="image-import" role="group" aria-labelledby="image-import-title"
            data-pending={pending.to_string()}>
            <h3 id="image-import-title" class="sub-head">{ t.import_title }</h3>
            <p class="img-note">{ t.import_caption }</p>
            <form class="import-form" {onsubmit} novalidate=true>
                <label for="import-path">{ t.import_label }</label>
                <div class="which-row">
                    <input id="import-path" type="text" class="which-input mono"
                        value={(*path).clone()}
                        placeholder={IMPORT_PLACEHOLDER}
                        {oninput}
                        disabled={pending || refused}
                        aria-invalid={bad.then_some("true")}
                        aria-describedby={bad.then_some("import-bad-path")}
                        autocomplete="off"
                        autocapitalize="off"
                        spellcheck="false" />
                    <button type="submit" class="btn btn-primary" {disabled}>
                        if pending {
                            <span class="spinner" aria-hidden="true"></span>
                        } else {
                            <span class="ico" aria-hidden="true">{ "⇩" }</span>
                        }
                        { t.import_button }
                    </button>
                </div>
                if *bad {
                    <p id="import-bad-path" class="commit-bad" role="alert">
                        <span class="ico" aria-hidden="true">{ "⚠" }</span>{ t.import_bad_path }
                    </p>
                }
            </form>
            if refused {
                <p class="img-note import-refused">{ t.import_refused }</p>
            }
            <div class="import-status" aria-live="polite">
                if let Some(asked) = &props.state.pending {
                    <PendingLine id="import-pending" text={t.import_pending} subject={asked.clone()}>
                        if props.state.progress.is_none() {
                            { format!(" {}", t.import_starting) }
                        }
                    </PendingLine>
                }
                { for progress }
                if let Some(message) = &props.state.error {
                    <ErrorNote id="import-error" title={t.import_failed} message={message.clone()} />
                }
            </div>
            { for result }
        </div>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(valid_path("/tmp/image.tar"));
        assert!(!valid_path(""));
        assert!(!valid_path("image.tar"));
    }
}

use std::collections::HashSet;

use damda_protocol::{binary_size, LayerView};
use web_sys::HtmlInputElement;
use yew::prelude::*;

use crate::components::error_note::ErrorNote;
use crate::components::image_layers::short_digest;
use crate::components::pending_line::PendingLine;
use crate::i18n::{commit_summary, layer_name, Lang};
use crate::state::CommitState;

/// What the name field holds before anyone types.
pub const COMMIT_DEFAULT: &str = "damda.local/my-box:1";

#[derive(PartialEq, Properties)]
pub struct CommitFormProps {
    pub lang: Lang,
    /// The layers of the image the box is built from, bottom first: a
    /// committed layer with one of their digests is shared.
    pub base_layers: Vec<LayerView>,
    /// How many entries the box's upper directory holds.
    pub upper_count: usize,
    pub state: CommitState,
    /// Whether the page can ask the server now.
    pub ready: bool,
    pub on_commit: Callback<String>,
    /// Builds the box again from the image named.
    pub on_start: Callback<String>,
}

/// A name the server may take: something, without whitespace. The server
/// checks the rest.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_whitespace)
}

/// The name to suggest after `name` was used: its numeric tag plus one.
fn next_name(name: &str) -> Option<String> {
    let (repo, tag) = name.rsplit_once(':')?;
    let number: u64 = tag.parse().ok()?;
    Some(format!("{repo}:{}", number + 1))
}

/// `docker commit`: the box's upper directory saved as a new layer on top of
/// its image, and the image it made, its lower layers shared.
#[function_component(CommitForm)]
pub fn commit_form(props: &CommitFormProps) -> Html {
    let lang = props.lang;
    let t = lang.t();
    let name = use_state(|| COMMIT_DEFAULT.to_owned());
    let bad = use_state(|| false);
    {
        // After a commit the field suggests the next tag.
        let name = name.clone();
        let made = props.state.result.as_ref().map(|r| r.name.clone());
        use_effect_with(made, move |made| {
            if let Some(next) = made.as_ref().and_then(|m| next_name(m)) {
                if Some(&*name) == made.as_ref() {
                    name.set(next);
                }
            }
        });
    }

    let pending = props.state.pending.is_some();
    let oninput = {
        let name = name.clone();
        let bad = bad.clone();
        Callback::from(move |e: InputEvent| {
            name.set(e.target_unchecked_into::<HtmlInputElement>().value());
            bad.set(false);
        })
    };
    let onsubmit = {
        let name = name.clone();
        let bad = bad.clone();
        let on_commit = props.on_commit.clone();
        let ready = props.ready && !pending;
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let wanted = name.trim();
            if !valid_name(wanted) {
                bad.set(true);
            } else if ready {
                on_commit.emit(wanted.to_owned());
            }
        })
    };

    let result = props.state.result.as_ref().map(|image| {
        let base: HashSet<&str> = props
            .base_layers
            .iter()
            .map(|l| l.digest.as_str())
            .collect();
        let shared_count = image
            .layers
            .iter()
            .filter(|l| base.contains(l.digest.as_str()))
            .count();
        let rows = image.layers.iter().enumerate().rev().map(|(index, layer)| {
            let shared = base.contains(layer.digest.as_str());
            html! {
                <li class={classes!("stack-row", if shared { "layer-row" } else { "new-layer-row" })}
                    data-shared={shared.to_string()}
                    data-digest={layer.digest.clone()}
                    data-index={index.to_string()}>
                    <div class="stack-bar">
                        <span class="stack-name">{ layer_name(lang, index) }</span>
                        if shared {
                            <span class="badge badge-shared">
                                <span class="ico" aria-hidden="true">{ "⇄" }</span>{ t.commit_shared }
                            </span>
                        } else {
                            <span class="badge badge-own">
                                <span class="ico" aria-hidden="true">{ "＋" }</span>{ t.commit_new_layer }
                            </span>
                        }
                        <code class="stack-digest" title={layer.digest.clone()}>
                            { short_digest(&layer.digest) }
                        </code>
                        <span class="stack-size">{ binary_size(layer.size) }</span>
                    </div>
                    <p class="stack-created mono">{ &layer.created_by }</p>
                </li>
            }
        });
        let on_start = {
            let on_start = props.on_start.clone();
            let made = image.name.clone();
            Callback::from(move |_: MouseEvent| on_start.emit(made.clone()))
        };
        html! {
            <div id="commit-result" class="commit-result" role="status"
                data-name={image.name.clone()}
                data-id={image.id.clone()}>
                <p class="commit-made">
                    <span class="ico" aria-hidden="true">{ "✔" }</span>
                    { format!("{} ", t.commit_made) }
                    <code class="commit-name">{ &image.name }</code>
                    { " (" }<code class="commit-id">{ &image.id }</code>{ ")" }
                </p>
                <h3 class="sub-head">{ t.commit_layers }</h3>
                <ul class="layer-stack" aria-label={t.commit_layers}>
                    { for rows }
                </ul>
                <p class="img-note commit-summary">
                    { commit_summary(lang, shared_count, image.layers.len()) }
                </p>
                <div class="commit-start">
                    <button id="start-from-commit" type="button" class="btn btn-primary"
                        disabled={!props.ready || pending}
                        onclick={on_start}>
                        <span class="ico" aria-hidden="true">{ "▶" }</span>{ t.commit_start }
                    </button>
                    <p class="img-note">{ t.commit_start_note }</p>
                </div>
            </div>
        }
    });

    html! {
        <section class="card" id="commit-card" aria-labelledby="commit-card-title"
            data-pending={pending.to_string()}>
            <header class="card-head">
                <h2 id="commit-card-title">{ t.commit_title }</h2>
            </header>
            <p class="card-caption">{ t.commit_caption }</p>
            <form id="commit-form" class="commit-form" {onsubmit} novalidate=true>
                <label for="commit-name">{ t.commit_name_label }</label>
                <div class="which-row">
                    <input id="commit-name" type="text" class="which-input mono"
                        value={(*name).clone()}
                        {oninput}
                        aria-invalid={bad.then_some("true")}
                        aria-describedby={bad.then_some("commit-bad-name")}
                        autocomplete="off"
                        autocapitalize="off"
                        spellcheck="false" />
                    <button type="submit" class="btn btn-primary"
                        disabled={!props.ready || pending}>
                        { t.commit_button }
                    </button>
                </div>
                if *bad {
                    <p id="commit-bad-name" class="commit-bad" role="alert">
                        <span class="ico" aria-hidden="true">{ "⚠" }</span>{ t.commit_bad_name }
                    </p>
                }
            </form>
            if props.upper_count == 0 && !pending {
                <p class="img-note">{ t.commit_empty }</p>
            }
            <div class="commit-status" aria-live="polite">
                if let Some(asked) = &props.state.pending {
                    <PendingLine id="commit-pending" text={t.commit_pending} subject={asked.clone()} />
                }
                if let Some(message) = &props.state.error {
                    <ErrorNote id="commit-error" title={t.commit_failed} message={message.clone()} />
                }
            </div>
            { for result }
        </section>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_name(COMMIT_DEFAULT));
        assert!(!valid_name(""));
        assert!(!valid_name("my box:1"));
        assert_eq!(
            next_name("damda.local/my-box:1").as_deref(),
            Some("damda.local/my-box:2")
        );
        assert_eq!(next_name("damda.local/my-box:latest"), None);
        assert_eq!(next_name("localhost:5000/x"), None);
    }
}

use yew::prelude::*;

use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct ControlsProps {
    pub lang: Lang,
    /// "3 / 13" and the step's title, or `None` before the first snapshot.
    pub position: Option<(usize, usize)>,
    pub title: Option<String>,
    pub step_id: Option<&'static str>,
    pub can_back: bool,
    pub can_next: bool,
    pub can_reset: bool,
    pub on_back: Callback<()>,
    pub on_next: Callback<()>,
    pub on_reset: Callback<()>,
    #[prop_or_default]
    pub children: Html,
}

/// Back / Next / Start over, with where the box stands.
#[function_component(Controls)]
pub fn controls(props: &ControlsProps) -> Html {
    let t = props.lang.t();
    let click = |cb: &Callback<()>| {
        let cb = cb.clone();
        move |_: MouseEvent| cb.emit(())
    };
    html! {
        <div class="controls">
            <div class="controls-where">
                if let Some((n, total)) = props.position {
                    <span class="where-count">{ format!("{n} / {total}") }</span>
                }
                if let Some(id) = props.step_id {
                    <code class="where-id">{ id }</code>
                }
                if let Some(title) = &props.title {
                    <span class="where-title">{ title }</span>
                }
                { props.children.clone() }
            </div>
            <div class="controls-buttons">
                <span class="keys-hint">{ t.keys_hint }</span>
                <button type="button" id="btn-back" class="btn"
                    disabled={!props.can_back} onclick={click(&props.on_back)}>
                    <span aria-hidden="true">{ "← " }</span>{ t.back }
                </button>
                <button type="button" id="btn-next" class="btn btn-primary"
                    disabled={!props.can_next} onclick={click(&props.on_next)}>
                    { t.next }<span aria-hidden="true">{ " →" }</span>
                </button>
                <button type="button" id="btn-reset" class="btn btn-quiet"
                    disabled={!props.can_reset} onclick={click(&props.on_reset)}>
                    <span aria-hidden="true">{ "↺ " }</span>{ t.reset }
                </button>
            </div>
        </div>
    }
}

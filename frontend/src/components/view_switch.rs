use yew::prelude::*;

use crate::i18n::Lang;
use crate::state::MainView;

#[derive(PartialEq, Properties)]
pub struct ViewSwitchProps {
    pub lang: Lang,
    pub view: MainView,
    /// A comparison runs: its tab shows a spinner from the other view too.
    pub compare_running: bool,
    pub on_view: Callback<MainView>,
}

/// The two things the page shows: the box built step by step, or the VM
/// and the container compared.
#[function_component(ViewSwitch)]
pub fn view_switch(props: &ViewSwitchProps) -> Html {
    let t = props.lang.t();
    let tab = |view: MainView, id: &'static str, icon: Html, label: &'static str| {
        let on_view = props.on_view.clone();
        let on = props.view == view;
        html! {
            <button type="button" {id}
                class={classes!("view-tab", on.then_some("is-on"))}
                aria-pressed={on.to_string()}
                onclick={move |_| on_view.emit(view)}>
                { icon }{ label }
            </button>
        }
    };
    let compare_icon = if props.compare_running {
        html! { <span class="spinner" aria-hidden="true"></span> }
    } else {
        html! { <span class="ico" aria-hidden="true">{ "⚖" }</span> }
    };
    html! {
        <div class="view-switch" role="group" aria-label={t.view_label}>
            { tab(MainView::Steps, "view-steps",
                html! { <span class="ico" aria-hidden="true">{ "▤" }</span> }, t.view_steps) }
            { tab(MainView::Compare, "view-compare", compare_icon, t.view_compare) }
        </div>
    }
}

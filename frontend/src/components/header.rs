use yew::prelude::*;

use crate::components::connection_status::ConnectionStatus;
use crate::components::view_switch::ViewSwitch;
use crate::i18n::Lang;
use crate::state::{Connection, MainView};

#[derive(PartialEq, Properties)]
pub struct HeaderProps {
    pub lang: Lang,
    pub connection: Connection,
    pub session: Option<String>,
    pub on_lang: Callback<Lang>,
    pub view: MainView,
    pub compare_running: bool,
    pub on_view: Callback<MainView>,
}

#[function_component(Header)]
pub fn header(props: &HeaderProps) -> Html {
    let t = props.lang.t();
    let lang_button = |lang: Lang, label: &'static str| {
        let on_lang = props.on_lang.clone();
        let pressed = props.lang == lang;
        html! {
            <button
                type="button"
                class={classes!("lang-button", pressed.then_some("is-on"))}
                lang={lang.code()}
                aria-pressed={pressed.to_string()}
                data-lang={lang.code()}
                onclick={move |_| on_lang.emit(lang)}
            >
                { label }
            </button>
        }
    };

    html! {
        <header class="site-header">
            <div class="brand">
                <span class="brand-mark" aria-hidden="true">{ "담" }</span>
                <div class="brand-text">
                    <h1 class="brand-name">
                        <span lang="en">{ "damda" }</span>
                        <span class="brand-ko" lang="ko">{ "담다" }</span>
                    </h1>
                    <p class="brand-subtitle">{ t.subtitle }</p>
                </div>
            </div>
            <ViewSwitch lang={props.lang} view={props.view} compare_running={props.compare_running}
                on_view={props.on_view.clone()} />
            <div class="header-tools">
                <div class="lang-toggle" role="group" aria-label={t.language}>
                    { lang_button(Lang::Ko, "한국어") }
                    { lang_button(Lang::En, "English") }
                </div>
                <ConnectionStatus
                    lang={props.lang}
                    connection={props.connection}
                    session={props.session.clone()}
                />
            </div>
        </header>
    }
}

use damda_protocol::ErrorCode;
use yew::prelude::*;

use crate::hooks::use_errno::ErrnoTable;
use crate::i18n::{error_code_text, Lang};
use crate::state::ServerError;

#[derive(PartialEq, Properties)]
pub struct ErrorBannerProps {
    pub lang: Lang,
    pub error: ServerError,
    pub errno: ErrnoTable,
    pub on_dismiss: Callback<()>,
}

/// A refusal from the server. For a step the kernel refused: the syscall,
/// the errno as the kernel gave it, and what that errno means in plain words.
#[function_component(ErrorBanner)]
pub fn error_banner(props: &ErrorBannerProps) -> Html {
    let t = props.lang.t();
    let e = &props.error;
    let code = e.code.as_str();
    let kernel = e.error.as_ref().map(|k| {
        let plain = props.errno.get(&k.errno_name).cloned();
        html! {
            <>
                <p class="error-syscall mono">
                    { format!("{}: {} (errno {}) {}", k.syscall, k.errno_name, k.errno, k.message) }
                </p>
                if let Some(plain) = plain {
                    <p class="error-plain">
                        <strong>{ format!("{}: ", t.errno_plain) }</strong>{ plain }
                    </p>
                }
            </>
        }
    });
    let tone = if e.code == ErrorCode::NoSuchSession {
        "notice"
    } else {
        "error"
    };
    let on_dismiss = props.on_dismiss.clone();
    html! {
        <div id="error-banner" class={classes!("banner", format!("banner-{tone}"))}
            role="alert" data-code={code} data-step={e.step.map(|s| s.as_str())}>
            <span class="banner-icon" aria-hidden="true">{ if tone == "error" { "⚠" } else { "ℹ" } }</span>
            <div class="banner-body">
                <p class="banner-title">
                    <strong>{ error_code_text(props.lang, e.code) }</strong>
                    <code class="banner-code">{ code }</code>
                    if let Some(step) = e.step {
                        <code class="banner-code">{ step.as_str() }</code>
                    }
                </p>
                <p class="banner-message">{ &e.message }</p>
                { for kernel }
            </div>
            <button type="button" class="banner-close" aria-label={t.dismiss} title={t.dismiss}
                onclick={move |_| on_dismiss.emit(())}>
                { "✕" }
            </button>
        </div>
    }
}

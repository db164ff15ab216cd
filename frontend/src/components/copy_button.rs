use gloo::timers::callback::Timeout;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use yew::prelude::*;

use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct CopyButtonProps {
    pub lang: Lang,
    pub text: AttrValue,
    /// Overrides the label ("Copy all").
    #[prop_or_default]
    pub label: Option<&'static str>,
}

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Idle,
    Copied,
    Failed,
}

/// Copies `text` with the clipboard API (or, on a page without a secure
/// context, the older selection copy) and says whether it worked.
#[function_component(CopyButton)]
pub fn copy_button(props: &CopyButtonProps) -> Html {
    let t = props.lang.t();
    let outcome = use_state_eq(|| Outcome::Idle);
    // Dropping the timeout (a new click, or unmounting) cancels it.
    let reset = use_mut_ref(|| None::<Timeout>);

    let onclick = {
        let outcome = outcome.clone();
        let text = props.text.clone();
        move |_: MouseEvent| {
            let outcome = outcome.clone();
            let reset = reset.clone();
            let text = text.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let ok = copy(&text).await;
                outcome.set(if ok { Outcome::Copied } else { Outcome::Failed });
                let back = outcome.clone();
                *reset.borrow_mut() = Some(Timeout::new(1600, move || back.set(Outcome::Idle)));
            });
        }
    };

    let label = match *outcome {
        Outcome::Idle => props.label.unwrap_or(t.copy),
        Outcome::Copied => t.copied,
        Outcome::Failed => t.copy_failed,
    };
    html! {
        <button type="button"
            class={classes!("copy-button", (*outcome == Outcome::Copied).then_some("is-copied"))}
            {onclick}>
            { label }
        </button>
    }
}

async fn copy(text: &str) -> bool {
    let window = gloo::utils::window();
    let navigator = window.navigator();
    let has_clipboard = js_sys::Reflect::get(&navigator, &JsValue::from_str("clipboard"))
        .map(|c| !c.is_undefined() && !c.is_null())
        .unwrap_or(false);
    if has_clipboard {
        let promise = navigator.clipboard().write_text(text);
        if JsFuture::from(promise).await.is_ok() {
            return true;
        }
    }
    copy_by_selection(text)
}

/// The pre-clipboard-API way: select a hidden textarea and `copy`.
fn copy_by_selection(text: &str) -> bool {
    let document = gloo::utils::document();
    let Ok(area) = document.create_element("textarea") else {
        return false;
    };
    let Ok(area) = area.dyn_into::<web_sys::HtmlTextAreaElement>() else {
        return false;
    };
    area.set_value(text);
    let _ = area.set_attribute("readonly", "");
    let _ = area.set_attribute("style", "position:fixed;top:0;left:-9999px;opacity:0");
    let Some(body) = document.body() else {
        return false;
    };
    if body.append_child(&area).is_err() {
        return false;
    }
    area.select();
    let ok = document
        .dyn_ref::<web_sys::HtmlDocument>()
        .and_then(|d| d.exec_command("copy").ok())
        .unwrap_or(false);
    area.remove();
    ok
}

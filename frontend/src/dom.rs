//! Small readings of the page's own elements.

use wasm_bindgen::JsValue;
use yew::NodeRef;

/// A `<select>`'s value: what the learner chose last (read as a property,
/// without web-sys's select element).
pub fn select_value(select: &NodeRef) -> Option<String> {
    let node = select.get()?;
    js_sys::Reflect::get(&node, &JsValue::from_str("value"))
        .ok()?
        .as_string()
}

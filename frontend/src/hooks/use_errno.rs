//! Plain-word explanations of errno names, per language, from the server.

use std::collections::HashMap;
use std::rc::Rc;

use yew::prelude::*;

use crate::api;
use crate::i18n::Lang;

pub type ErrnoTable = Rc<HashMap<String, String>>;

/// The table for `lang`; empty until it arrives (or if it cannot).
#[hook]
pub fn use_errno(lang: Lang) -> ErrnoTable {
    let tables = use_mut_ref(HashMap::<Lang, ErrnoTable>::new);
    let update = use_force_update();

    {
        let tables = tables.clone();
        use_effect_with(lang, move |lang| {
            let lang = *lang;
            if !tables.borrow().contains_key(&lang) {
                wasm_bindgen_futures::spawn_local(async move {
                    match api::errno(lang).await {
                        Ok(table) => {
                            tables.borrow_mut().insert(lang, Rc::new(table));
                            update.force_update();
                        }
                        Err(e) => gloo::console::warn!(format!("damda: errno table: {e}")),
                    }
                });
            }
        });
    }

    let table = tables.borrow().get(&lang).cloned();
    table.unwrap_or_default()
}

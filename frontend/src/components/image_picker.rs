use yew::prelude::*;

use crate::dom::select_value;
use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct ImagePickerProps {
    pub lang: Lang,
    /// The image the box is built from now.
    pub current: String,
    /// The images in the store a box can be built from.
    pub available: Vec<String>,
    /// Whether the page can ask the server now.
    pub ready: bool,
    /// The image the box is being rebuilt from, while it is.
    pub switching: Option<String>,
    pub on_image: Callback<String>,
}

/// The images to offer: the store's, with the current one among them.
fn options(current: &str, available: &[String]) -> Vec<String> {
    let mut names = available.to_vec();
    if !names.iter().any(|n| n == current) {
        names.insert(0, current.to_owned());
    }
    names
}

/// `docker run IMAGE`: the image the box is built from, and the others in
/// the store to build it from instead.
#[function_component(ImagePicker)]
pub fn image_picker(props: &ImagePickerProps) -> Html {
    let t = props.lang.t();
    let select = use_node_ref();
    let names = options(&props.current, &props.available);
    let busy = !props.ready || props.switching.is_some();

    let onsubmit = {
        let select = select.clone();
        let on_image = props.on_image.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if busy {
                return;
            }
            if let Some(name) = select_value(&select).filter(|name| !name.is_empty()) {
                on_image.emit(name);
            }
        })
    };

    html! {
        <form id="image-picker" class="image-picker" {onsubmit}
            data-current={props.current.clone()}
            data-switching={props.switching.clone()}>
            <label for="image-picker-select">{ t.picker_label }</label>
            <div class="which-row">
                // Keyed by what it lists and what is current: a new list or
                // a rebuilt box starts it again at the current image.
                <select id="image-picker-select" class="picker-select mono"
                    key={format!("{}|{}", props.current, names.join("|"))}
                    ref={select}
                    disabled={busy}>
                    for name in names.iter() {
                        <option value={name.clone()} selected={*name == props.current}>
                            if *name == props.current {
                                { format!("{name} ({})", t.picker_current) }
                            } else {
                                { name }
                            }
                        </option>
                    }
                </select>
                <button type="submit" class="btn" disabled={busy}>
                    if props.switching.is_some() {
                        <span class="spinner" aria-hidden="true"></span>{ t.picker_switching }
                    } else {
                        <span class="ico" aria-hidden="true">{ "↻" }</span>{ t.picker_button }
                    }
                </button>
            </div>
            <p class="img-note">{ t.picker_note }</p>
        </form>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_is_offered() {
        let store = vec!["a:1".to_owned(), "b:1".to_owned()];
        assert_eq!(options("b:1", &store), store);
        assert_eq!(options("c:1", &store), ["c:1", "a:1", "b:1"]);
    }
}

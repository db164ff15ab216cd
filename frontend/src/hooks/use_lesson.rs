//! Fetches the lesson for a language and id, keeping the ones already read
//! so the language toggle and going back are instant.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use damda_protocol::Lesson;
use yew::prelude::*;

use crate::api;
use crate::i18n::Lang;

/// The lesson pane's input: the lesson to show (the previous one stays up
/// while the next loads), whether a fetch runs, and why the last one failed.
#[derive(Clone, PartialEq)]
pub struct LessonHandle {
    pub lesson: Option<Rc<Lesson>>,
    pub loading: bool,
    pub error: Option<String>,
    pub retry: Callback<()>,
}

#[derive(Clone, PartialEq, Default)]
struct Loaded {
    lesson: Option<Rc<Lesson>>,
    loading: bool,
    error: Option<String>,
}

#[hook]
pub fn use_lesson(lang: Lang, id: String) -> LessonHandle {
    let cache = use_mut_ref(HashMap::<(Lang, String), Rc<Lesson>>::new);
    let loaded = use_state(Loaded::default);
    let attempt = use_state(|| 0u32);

    {
        let loaded = loaded.clone();
        let cache = cache.clone();
        use_effect_with((lang, id.clone(), *attempt), move |(lang, id, _)| {
            let cancelled = Rc::new(Cell::new(false));
            let key = (*lang, id.clone());
            let cached = cache.borrow().get(&key).cloned();
            match cached {
                Some(lesson) => loaded.set(Loaded {
                    lesson: Some(lesson),
                    loading: false,
                    error: None,
                }),
                None => {
                    loaded.set(Loaded {
                        lesson: loaded.lesson.clone(),
                        loading: true,
                        error: None,
                    });
                    let cancelled = cancelled.clone();
                    let cache: Rc<RefCell<_>> = cache;
                    wasm_bindgen_futures::spawn_local(async move {
                        let result = api::lesson(key.0, &key.1).await;
                        if cancelled.get() {
                            return;
                        }
                        match result {
                            Ok(lesson) => {
                                let lesson = Rc::new(lesson);
                                cache.borrow_mut().insert(key, lesson.clone());
                                loaded.set(Loaded {
                                    lesson: Some(lesson),
                                    loading: false,
                                    error: None,
                                });
                            }
                            Err(e) => loaded.set(Loaded {
                                lesson: None,
                                loading: false,
                                error: Some(e),
                            }),
                        }
                    });
                }
            }
            move || cancelled.set(true)
        });
    }

    let retry = {
        let attempt = attempt.clone();
        Callback::from(move |()| attempt.set(*attempt + 1))
    };
    // A lesson read before shows at once, without waiting for the effect.
    let cached = cache.borrow().get(&(lang, id.clone())).cloned();
    if let Some(lesson) = cached {
        return LessonHandle {
            lesson: Some(lesson),
            loading: false,
            error: None,
            retry,
        };
    }
    let Loaded {
        lesson,
        loading,
        error,
    } = (*loaded).clone();
    LessonHandle {
        lesson,
        loading,
        error,
        retry,
    }
}

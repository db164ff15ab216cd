use web_sys::Element;
use yew::prelude::*;

use crate::hooks::use_lesson::LessonHandle;
use crate::i18n::Lang;

#[derive(PartialEq, Properties)]
pub struct LessonPaneProps {
    pub lang: Lang,
    pub lesson: LessonHandle,
    /// True while the intro is shown instead of the box's step.
    pub intro: bool,
}

/// The lesson, rendered by the server from Markdown, in `<article id="lesson">`.
#[function_component(LessonPane)]
pub fn lesson_pane(props: &LessonPaneProps) -> Html {
    let t = props.lang.t();
    let article = use_node_ref();
    let shown = props
        .lesson
        .lesson
        .as_ref()
        .map(|l| (l.id.clone(), l.lang.clone()));

    // A new lesson starts at its top.
    {
        let article = article.clone();
        use_effect_with(shown.clone(), move |_| {
            if let Some(element) = article.cast::<Element>() {
                element.set_scroll_top(0);
            }
        });
    }

    let (id, lang) = shown.unwrap_or_default();
    let body = match (&props.lesson.lesson, &props.lesson.error) {
        (Some(lesson), _) => Html::from_html_unchecked(AttrValue::from(lesson.html.clone())),
        (None, Some(error)) => {
            let retry = props.lesson.retry.clone();
            html! {
                <div class="lesson-failed" role="alert">
                    <p><strong>{ t.lesson_failed }</strong></p>
                    <p class="mono small">{ error }</p>
                    <button type="button" class="btn" onclick={move |_| retry.emit(())}>
                        { t.retry }
                    </button>
                </div>
            }
        }
        (None, None) => html! {
            <p class="lesson-placeholder">{ t.lesson_loading }</p>
        },
    };

    html! {
        <section class="lesson-col">
            if props.intro {
                <p class="lesson-note">{ t.reading_intro }</p>
            }
            <article
                id="lesson"
                ref={article}
                class={classes!("lesson", props.lesson.loading.then_some("is-loading"))}
                data-lesson={id}
                lang={if lang.is_empty() { props.lang.code().to_owned() } else { lang }}
                aria-busy={props.lesson.loading.to_string()}
                tabindex="0"
            >
                { body }
            </article>
        </section>
    }
}

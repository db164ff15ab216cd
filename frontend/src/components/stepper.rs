use std::rc::Rc;

use damda_protocol::{StepId, StepInfo};
use yew::prelude::*;

use crate::i18n::Lang;
use crate::state::LessonView;

#[derive(PartialEq, Properties)]
pub struct StepperProps {
    pub lang: Lang,
    /// The lesson order from the server; `None` until it arrives.
    pub steps: Option<Rc<Vec<StepInfo>>>,
    /// The box's step.
    pub current: Option<StepId>,
    pub view: LessonView,
    /// Whether the page may ask the server to move the box now.
    pub can_move: bool,
    pub on_goto: Callback<StepId>,
    pub on_intro: Callback<()>,
}

/// The title of a step in `lang`, or its id before the list arrives.
pub fn step_title(steps: Option<&Rc<Vec<StepInfo>>>, lang: Lang, id: StepId) -> String {
    steps
        .and_then(|steps| steps.iter().find(|s| s.id == id))
        .map(|s| match lang {
            Lang::Ko => s.title_ko.clone(),
            Lang::En => s.title_en.clone(),
        })
        .unwrap_or_else(|| id.as_str().to_owned())
}

/// All thirteen steps in order, after an Intro entry. The box's step has a ▶,
/// bold type and `aria-current="step"`; steps the server cannot apply yet are
/// disabled and say so.
#[function_component(Stepper)]
pub fn stepper(props: &StepperProps) -> Html {
    let t = props.lang.t();
    let current_index = props.current.map(StepId::index);
    let reading_intro = props.view == LessonView::Intro;

    let intro = {
        let on_intro = props.on_intro.clone();
        html! {
            <li class="stepper-item">
                <button
                    type="button"
                    class={classes!("step", "step-intro", reading_intro.then_some("is-reading"))}
                    data-step="intro"
                    aria-pressed={reading_intro.to_string()}
                    onclick={move |_| on_intro.emit(())}
                >
                    <span class="step-marker" aria-hidden="true">{ "i" }</span>
                    <span class="step-id">{ t.intro }</span>
                </button>
            </li>
        }
    };

    let items = StepId::ALL.iter().map(|&id| {
        let info = props
            .steps
            .as_ref()
            .and_then(|steps| steps.iter().find(|s| s.id == id));
        let available = info.is_none_or(|s| s.available);
        let title = step_title(props.steps.as_ref(), props.lang, id);
        let index = id.index();
        let is_current = props.current == Some(id);
        let state = if !available {
            "unavailable"
        } else if is_current {
            "current"
        } else if current_index.is_some_and(|c| index < c) {
            "done"
        } else {
            "todo"
        };
        let marker = match state {
            "current" => "▶".to_owned(),
            "done" => "✓".to_owned(),
            _ => (index + 1).to_string(),
        };
        // The box's own step only switches the lesson back; others move it.
        let disabled = !available || (!is_current && !props.can_move);
        let onclick = {
            let on_goto = props.on_goto.clone();
            move |_| on_goto.emit(id)
        };
        let label = if available {
            format!("{}. {title}", index + 1)
        } else {
            format!("{}. {title} ({})", index + 1, t.coming_soon)
        };
        html! {
            <li class="stepper-item" key={id.as_str()}>
                <button
                    type="button"
                    class={classes!(
                        "step",
                        format!("is-{state}"),
                        (is_current && !reading_intro).then_some("is-reading"),
                    )}
                    data-step={id.as_str()}
                    data-state={state}
                    data-available={available.to_string()}
                    aria-current={is_current.then_some("step")}
                    aria-label={label}
                    title={title}
                    {disabled}
                    {onclick}
                >
                    <span class="step-marker" aria-hidden="true">{ marker }</span>
                    <span class="step-id">{ id.as_str() }</span>
                    if !available {
                        <span class="step-soon">{ t.coming_soon }</span>
                    }
                </button>
            </li>
        }
    });

    html! {
        <nav class="stepper" aria-label={t.steps_nav}>
            <ol class="stepper-list">
                { intro }
                { for items }
            </ol>
        </nav>
    }
}

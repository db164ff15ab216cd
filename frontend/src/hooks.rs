//! Custom hooks: the websocket, the lesson and errno fetches, the keyboard,
//! the page's visibility.

pub mod use_arrow_keys;
pub mod use_damda_socket;
pub mod use_errno;
pub mod use_lesson;
pub mod use_steps;
pub mod use_watch;

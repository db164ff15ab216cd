//! The page's own labels in Korean and English. Lesson prose is not here: it
//! comes from the server as rendered HTML. Only the words the page needs to
//! label what it shows live in Rust.

use damda_protocol::{ErrorCode, NsKind};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Lang {
    Ko,
    En,
}

impl Lang {
    /// The code the lesson and errno endpoints take, and `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ko => "ko",
            Lang::En => "en",
        }
    }

    pub fn from_code(code: &str) -> Option<Lang> {
        match code {
            "ko" => Some(Lang::Ko),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    pub fn t(self) -> &'static Texts {
        match self {
            Lang::Ko => &KO,
            Lang::En => &EN,
        }
    }
}

/// Every label of the page in one language.
pub struct Texts {
    pub subtitle: &'static str,
    pub language: &'static str,
    pub steps_nav: &'static str,
    pub intro: &'static str,
    pub coming_soon: &'static str,
    pub back: &'static str,
    pub next: &'static str,
    pub reset: &'static str,
    pub keys_hint: &'static str,
    pub rebuilt: &'static str,
    pub reading_intro: &'static str,
    pub conn_connecting: &'static str,
    pub conn_open: &'static str,
    pub conn_closed: &'static str,
    pub conn_retry_in: &'static str,
    pub conn_lost_banner: &'static str,
    pub waiting_first: &'static str,
    pub busy_default: &'static str,
    pub lesson_loading: &'static str,
    pub lesson_failed: &'static str,
    pub retry: &'static str,
    pub dismiss: &'static str,
    pub errno_plain: &'static str,
    pub ns_title: &'static str,
    pub ns_caption: &'static str,
    pub ns_col_type: &'static str,
    pub ns_col_what: &'static str,
    pub ns_col_host: &'static str,
    pub ns_col_box: &'static str,
    pub ns_col_status: &'static str,
    pub ns_shared: &'static str,
    pub ns_separate: &'static str,
    pub ns_separate_count: &'static str,
    pub just_changed: &'static str,
    pub proc_title: &'static str,
    pub proc_caption: &'static str,
    pub proc_col_field: &'static str,
    pub proc_col_box: &'static str,
    pub proc_col_host: &'static str,
    pub differs: &'static str,
    pub nspid_hint: &'static str,
    pub cmds_title: &'static str,
    pub cmds_caption: &'static str,
    pub syscalls_title: &'static str,
    pub copy: &'static str,
    pub copy_all: &'static str,
    pub copied: &'static str,
    pub copy_failed: &'static str,
    pub nothing_here: &'static str,
    pub views_label: &'static str,
    pub session: &'static str,
}

pub static KO: Texts = Texts {
    subtitle: "커널 기능을 하나씩 더해 컨테이너를 담아 보는 실습",
    language: "언어",
    steps_nav: "단계",
    intro: "소개",
    coming_soon: "준비 중",
    back: "이전",
    next: "다음",
    reset: "처음부터",
    keys_hint: "← → 키로도 움직일 수 있어요",
    rebuilt: "상자를 새로 만들어 이 단계까지 다시 적용했습니다",
    reading_intro: "소개를 읽는 중 — 상자는 그대로입니다",
    conn_connecting: "연결 중…",
    conn_open: "연결됨",
    conn_closed: "연결 끊김",
    conn_retry_in: "초 뒤 다시 연결",
    conn_lost_banner: "서버와의 연결이 끊겼습니다. 다시 연결하면 상자를 그대로 이어 갑니다.",
    waiting_first: "서버에서 상자의 첫 모습을 기다리는 중…",
    busy_default: "상자를 다시 만드는 중…",
    lesson_loading: "수업 내용을 불러오는 중…",
    lesson_failed: "수업 내용을 불러오지 못했습니다",
    retry: "다시 시도",
    dismiss: "닫기",
    errno_plain: "쉽게 말하면",
    ns_title: "네임스페이스 지도",
    ns_caption: "/proc/PID/ns/* 의 inode 번호: 같으면 호스트와 공유, 다르면 분리",
    ns_col_type: "종류",
    ns_col_what: "무엇을 나누나",
    ns_col_host: "호스트 inode",
    ns_col_box: "상자 inode",
    ns_col_status: "상태",
    ns_shared: "공유",
    ns_separate: "분리됨",
    ns_separate_count: "분리된 네임스페이스",
    just_changed: "방금 바뀜",
    proc_title: "프로세스 비교",
    proc_caption: "호스트에서 /proc/PID 로 읽은 값",
    proc_col_field: "항목",
    proc_col_box: "상자 프로세스",
    proc_col_host: "호스트 프로세스",
    differs: "다름",
    nspid_hint: "바깥 → 안쪽 PID 네임스페이스 순서",
    cmds_title: "직접 해보기 (셸)",
    cmds_caption: "이 단계를 터미널에서 손으로 해 보는 명령 (root 셸)",
    syscalls_title: "시스템 콜",
    copy: "복사",
    copy_all: "모두 복사",
    copied: "복사됨 ✓",
    copy_failed: "복사 실패",
    nothing_here: "이 단계에는 없습니다",
    views_label: "상자의 지금 모습",
    session: "세션",
};

pub static EN: Texts = Texts {
    subtitle: "Build a container one kernel primitive at a time",
    language: "Language",
    steps_nav: "Steps",
    intro: "Intro",
    coming_soon: "coming soon",
    back: "Back",
    next: "Next",
    reset: "Start over",
    keys_hint: "The ← → keys work too",
    rebuilt: "The box was rebuilt and the steps replayed up to here",
    reading_intro: "Reading the intro — the box stays as it is",
    conn_connecting: "Connecting…",
    conn_open: "Connected",
    conn_closed: "Disconnected",
    conn_retry_in: "s to reconnect",
    conn_lost_banner: "Lost the connection to the server. On reconnecting, your box carries on.",
    waiting_first: "Waiting for the server's first view of the box…",
    busy_default: "Rebuilding the box…",
    lesson_loading: "Loading the lesson…",
    lesson_failed: "Could not load the lesson",
    retry: "Try again",
    dismiss: "Dismiss",
    errno_plain: "In plain words",
    ns_title: "Namespace map",
    ns_caption: "inode numbers of /proc/PID/ns/*: equal means shared with the host, different means separate",
    ns_col_type: "Type",
    ns_col_what: "What it isolates",
    ns_col_host: "Host inode",
    ns_col_box: "Box inode",
    ns_col_status: "Status",
    ns_shared: "shared",
    ns_separate: "separate",
    ns_separate_count: "Separate namespaces",
    just_changed: "just changed",
    proc_title: "Processes side by side",
    proc_caption: "Read from /proc/PID on the host",
    proc_col_field: "Field",
    proc_col_box: "Box process",
    proc_col_host: "Host process",
    differs: "differs",
    nspid_hint: "outermost → innermost PID namespace",
    cmds_title: "Try it yourself (shell)",
    cmds_caption: "This step done by hand in a terminal (as root)",
    syscalls_title: "System calls",
    copy: "Copy",
    copy_all: "Copy all",
    copied: "Copied ✓",
    copy_failed: "Copy failed",
    nothing_here: "None for this step",
    views_label: "The box as it is now",
    session: "session",
};

/// One line on what a namespace type isolates.
pub fn ns_what(lang: Lang, kind: NsKind) -> &'static str {
    match (lang, kind) {
        (Lang::Ko, NsKind::Uts) => "호스트 이름과 도메인 이름",
        (Lang::Ko, NsKind::Pid) => "프로세스 번호(PID) — 안에서는 1번부터",
        (Lang::Ko, NsKind::Mnt) => "마운트 목록 — 보이는 파일 시스템 트리",
        (Lang::Ko, NsKind::Ipc) => "System V IPC와 POSIX 메시지 큐",
        (Lang::Ko, NsKind::Net) => "네트워크 장치, 주소, 라우팅, 포트",
        (Lang::Ko, NsKind::User) => "사용자·그룹 ID와 권한(capability)",
        (Lang::Ko, NsKind::Cgroup) => "/proc/self/cgroup에 보이는 cgroup 루트",
        (Lang::Ko, NsKind::Time) => "부팅 후 시계(MONOTONIC, BOOTTIME)",
        (Lang::En, NsKind::Uts) => "hostname and domain name",
        (Lang::En, NsKind::Pid) => "process IDs — starting from 1 inside",
        (Lang::En, NsKind::Mnt) => "the mount table — the file tree it sees",
        (Lang::En, NsKind::Ipc) => "System V IPC and POSIX message queues",
        (Lang::En, NsKind::Net) => "network devices, addresses, routes, ports",
        (Lang::En, NsKind::User) => "user and group IDs, capabilities",
        (Lang::En, NsKind::Cgroup) => "the cgroup root seen in /proc/self/cgroup",
        (Lang::En, NsKind::Time) => "boot-relative clocks (MONOTONIC, BOOTTIME)",
    }
}

/// What a server error code means, for the banner's heading.
pub fn error_code_text(lang: Lang, code: ErrorCode) -> &'static str {
    match (lang, code) {
        (Lang::Ko, ErrorCode::BadMessage) => "서버가 이해하지 못한 메시지",
        (Lang::Ko, ErrorCode::TooLarge) => "메시지가 너무 큼",
        (Lang::Ko, ErrorCode::UnknownStep) => "아직 갈 수 없는 단계",
        (Lang::Ko, ErrorCode::NoSuchMove) => "더 갈 곳이 없음",
        (Lang::Ko, ErrorCode::StepFailed) => "커널이 이 단계를 거절함",
        (Lang::Ko, ErrorCode::NoSuchSession) => "이전 상자를 찾지 못해 새 상자로 시작함",
        (Lang::Ko, ErrorCode::TooManyBoxes) => "서버의 상자 수가 한도에 닿음",
        (Lang::Ko, ErrorCode::BoxFailed) => "상자를 만들거나 관찰하지 못함",
        (Lang::En, ErrorCode::BadMessage) => "A message the server did not understand",
        (Lang::En, ErrorCode::TooLarge) => "Message too large",
        (Lang::En, ErrorCode::UnknownStep) => "A step that is not available",
        (Lang::En, ErrorCode::NoSuchMove) => "Nowhere further to go",
        (Lang::En, ErrorCode::StepFailed) => "The kernel refused this step",
        (Lang::En, ErrorCode::NoSuchSession) => "The earlier box is gone; started a fresh one",
        (Lang::En, ErrorCode::TooManyBoxes) => "The server runs as many boxes as it allows",
        (Lang::En, ErrorCode::BoxFailed) => "The box could not be started or observed",
    }
}

/// The wire name of an error code (`step_failed`), shown next to the text.
pub fn error_code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BadMessage => "bad_message",
        ErrorCode::TooLarge => "too_large",
        ErrorCode::UnknownStep => "unknown_step",
        ErrorCode::NoSuchMove => "no_such_move",
        ErrorCode::StepFailed => "step_failed",
        ErrorCode::NoSuchSession => "no_such_session",
        ErrorCode::TooManyBoxes => "too_many_boxes",
        ErrorCode::BoxFailed => "box_failed",
    }
}

/// Row labels of the process comparison, by `data-field` name.
pub fn field_label(lang: Lang, field: &str) -> &'static str {
    match (lang, field) {
        (_, "pid") => "PID",
        (_, "ppid") => "PPID",
        (_, "nspid") => "NSpid",
        (Lang::Ko, "comm") => "명령 (comm)",
        (Lang::Ko, "uid") => "UID 실제/유효",
        (Lang::Ko, "gid") => "GID 실제/유효",
        (Lang::Ko, "root") => "루트 디렉터리",
        (Lang::Ko, "cwd") => "작업 디렉터리",
        (Lang::Ko, "hostname") => "호스트 이름",
        (Lang::Ko, "cgroups") => "cgroup",
        (Lang::En, "comm") => "Command (comm)",
        (Lang::En, "uid") => "UID real/eff",
        (Lang::En, "gid") => "GID real/eff",
        (Lang::En, "root") => "Root directory",
        (Lang::En, "cwd") => "Working directory",
        (Lang::En, "hostname") => "Hostname",
        (Lang::En, "cgroups") => "cgroup",
        _ => "",
    }
}

//! Live usage of a box's group, read from the kernel's own counters. The
//! parsers take the files' text, so fixtures test them without root.

use super::CgroupVersion;

/// The usage counters are protocol data (streamed to the page); their
/// parsers live here.
pub use damda_protocol::CgroupStats;

/// v1 reports "no limit" as the largest page-aligned counter
/// (9223372036854771712); anything this large limits nothing.
const V1_UNLIMITED: u64 = 1 << 62;

/// A single-value file: a number, or `max` (Some(None)).
fn single(text: &str) -> Option<Option<u64>> {
    let value = text.trim();
    if value == "max" {
        return Some(None);
    }
    value.parse().ok().map(Some)
}

/// A value of a flat-keyed file (`key value` per line).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Sums `key=N` over the lines of v2's io.stat (one line per device).
fn io_stat_sum(text: &str, key: &str) -> u64 {
    text.split_whitespace()
        .filter_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// Sums the `MAJ:MIN Op N` lines of v1's blkio byte counters for one Op.
fn blkio_sum(text: &str, op: &str) -> u64 {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (_device, this_op, n) = (words.next()?, words.next()?, words.next()?);
            (this_op == op).then(|| n.parse::<u64>().ok())?
        })
        .sum()
}

/// The statistics from the files' text: `file` returns a file's content by
/// its name (`memory.current`), or None where it does not exist.
pub fn parse_stats(version: CgroupVersion, file: &dyn Fn(&str) -> Option<String>) -> CgroupStats {
    match version {
        CgroupVersion::V1 => parse_v1(file),
        CgroupVersion::V2 => parse_v2(file),
    }
}

fn parse_v2(file: &dyn Fn(&str) -> Option<String>) -> CgroupStats {
    let memory_events = file("memory.events");
    let cpu = file("cpu.stat");
    let pids_events = file("pids.events");
    let io = file("io.stat");
    CgroupStats {
        memory_current: file("memory.current").and_then(|t| single(&t)).flatten(),
        memory_max: file("memory.max").and_then(|t| single(&t)).flatten(),
        memory_events_oom_kill: memory_events.as_deref().and_then(|t| keyed(t, "oom_kill")),
        memory_failcnt: None,
        cpu_usage_usec: cpu.as_deref().and_then(|t| keyed(t, "usage_usec")),
        nr_periods: cpu.as_deref().and_then(|t| keyed(t, "nr_periods")),
        nr_throttled: cpu.as_deref().and_then(|t| keyed(t, "nr_throttled")),
        throttled_usec: cpu.as_deref().and_then(|t| keyed(t, "throttled_usec")),
        pids_current: file("pids.current").and_then(|t| single(&t)).flatten(),
        pids_max: file("pids.max").and_then(|t| single(&t)).flatten(),
        pids_events_max: pids_events.as_deref().and_then(|t| keyed(t, "max")),
        io_read_bytes: io.as_deref().map(|t| io_stat_sum(t, "rbytes")),
        io_write_bytes: io.as_deref().map(|t| io_stat_sum(t, "wbytes")),
    }
}

fn parse_v1(file: &dyn Fn(&str) -> Option<String>) -> CgroupStats {
    let cpu = file("cpu.stat");
    let pids_events = file("pids.events");
    let blkio = file("blkio.throttle.io_service_bytes_recursive")
        .or_else(|| file("blkio.throttle.io_service_bytes"));
    let throttled_usec = cpu.as_deref().and_then(|t| {
        keyed(t, "throttled_usec").or_else(|| keyed(t, "throttled_time").map(|ns| ns / 1000))
    });
    CgroupStats {
        memory_current: file("memory.usage_in_bytes")
            .and_then(|t| single(&t))
            .flatten(),
        memory_max: file("memory.limit_in_bytes")
            .and_then(|t| single(&t))
            .flatten()
            .filter(|&limit| limit < V1_UNLIMITED),
        memory_events_oom_kill: file("memory.oom_control").and_then(|t| keyed(&t, "oom_kill")),
        memory_failcnt: file("memory.failcnt").and_then(|t| single(&t)).flatten(),
        cpu_usage_usec: file("cpuacct.usage")
            .and_then(|t| single(&t))
            .flatten()
            .map(|ns| ns / 1000),
        nr_periods: cpu.as_deref().and_then(|t| keyed(t, "nr_periods")),
        nr_throttled: cpu.as_deref().and_then(|t| keyed(t, "nr_throttled")),
        throttled_usec,
        pids_current: file("pids.current").and_then(|t| single(&t)).flatten(),
        pids_max: file("pids.max").and_then(|t| single(&t)).flatten(),
        pids_events_max: pids_events.as_deref().and_then(|t| keyed(t, "max")),
        io_read_bytes: blkio.as_deref().map(|t| blkio_sum(t, "Read")),
        io_write_bytes: blkio.as_deref().map(|t| blkio_sum(t, "Write")),
    }
}

/// The files [`parse_stats`] reads on `version`.
pub fn stat_files(version: CgroupVersion) -> &'static [&'static str] {
    match version {
        CgroupVersion::V1 => &[
            "memory.usage_in_bytes",
            "memory.limit_in_bytes",
            "memory.oom_control",
            "memory.failcnt",
            "cpuacct.usage",
            "cpu.stat",
            "pids.current",
            "pids.max",
            "pids.events",
            "blkio.throttle.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes",
        ],
        CgroupVersion::V2 => &[
            "memory.current",
            "memory.max",
            "memory.events",
            "cpu.stat",
            "pids.current",
            "pids.max",
            "pids.events",
            "io.stat",
        ],
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A fixture in `head *` form: `==> NAME <==` then the file's text.
    pub(crate) fn files(fixture: &str) -> HashMap<String, String> {
        let mut files = HashMap::new();
        let mut current: Option<(String, String)> = None;
        for line in fixture.lines() {
            if let Some(name) = line
                .strip_prefix("==> ")
                .and_then(|rest| rest.strip_suffix(" <=="))
            {
                files.extend(current.take());
                current = Some((name.to_owned(), String::new()));
            } else if let Some((_, text)) = current.as_mut() {
                text.push_str(line);
                text.push('\n');
            }
        }
        files.extend(current);
        files
    }

    #[test]
    fn v1_counters_from_a_box_after_the_demos() {
        let files = files(include_str!("fixtures/v1-hybrid/stats"));
        let stats = parse_stats(CgroupVersion::V1, &|name| files.get(name).cloned());
        assert_eq!(stats.memory_current, Some(9_601_024));
        assert_eq!(stats.memory_max, Some(33_554_432));
        assert_eq!(stats.memory_events_oom_kill, Some(1));
        assert_eq!(stats.memory_failcnt, Some(734));
        assert_eq!(stats.cpu_usage_usec, Some(1_205_730));
        assert_eq!(stats.nr_periods, Some(12));
        assert_eq!(stats.nr_throttled, Some(11));
        assert_eq!(stats.throttled_usec, Some(9_170_122));
        assert_eq!(stats.pids_current, Some(3));
        assert_eq!(stats.pids_max, Some(16));
        assert_eq!(stats.pids_events_max, Some(2_231));
        assert_eq!(stats.io_read_bytes, Some(4096 + 8192));
        assert_eq!(stats.io_write_bytes, Some(12_288));
    }

    #[test]
    fn v1_unlimited_memory_reads_as_none() {
        let stats = parse_stats(CgroupVersion::V1, &|name| {
            (name == "memory.limit_in_bytes").then(|| "9223372036854771712\n".to_owned())
        });
        assert_eq!(stats.memory_max, None);
        assert_eq!(stats, CgroupStats::default());
    }

    #[test]
    fn v2_counters_from_a_box_after_the_demos() {
        let files = files(include_str!("fixtures/v2-vm/stats"));
        let stats = parse_stats(CgroupVersion::V2, &|name| files.get(name).cloned());
        assert_eq!(stats.memory_current, Some(1_003_520));
        assert_eq!(stats.memory_max, Some(33_554_432));
        assert_eq!(stats.memory_events_oom_kill, Some(1));
        assert_eq!(stats.memory_failcnt, None);
        assert_eq!(stats.cpu_usage_usec, Some(253_491));
        assert_eq!(stats.nr_periods, Some(11));
        assert_eq!(stats.nr_throttled, Some(10));
        assert_eq!(stats.throttled_usec, Some(804_332));
        assert_eq!(stats.pids_current, Some(2));
        assert_eq!(stats.pids_max, None);
        assert_eq!(stats.pids_events_max, Some(57));
        assert_eq!(stats.io_read_bytes, Some(1_048_576 + 4_096));
        assert_eq!(stats.io_write_bytes, Some(0));
    }

    #[test]
    fn value_parsers() {
        assert_eq!(single("max\n"), Some(None));
        assert_eq!(single("42\n"), Some(Some(42)));
        assert_eq!(single("x"), None);
        assert_eq!(
            keyed("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n", "oom_kill"),
            Some(1)
        );
        assert_eq!(keyed("max 3\n", "oom"), None);
        assert_eq!(io_stat_sum("", "rbytes"), 0);
    }
}

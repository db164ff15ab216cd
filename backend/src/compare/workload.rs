//! The workload both sides run: the same busybox shell script, in the box
//! through `nsenter`-like entry and in the VM from its /init. It prints a
//! mark before each part; the host stamps each mark as it arrives, so the
//! parts are timed by one clock outside both (busybox's `date` has no
//! sub-second field).

use std::time::Duration;

/// What every mark line starts with.
const MARK: &str = "DAMDA-WL";

/// The parts: hashing 16 MiB (CPU-bound), opening, reading and closing a
/// small file 2000 times (system calls that stay in the caches), starting
/// 200 short processes (fork, exec, exit, wait). The files are read, not
/// created: creating files measured the host disk's state instead (ext4
/// scans past recently deleted inodes before it reuses any, and a busy
/// host's box directories have many), while the VM's files live in RAM.
pub const SCRIPT: &str = "\
echo DAMDA-WL start
echo DAMDA-WL cpu
dd if=/dev/zero bs=1M count=16 2>/dev/null | sha256sum >/dev/null
echo DAMDA-WL files
i=0; while [ $i -lt 2000 ]; do read -r line < /etc/hostname; i=$((i+1)); done
echo DAMDA-WL forks
i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done
echo DAMDA-WL end
";

/// The marks in the order the script prints them.
pub const MARKS: [&str; 5] = ["start", "cpu", "files", "forks", "end"];

/// The full line of a mark.
pub fn mark_line(mark: &str) -> String {
    format!("{MARK} {mark}")
}

/// The parts' times, from the stamped marks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    /// When the first line came, counted from the launch.
    pub first_output: Duration,
    pub cpu: Duration,
    pub files: Duration,
    pub forks: Duration,
}

/// Reads the stamped lines (`at` counted from the launch): every mark must
/// be there, in order.
pub fn timings(lines: &[(Duration, String)]) -> Result<Timings, String> {
    let mut at = Vec::with_capacity(MARKS.len());
    for mark in MARKS {
        let line = mark_line(mark);
        let found = lines
            .iter()
            .find(|(_, text)| text.trim() == line)
            .ok_or_else(|| format!("the workload never printed `{line}`"))?;
        at.push(found.0);
    }
    if at.windows(2).any(|pair| pair[1] < pair[0]) {
        return Err("the workload's marks came out of order".into());
    }
    Ok(Timings {
        first_output: at[0],
        cpu: at[2] - at[1],
        files: at[3] - at[2],
        forks: at[4] - at[3],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parts_are_the_gaps_between_marks() {
        let lines: Vec<(Duration, String)> = [
            (5, "booting"),
            (40, "DAMDA-WL start"),
            (41, "DAMDA-WL cpu"),
            (141, "DAMDA-WL files"),
            (171, "DAMDA-WL forks"),
            (471, "DAMDA-WL end\r"),
        ]
        .into_iter()
        .map(|(at, text)| (ms(at), text.to_owned()))
        .collect();
        assert_eq!(
            timings(&lines).unwrap(),
            Timings {
                first_output: ms(40),
                cpu: ms(100),
                files: ms(30),
                forks: ms(300),
            }
        );
    }

    #[test]
    fn a_missing_mark_is_named() {
        let lines = vec![(ms(1), "DAMDA-WL start".to_owned())];
        let err = timings(&lines).unwrap_err();
        assert!(err.contains("DAMDA-WL cpu"), "{err}");
    }

    #[test]
    fn the_script_prints_every_mark_in_order() {
        let positions: Vec<usize> = MARKS
            .iter()
            .map(|m| SCRIPT.find(&format!("echo {}\n", mark_line(m))).unwrap())
            .collect();
        assert!(positions.windows(2).all(|p| p[0] < p[1]));
    }
}

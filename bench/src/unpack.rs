//! Unpack throughput of damda's safe layer unpacker (openat2 per entry,
//! fd-relative creation) on generated layers held in memory, so the figure
//! is the unpacker and the disk, not the reading of the archive.

use damda::image::{unpack, UnpackOptions};
use std::path::Path;
use std::time::{Duration, Instant};

/// A layer tar of `files` files of `size` bytes, 256 to a directory.
fn layer(files: usize, size: usize) -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::with_capacity(files * (size + 1024)));
    let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    for i in 0..files {
        let mut header = tar::Header::new_gnu();
        header.set_size(size as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(
            &mut header,
            format!("d{:03}/f{i:06}", i / 256),
            data.as_slice(),
        )?;
    }
    Ok(builder.into_inner()?)
}

/// The median of `runs` unpacks of `tar` into fresh directories under `scratch`.
fn time(tar: &[u8], scratch: &Path, runs: usize) -> anyhow::Result<Duration> {
    let options = UnpackOptions {
        max_bytes: u64::MAX,
        max_entries: u64::MAX,
        owner_offset: 0,
    };
    let mut samples = Vec::new();
    for run in 0..runs {
        let target = scratch.join(format!("run{run}"));
        std::fs::create_dir(&target)?;
        let started = Instant::now();
        unpack(tar, &target, &options)?;
        samples.push(started.elapsed());
        std::fs::remove_dir_all(&target)?;
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

pub fn measure(data: &Path) -> anyhow::Result<()> {
    let scratch = data.join(format!("bench-unpack-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    println!(
        "== layer unpack (safe unpacker, into {}), median of 3",
        data.display()
    );
    let outcome = (|| -> anyhow::Result<()> {
        for (label, files, size) in [
            ("256 MiB in 4096 files of 64 KiB", 4096, 64 << 10),
            ("20000 files of 1 KiB", 20_000, 1 << 10),
        ] {
            let tar = layer(files, size)?;
            let took = time(&tar, &scratch, 3)?;
            let secs = took.as_secs_f64();
            println!(
                "{label:<34} {:>8.1} MB/s {:>9.0} files/s   ({:.0} ms)",
                (files * size) as f64 / 1e6 / secs,
                files as f64 / secs,
                secs * 1000.0
            );
        }
        Ok(())
    })();
    std::fs::remove_dir_all(&scratch)?;
    outcome
}

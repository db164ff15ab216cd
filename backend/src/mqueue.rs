//! POSIX message queues for the IPC demonstration, through libc directly:
//! mq_open is variadic, and nix 0.30 passes its mode and attributes wrongly
//! (seen as mode 000 and a garbage mq_attr under strace).

use nix::errno::Errno;
use std::ffi::CString;

fn c_name(name: &str) -> Result<CString, Errno> {
    CString::new(name).map_err(|_| Errno::EINVAL)
}

/// Creates an empty queue readable and writable by its owner. It is made as
/// small as the kernel allows (one 64-byte message): queues are charged to
/// the owner's RLIMIT_MSGQUEUE (800 KiB for root by default), and the default
/// size (10 × 8 KiB) would allow only about ten boxes.
pub fn create(name: &str) -> Result<(), Errno> {
    let name = c_name(name)?;
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDONLY | libc::O_CLOEXEC;
    // SAFETY: mq_attr is plain data; zero is valid for the unused fields.
    let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
    attr.mq_maxmsg = 1;
    attr.mq_msgsize = 64;
    // SAFETY: a valid C string and a valid mq_attr.
    let queue = unsafe { libc::mq_open(name.as_ptr(), flags, 0o600 as libc::mode_t, &mut attr) };
    if queue < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a descriptor mq_open just returned.
    unsafe { libc::mq_close(queue) };
    Ok(())
}

/// Whether the calling process's IPC namespace has the queue. A queue that
/// exists but may not be opened (EACCES, as for root in a user namespace)
/// still exists.
pub fn exists(name: &str) -> bool {
    let Ok(name) = c_name(name) else {
        return false;
    };
    // SAFETY: a valid C string; no O_CREAT, so no variadic arguments.
    let queue = unsafe { libc::mq_open(name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if queue < 0 {
        return Errno::last() != Errno::ENOENT;
    }
    // SAFETY: a descriptor mq_open just returned.
    unsafe { libc::mq_close(queue) };
    true
}

pub fn unlink(name: &str) -> Result<(), Errno> {
    let name = c_name(name)?;
    // SAFETY: a valid C string.
    if unsafe { libc::mq_unlink(name.as_ptr()) } < 0 {
        return Err(Errno::last());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_see_unlink() {
        let name = format!("/damda-test-{}", std::process::id());
        create(&name).unwrap();
        assert!(exists(&name));
        assert_eq!(create(&name), Err(Errno::EEXIST));
        unlink(&name).unwrap();
        assert!(!exists(&name));
        assert_eq!(unlink(&name), Err(Errno::ENOENT));
    }
}

//! `run`: the image's command (Entrypoint and Cmd) starts in the box, as
//! `docker run` starts it: busybox httpd for the default image, answering
//! through the forwarded port. The box's main process stays PID 1 and reaps
//! it, as `docker run --init` does.

use super::{BoxSpec, Phase, Step};
use crate::kernel::{Kernel, SysError};
use damda_protocol::{NsKind, StepId};
use nix::errno::Errno;

pub struct Run;

impl Step for Run {
    fn id(&self) -> StepId {
        StepId::Run
    }

    fn separates(&self) -> &'static [NsKind] {
        &[]
    }

    fn apply(&self, kernel: &dyn Kernel, spec: &BoxSpec, phase: Phase) -> Result<(), SysError> {
        if phase == Phase::Late {
            return Ok(());
        }
        if spec.command.is_empty() {
            return Err(SysError::new(
                "run: the image names no command",
                Errno::ENOEXEC,
            ));
        }
        kernel.spawn(&spec.command)
    }

    fn commands(&self, spec: &BoxSpec, pid: u32) -> Vec<String> {
        let command = spec.command.join(" ");
        let port = spec
            .network
            .as_ref()
            .map_or(8081, |network| network.host_port);
        let image = spec
            .overlay
            .as_ref()
            .map_or(crate::image::DEFAULT_IMAGE, |plan| plan.image.as_str());
        vec![
            format!("nsenter -t {pid} -a {command} &   # the image's CMD, in the box"),
            format!("docker run -d -p {port}:80 {image}   # Docker's way"),
            format!("curl http://127.0.0.1:{port}/   # through the proxy"),
            format!(
                "cat /proc/{pid}/task/{pid}/children   # the service, a child of the box's PID 1"
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{Call, RecordingKernel};

    #[test]
    fn starts_the_image_command() {
        let kernel = RecordingKernel::default();
        let mut spec = super::super::test_spec();
        assert_eq!(
            Run.apply(&kernel, &spec, Phase::Early).unwrap_err().errno,
            Errno::ENOEXEC as i32
        );
        spec.command = vec!["/bin/busybox".into(), "httpd".into(), "-f".into()];
        Run.apply(&kernel, &spec, Phase::Early).unwrap();
        assert_eq!(
            *kernel.calls.borrow(),
            vec![Call::Spawn(spec.command.clone())]
        );
    }
}

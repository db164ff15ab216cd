//! `run`: the image's command (Entrypoint and Cmd) starts in the box, as
//! `docker run` starts it: busybox httpd for the default image, answering
//! through the forwarded port. The box's main process stays PID 1 and reaps
//! it, as `docker run --init` does.

use super::{BoxSpec, Phase, Step};
use crate::kernel::{Kernel, SysError};
use damda_protocol::{shell_word, NsKind, StepId};
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
        let port = forwarded_port(spec);
        vec![
            format!("nsenter -t {pid} -a {command} &   # the image's CMD, in the box"),
            format!("{}   # Docker's way", docker_line(spec)),
            format!("curl http://127.0.0.1:{port}/   # through the proxy"),
            format!(
                "cat /proc/{pid}/task/{pid}/children   # the service, a child of the box's PID 1"
            ),
        ]
    }
}

/// The host port forwarded to the box (the first one before it has one).
fn forwarded_port(spec: &BoxSpec) -> u16 {
    spec.network
        .as_ref()
        .map_or(8081, |network| network.host_port)
}

/// The `docker run` that starts the box's image as this step does: its
/// port forwarded, its volumes bound.
pub fn docker_line(spec: &BoxSpec) -> String {
    let mut words = vec![
        "docker run -d".to_owned(),
        format!(
            "-p {}:{}",
            forwarded_port(spec),
            crate::network::nat::BOX_PORT
        ),
    ];
    let image = match &spec.overlay {
        Some(plan) => {
            words.extend(plan.volumes.iter().map(|v| {
                format!(
                    "-v {}",
                    shell_word(&format!("{}:{}", v.host.display(), v.target.display()))
                )
            }));
            plan.image.as_str()
        }
        None => crate::image::DEFAULT_IMAGE,
    };
    words.push(shell_word(image));
    words.join(" ")
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

    #[test]
    fn the_docker_line_forwards_the_port_and_binds_the_volumes() {
        let mut spec = super::super::test_spec();
        assert_eq!(
            docker_line(&spec),
            "docker run -d -p 8081:80 damda.local/busybox-httpd:latest"
        );
        spec.network = Some(crate::network::BoxNetwork::example());
        spec.network.as_mut().unwrap().host_port = 8083;
        spec.overlay = Some(super::super::OverlayPlan {
            image: "example.com/web:1".into(),
            lowers: Vec::new(),
            upper: "/b/upper".into(),
            work: "/b/work".into(),
            merged: "/b/merged".into(),
            volumes: vec!["/srv/my data:/data".parse().unwrap()],
        });
        assert_eq!(
            docker_line(&spec),
            "docker run -d -p 8083:80 -v '/srv/my data:/data' example.com/web:1"
        );
        assert!(Run
            .commands(&spec, 7)
            .join("\n")
            .contains(&docker_line(&spec)));
    }
}

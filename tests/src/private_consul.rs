//! A private `consul agent -dev` for tests that must stop or restart Consul (the shared agent of
//! [`crate::infra`] must never be touched). Free loopback ports are chosen once, so a restarted
//! agent answers on the same address; `-dev` keeps its data in memory, so a restart loses every
//! registration, as a real dev agent does. The process is killed on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use crate::{curl, poll_until, ChildGuard, HttpResponse, Infra};

/// A private Consul dev agent on 127.0.0.1.
pub struct PrivateConsul {
    binary: PathBuf,
    node: String,
    /// HTTP, serf LAN, serf WAN, server RPC, gRPC.
    ports: [u16; 5],
    log: PathBuf,
    child: Option<ChildGuard>,
    starts: u32,
}

fn free_ports<const N: usize>() -> [u16; N] {
    [(); N].map(|_| crate::free_port())
}

impl PrivateConsul {
    /// Starts an agent whose node is named `node`, logging to `<log_dir>/consul-<node>.log`, and
    /// waits (at most 30 s) until it has a leader.
    pub fn start(infra: &Infra, node: &str, log_dir: &std::path::Path) -> Result<PrivateConsul> {
        let mut consul = PrivateConsul {
            binary: infra.tool("consul")?,
            node: node.to_owned(),
            ports: free_ports::<5>(),
            log: log_dir.join(format!("consul-{node}.log")),
            child: None,
            starts: 0,
        };
        consul.restart()?;
        Ok(consul)
    }

    /// `127.0.0.1:<http port>`.
    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0])
    }

    /// Whether the agent process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the agent (no graceful leave: like a crash) and waits for it to exit.
    pub fn stop(&mut self) {
        self.child = None; // ChildGuard kills and reaps.
    }

    /// Starts the agent again (stopping it first if running) on the same ports and waits until
    /// it has a leader. Retries twice if it fails to come up (a port still held, for example).
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let mut last = None;
        for _ in 0..3 {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.stop();
                    last = Some(e);
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        Err(last.expect("three attempts"))
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let [http, serf_lan, serf_wan, server, grpc] = self.ports.map(|p| p.to_string());
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let child = Command::new(&self.binary)
            .args(["agent", "-dev", "-node", &self.node])
            .args([
                "-bind",
                "127.0.0.1",
                "-client",
                "127.0.0.1",
                "-advertise",
                "127.0.0.1",
            ])
            .args(["-http-port", &http, "-dns-port", "-1"])
            .args(["-serf-lan-port", &serf_lan, "-serf-wan-port", &serf_wan])
            .args([
                "-server-port",
                &server,
                "-grpc-port",
                &grpc,
                "-grpc-tls-port",
                "-1",
            ])
            .args(["-disable-host-node-id", "-log-level", "warn"])
            .args(["-hcl", "disable_update_check = true"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.child = Some(ChildGuard::new(format!("consul-{}", self.node), child));
        let url = format!("http://{}/v1/status/leader", self.http_addr());
        poll_until(
            "private Consul leader",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                if let Some(guard) = &mut self.child {
                    if let Some(status) = guard.child.try_wait()? {
                        bail!(
                            "consul exited with {status} (start #{}); log: {}",
                            self.starts,
                            self.log.display()
                        );
                    }
                }
                let r = curl("GET", &url, None, Duration::from_secs(2))?;
                Ok((r.status == 200 && r.body.trim().len() > 2).then_some(()))
            },
        )
    }

    /// An HTTP request to this agent (`path` starts with `/v1/`).
    pub fn http(&self, method: &str, path: &str, body: Option<&str>) -> Result<HttpResponse> {
        let url = format!("http://{}{path}", self.http_addr());
        curl(method, &url, body, Duration::from_secs(10))
    }
}

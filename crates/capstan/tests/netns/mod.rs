//! Network namespaces for capture tests that keep their clients, servers and relays in the
//! test process: a thread entered into a namespace (`setns(CLONE_NEWNET)`) opens a socket
//! there, and the socket keeps that namespace when tokio drives it from any other thread. So a
//! hyper client "in" a pod is captured by the pod's iptables like any application, a backend
//! listens on the pod's address, and a relay lets a pod reach a control plane that listens on
//! the host's 127.0.0.1 without anything binding outside loopback.
//!
//! Needs root, `ip`, `iptables` and `setpriv` (see `usable`).

#![allow(dead_code)]

use anyhow::{ensure, Context, Result};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The UID Istio's capture leaves alone: the sidecar's own connections.
pub const PROXY_UID: &str = "1337";

/// Runs `args`, requiring success; returns stdout.
pub fn sh(args: &[&str]) -> Result<String> {
    run(Command::new(args[0]).args(&args[1..]))
}

/// Runs `cmd` (stdin closed), requiring success; returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `None` when this machine can run the tests (root, `ip`, `iptables`, `iptables-restore`,
/// `setpriv`), else what is missing.
pub fn usable() -> Option<&'static str> {
    usable_with(&[])
}

/// [`usable`], and the `tools` a test needs besides.
pub fn usable_with(tools: &[&'static str]) -> Option<&'static str> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root");
    }
    let base = ["ip", "iptables", "iptables-restore", "setpriv"];
    for tool in base.iter().chain(tools) {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            return Some(tool);
        }
    }
    None
}

/// Runs `f` on a new thread that has entered the namespace `name` (`setns(CLONE_NEWNET)`).
fn in_namespace<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let path = Path::new("/run/netns").join(name);
    std::thread::spawn(move || {
        let file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: a valid namespace file descriptor; only this thread changes namespace, and
        // the thread is never reused: it ends with `f`.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        ensure!(
            rc == 0,
            "setns {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the thread in namespace {name} panicked"))?
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `name` (replacing a leftover of that name) with `lo` up.
    pub fn create(name: &str) -> Result<Netns> {
        let _ = Command::new("ip").args(["netns", "del", name]).output();
        sh(&["ip", "netns", "add", name])?;
        let ns = Netns {
            name: name.to_string(),
        };
        ns.ip("link set lo up")?;
        Ok(ns)
    }

    /// `ip -n NAME <cmd>` (words split on spaces).
    pub fn ip(&self, cmd: &str) -> Result<String> {
        let mut args = vec!["ip", "-n", &self.name];
        args.extend(cmd.split(' '));
        sh(&args)
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// `program` run inside the namespace as `uid` (group too, no supplementary groups).
    pub fn as_uid(&self, uid: &str, program: &str) -> Command {
        let mut c = self.command("setpriv");
        c.args(["--reuid", uid, "--regid", uid, "--clear-groups", program]);
        c
    }

    /// `program` run inside the namespace as the proxy's UID, which the capture leaves alone.
    pub fn as_proxy(&self, program: &str) -> Command {
        self.as_uid(PROXY_UID, program)
    }

    /// `iptables <rule>` inside the namespace (words split on spaces).
    pub fn iptables(&self, rule: &str) -> Result<String> {
        let mut args = vec!["ip", "netns", "exec", &self.name, "iptables"];
        args.extend(rule.split(' '));
        sh(&args)
    }

    /// The namespace's `/etc/hosts`: `ip netns exec` bind-mounts `/etc/netns/NAME/hosts` over
    /// it, so this is the pod's DNS for programs run with [`Netns::command`].
    pub fn hosts(&self, entries: &str) -> Result<()> {
        let etc = Path::new("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&etc)?;
        std::fs::write(etc.join("hosts"), format!("127.0.0.1 localhost\n{entries}"))?;
        Ok(())
    }

    /// Runs `f` on a new thread that has entered this namespace; the sockets it opens stay
    /// in the namespace after the thread ends.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        in_namespace(&self.name, f)
    }

    /// A tokio listener bound to `addr` inside the namespace.
    pub fn listen(&self, addr: SocketAddr) -> Result<tokio::net::TcpListener> {
        let std = self.run(move || {
            let l = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        Ok(tokio::net::TcpListener::from_std(std)?)
    }

    /// A tokio stream connected from inside the namespace to `addr` (as an application of
    /// the pod connects: the pod's capture applies), within `within`.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        within: Duration,
    ) -> Result<tokio::net::TcpStream> {
        let name = self.name.clone();
        let std = tokio::task::spawn_blocking(move || {
            in_namespace(&name, move || {
                let s = std::net::TcpStream::connect_timeout(&addr, within)
                    .with_context(|| format!("connecting to {addr}"))?;
                s.set_nonblocking(true)?;
                Ok(s)
            })
        })
        .await??;
        Ok(tokio::net::TcpStream::from_std(std)?)
    }

    /// Forwards every connection to `listen` inside the namespace to `target` on the host's
    /// loopback, until the returned task is aborted.
    pub fn relay(
        &self,
        listen: SocketAddr,
        target: SocketAddr,
    ) -> Result<tokio::task::JoinHandle<()>> {
        let listener = self.listen(listen)?;
        Ok(tokio::spawn(async move {
            while let Ok((mut inside, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outside) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inside, &mut outside).await;
                    }
                });
            }
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

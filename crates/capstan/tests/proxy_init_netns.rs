//! `capstan proxy-init` for real, in a fresh network namespace: the rules `iptables-save`
//! shows are the ones Istio's `istio-iptables` installs; a connection from an application UID
//! to an outside address lands on the 15001 listener (with its original destination) while the
//! proxy's UID 1337 reaches the address itself; inbound connections land on 15006 except on the
//! sidecar's excluded ports; loopback is left alone; a second run leaves one copy of each rule.
//!
//! Topology: a "pod" namespace (10.0.2.2) joined by a veth pair to a "peer" namespace
//! (10.0.2.3). Needs root, `ip`, `iptables`, `iptables-save`, `iptables-restore`, `setpriv`,
//! `python3` and `bash`; without them the test says SKIPPED loudly and passes.

mod netns;

use anyhow::{ensure, Context, Result};
use capstan_inject::CaptureOptions;
use netns::{run, usable_with, Netns, PROXY_UID};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const POD_IP: &str = "10.0.2.2";
const PEER_IP: &str = "10.0.2.3";
const APP_UID: &str = "1000";

/// The `nat` table's rules in `ns`, as `iptables-save` lists them.
fn nat_rules(ns: &Netns) -> Result<Vec<String>> {
    let save = run(ns.command("iptables-save").args(["-t", "nat"]))?;
    Ok(save
        .lines()
        .filter(|l| l.starts_with("-A "))
        .map(str::to_string)
        .collect())
}

/// A child killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Listeners `PORT=LABEL` on `BIND`: each connection gets `LABEL <original destination>`
/// (from `SO_ORIGINAL_DST`, `-` when the connection was not redirected) and is closed. Writes
/// the ready file once every port is bound.
const SERVERS: &str = r#"
import socket, struct, sys, threading
bind, ready = sys.argv[1], sys.argv[2]
def serve(s, label):
    while True:
        c, _ = s.accept()
        try:
            d = c.getsockopt(socket.SOL_IP, 80, 16)
            orig = "%s:%d" % (socket.inet_ntoa(d[4:8]), struct.unpack("!H", d[2:4])[0])
        except OSError:
            orig = "-"
        c.sendall(("%s %s\n" % (label, orig)).encode())
        c.close()
for spec in sys.argv[3:]:
    port, label = spec.split("=")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((bind, int(port)))
    s.listen(16)
    threading.Thread(target=serve, args=(s, label), daemon=True).start()
open(ready, "w").write("ok")
threading.Event().wait()
"#;

fn servers(ns: &Netns, dir: &Path, name: &str, bind: &str, specs: &[&str]) -> Result<Guard> {
    let ready = dir.join(format!("{name}.ready"));
    let child = ns
        .command("python3")
        .args(["-c", SERVERS, bind])
        .arg(&ready)
        .args(specs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log")))?)
        .spawn()
        .context("starting the listeners")?;
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.exists() {
        ensure!(
            Instant::now() < deadline,
            "{name} listeners not ready: {}",
            std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(guard)
}

/// What a TCP client (bash's /dev/tcp, readable by any UID) reads from HOST:PORT.
fn call(mut cmd: Command, host: &str, port: u16) -> Result<String> {
    let script = format!("exec 3<>/dev/tcp/{host}/{port}; head -n1 <&3");
    let out = run(cmd.args(["timeout", "5", "bash", "-c", &script]))?;
    Ok(out.trim().to_string())
}

fn proxy_init(ns: &Netns, extra: &[&str]) -> Result<String> {
    run(ns
        .command(env!("CARGO_BIN_EXE_capstan"))
        .arg("proxy-init")
        .args([
            "-p",
            "15001",
            "-z",
            "15006",
            "-u",
            PROXY_UID,
            "-m",
            "REDIRECT",
            "-i",
            "*",
            "-x",
            "",
            "-b",
            "*",
            "-d",
            "15090,15021,15020",
        ])
        .args(extra))
}

fn scratch() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("capstan-proxy-init-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[test]
fn proxy_init_captures_like_istio_iptables() -> Result<()> {
    if let Some(missing) = usable_with(&["iptables-save", "python3", "bash", "timeout"]) {
        eprintln!("\n**** SKIPPED proxy_init_captures_like_istio_iptables: {missing} ****\n");
        return Ok(());
    }
    let dir = scratch()?;
    let pid = std::process::id();
    let pod = Netns::create(&format!("capstan-pi{pid}"))?;
    let peer = Netns::create(&format!("capstan-pp{pid}"))?;
    pod.ip("link add v0 type veth peer name v1")?;
    pod.ip(&format!("link set v1 netns {}", peer.name))?;
    pod.ip(&format!("addr add {POD_IP}/24 dev v0"))?;
    pod.ip("link set v0 up")?;
    peer.ip(&format!("addr add {PEER_IP}/24 dev v1"))?;
    peer.ip("link set v1 up")?;

    // --dry-run prints what would be applied, and applies nothing.
    let dry = proxy_init(&pod, &["--dry-run"])?;
    ensure!(dry == CaptureOptions::default().restore_input(""), "{dry}");
    ensure!(nat_rules(&pod)?.is_empty(), "dry run changed the nat table");

    proxy_init(&pod, &[])?;
    // Every rule Istio's istio-iptables appends is there (`-C` matches whatever order
    // iptables-save prints the matches in).
    let want = CaptureOptions::default().rules();
    for rule in &want {
        let mut check = pod.command("iptables");
        check.args(["-t", "nat", "-C", rule.chain]);
        check.args(rule.spec.split(' '));
        run(&mut check).with_context(|| format!("rule missing: {rule}"))?;
    }
    let first = nat_rules(&pod)?;
    ensure!(
        first.len() == want.len(),
        "{} rules installed, {} expected:\n{}",
        first.len(),
        want.len(),
        first.join("\n")
    );

    // Again: the same table, not two copies.
    proxy_init(&pod, &[])?;
    let second = nat_rules(&pod)?;
    ensure!(
        second == first,
        "second run changed the rules:\n{}\nvs\n{}",
        second.join("\n"),
        first.join("\n")
    );
    for jump in [
        "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
    ] {
        ensure!(
            second.iter().filter(|r| *r == jump).count() == 1,
            "{jump} not exactly once"
        );
    }

    // Traffic. In the pod: the capture listeners and the excluded health port; in the peer:
    // the outside service and a client.
    let _pod_listeners = servers(
        &pod,
        &dir,
        "pod",
        "0.0.0.0",
        &["15001=outbound", "15006=inbound", "15021=health"],
    )?;
    let _peer_listeners = servers(&peer, &dir, "peer", PEER_IP, &["8080=direct"])?;

    // An application UID calling outside: redirected to 15001, original destination intact.
    let got = call(pod.as_uid(APP_UID, "env"), PEER_IP, 8080)?;
    ensure!(
        got == format!("outbound {PEER_IP}:8080"),
        "application call: {got:?}"
    );
    // The proxy's UID: not captured, reaches the peer.
    let got = call(pod.as_uid(PROXY_UID, "env"), PEER_IP, 8080)?;
    ensure!(got.starts_with("direct"), "proxy call: {got:?}");
    // Loopback from the application: not captured.
    let got = call(pod.as_uid(APP_UID, "env"), "127.0.0.1", 15021)?;
    ensure!(got.starts_with("health"), "loopback call: {got:?}");
    // Inbound from the peer: to 15006, except the sidecar's own ports.
    let got = call(peer.command("env"), POD_IP, 9080)?;
    ensure!(
        got == format!("inbound {POD_IP}:9080"),
        "inbound call: {got:?}"
    );
    let got = call(peer.command("env"), POD_IP, 15021)?;
    ensure!(got.starts_with("health"), "excluded inbound port: {got:?}");

    drop(peer);
    drop(pod);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

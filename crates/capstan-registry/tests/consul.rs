//! The Consul registry against a real Consul agent: the shared dev agent of the e2e infra (each
//! test filters on its own service-name prefix) and, for restarts and request counting, a private
//! dev agent.

use anyhow::{bail, ensure, Context as _, Result};
use capstan_e2e::private_consul::PrivateConsul;
use capstan_e2e::{context, poll_until, HttpResponse};
use capstan_registry::consul::{ConsulConfig, ConsulRegistry, ConsulStatus};
use capstan_registry::{Health, IndexSnapshot, RegistryEvent, ServiceIndex};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Time to let stray events arrive before asserting the exact list.
const SETTLE: Duration = Duration::from_millis(1500);

/// A running adapter with its own runtime and index.
struct Adapter {
    index: Arc<ServiceIndex>,
    events: broadcast::Receiver<Arc<Vec<RegistryEvent>>>,
    status: ConsulStatus,
    domain: String,
    rt: Option<tokio::runtime::Runtime>,
}

impl Adapter {
    fn start(address: &str, prefix: &str, wait: Duration) -> Result<Adapter> {
        let config = ConsulConfig {
            address: address.to_string(),
            service_prefix: prefix.to_string(),
            wait,
            backoff_max: Duration::from_secs(1),
            ..ConsulConfig::default()
        };
        let domain = config.domain.clone();
        let registry = ConsulRegistry::new(config)?;
        let mut status = registry.status();
        let index = Arc::new(ServiceIndex::new());
        let events = index.subscribe();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        rt.spawn(registry.run(index.clone()));
        let synced = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(30), status.wait_synced()).await
        });
        ensure!(synced == Ok(true), "adapter did not sync within 30 s");
        Ok(Adapter {
            index,
            events,
            status,
            domain,
            rt: Some(rt),
        })
    }

    fn host(&self, service: &str) -> String {
        format!("{service}.{}", self.domain)
    }

    fn drain(&mut self) -> Vec<RegistryEvent> {
        let mut out = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(batch) => out.extend(batch.iter().cloned()),
                Err(broadcast::error::TryRecvError::Empty) => return out,
                Err(e) => panic!("event stream: {e}"),
            }
        }
    }

    fn wait(&self, what: &str, cond: impl Fn(&IndexSnapshot) -> bool) -> Result<()> {
        poll_until(
            what,
            Duration::from_secs(20),
            Duration::from_millis(50),
            || Ok(cond(&self.index.snapshot()).then_some(())),
        )
    }

    /// Waits for `cond`, lets stray events arrive, and returns every event since the last call.
    fn events_until(
        &mut self,
        what: &str,
        cond: impl Fn(&IndexSnapshot) -> bool,
    ) -> Result<Vec<RegistryEvent>> {
        self.wait(what, cond)?;
        std::thread::sleep(SETTLE);
        Ok(self.drain())
    }
}

impl Drop for Adapter {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn ok(r: Result<HttpResponse>, what: &str) -> Result<()> {
    let r = r.with_context(|| what.to_string())?;
    if r.status != 200 {
        bail!("{what}: HTTP {} {}", r.status, r.body);
    }
    Ok(())
}

fn endpoints(s: &IndexSnapshot, host: &str, port: u16) -> Vec<(String, Health, Option<String>)> {
    s.endpoint_set(host, port)
        .map(|e| {
            e.iter()
                .map(|e| {
                    (
                        e.address.clone(),
                        e.health,
                        e.meta.labels.get("version").cloned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn instance(name: &str, id: &str, address: &str, port: u16, version: &str) -> Value {
    json!({"ID": id, "Name": name, "Address": address, "Port": port, "Meta": {"version": version}})
}

use RegistryEvent::*;

#[test]
fn services_and_instances_come_and_go_with_exact_events() -> Result<()> {
    let Some(ctx) = context("consul_adapter_events")? else {
        return Ok(());
    };
    let consul =
        |m: &str, p: &str, b: Option<&str>| ctx.infra.consul_http(m, p, b, Duration::from_secs(10));
    let register = |v: Value| {
        ok(
            consul("PUT", "/v1/agent/service/register", Some(&v.to_string())),
            "register",
        )
    };
    let deregister = |id: &str| {
        ok(
            consul("PUT", &format!("/v1/agent/service/deregister/{id}"), None),
            "deregister",
        )
    };
    let (web, db) = (ctx.consul_service("web"), ctx.consul_service("db"));
    let (w1, w2, d1) = (format!("{web}-1"), format!("{web}-2"), format!("{db}-1"));
    register(instance(&web, &w1, "127.0.0.2", 8080, "v1"))?;

    let mut a = Adapter::start(
        ctx.infra.consul_addr()?,
        &ctx.consul_prefix,
        Duration::from_secs(10),
    )?;
    let (wh, dh) = (a.host(&web), a.host(&db));
    let s = a.index.snapshot();
    assert_eq!(s.service_count(), 1, "only this test's services");
    let svc = s.service(&wh).context("web synced")?;
    assert_eq!(
        (svc.ports[0].name.as_str(), svc.ports[0].port),
        ("tcp", 8080)
    );
    assert_eq!(
        a.drain(),
        vec![
            ServiceAdded(wh.clone()),
            EndpointsChanged(wh.clone(), 8080),
            WorkloadChanged("127.0.0.2".into())
        ]
    );

    register(instance(&web, &w2, "127.0.0.3", 8080, "v1"))?;
    let ev = a.events_until("second web instance", |s| {
        endpoints(s, &wh, 8080).len() == 2
    })?;
    assert_eq!(
        ev,
        vec![
            EndpointsChanged(wh.clone(), 8080),
            WorkloadChanged("127.0.0.3".into())
        ]
    );

    let mut d = instance(&db, &d1, "127.0.0.4", 5432, "v1");
    d["Meta"]["protocol"] = json!("mysql");
    register(d)?;
    let ev = a.events_until("db", |s| s.service(&dh).is_some())?;
    assert_eq!(
        ev,
        vec![
            ServiceAdded(dh.clone()),
            EndpointsChanged(dh.clone(), 5432),
            WorkloadChanged("127.0.0.4".into())
        ]
    );
    assert_eq!(
        a.index.snapshot().service(&dh).unwrap().ports[0].protocol,
        capstan_registry::Protocol::Mysql
    );

    // Identical re-registration: Consul's index moves, the merged view does not.
    let version = a.index.snapshot().version;
    register(instance(&web, &w1, "127.0.0.2", 8080, "v1"))?;
    std::thread::sleep(SETTLE);
    assert_eq!(a.drain(), vec![], "identical re-registration emits nothing");
    assert_eq!(a.index.snapshot().version, version);

    // A meta (label) change touches the endpoints and the workload, never the service.
    register(instance(&web, &w1, "127.0.0.2", 8080, "v2"))?;
    let ev = a.events_until("version v2", |s| {
        endpoints(s, &wh, 8080)
            .iter()
            .any(|e| e.2.as_deref() == Some("v2"))
    })?;
    assert_eq!(
        ev,
        vec![
            EndpointsChanged(wh.clone(), 8080),
            WorkloadChanged("127.0.0.2".into())
        ]
    );

    deregister(&w2)?;
    let ev = a.events_until("w2 gone", |s| endpoints(s, &wh, 8080).len() == 1)?;
    assert_eq!(
        ev,
        vec![
            EndpointsChanged(wh.clone(), 8080),
            WorkloadChanged("127.0.0.3".into())
        ]
    );

    deregister(&d1)?;
    let ev = a.events_until("db gone", |s| s.service(&dh).is_none())?;
    assert_eq!(
        ev,
        vec![
            ServiceRemoved(dh.clone()),
            EndpointsChanged(dh.clone(), 5432),
            WorkloadChanged("127.0.0.4".into())
        ]
    );

    let s = a.index.snapshot();
    assert_eq!(s.service_count(), 1);
    assert_eq!(
        endpoints(&s, &wh, 8080),
        vec![("127.0.0.2".into(), Health::Healthy, Some("v2".into()))]
    );
    assert!(s.workload_by_ip("127.0.0.3").is_none() && s.workload_by_ip("127.0.0.4").is_none());
    assert_eq!(
        s.workload_by_ip("127.0.0.2").unwrap().labels["version"],
        "v2"
    );
    Ok(())
}

#[test]
fn failing_check_makes_the_endpoint_unhealthy_and_back() -> Result<()> {
    let Some(ctx) = context("consul_adapter_health")? else {
        return Ok(());
    };
    let consul = |m: &str, p: &str| ctx.infra.consul_http(m, p, None, Duration::from_secs(10));
    let web = ctx.consul_service("web");
    let id = format!("{web}-1");
    let check = format!("{id}-ttl");
    let mut body = instance(&web, &id, "127.0.0.2", 9080, "v1");
    body["Check"] = json!({"CheckID": check, "TTL": "600s", "Status": "passing"});
    ok(
        ctx.infra.consul_http(
            "PUT",
            "/v1/agent/service/register",
            Some(&body.to_string()),
            Duration::from_secs(10),
        ),
        "register",
    )?;
    let mut a = Adapter::start(
        ctx.infra.consul_addr()?,
        &ctx.consul_prefix,
        Duration::from_secs(10),
    )?;
    let wh = a.host(&web);
    assert_eq!(
        endpoints(&a.index.snapshot(), &wh, 9080)[0].1,
        Health::Healthy
    );
    a.drain();

    ok(
        consul("PUT", &format!("/v1/agent/check/fail/{check}")),
        "fail check",
    )?;
    let ev = a.events_until("unhealthy", |s| {
        endpoints(s, &wh, 9080)[0].1 == Health::Unhealthy
    })?;
    assert_eq!(
        ev,
        vec![EndpointsChanged(wh.clone(), 9080)],
        "health is not a workload property"
    );

    ok(
        consul("PUT", &format!("/v1/agent/check/pass/{check}")),
        "pass check",
    )?;
    let ev = a.events_until("healthy", |s| {
        endpoints(s, &wh, 9080)[0].1 == Health::Healthy
    })?;
    assert_eq!(ev, vec![EndpointsChanged(wh.clone(), 9080)]);
    Ok(())
}

#[test]
fn tagged_addresses_give_one_workload_several_addresses() -> Result<()> {
    let Some(ctx) = context("consul_adapter_tagged")? else {
        return Ok(());
    };
    let web = ctx.consul_service("web");
    let mut body = instance(&web, &format!("{web}-1"), "127.0.0.5", 80, "v1");
    body["TaggedAddresses"] = json!({"wan_ipv4": {"Address": "127.0.0.6", "Port": 80}});
    ok(
        ctx.infra.consul_http(
            "PUT",
            "/v1/agent/service/register",
            Some(&body.to_string()),
            Duration::from_secs(10),
        ),
        "register",
    )?;
    let mut a = Adapter::start(
        ctx.infra.consul_addr()?,
        &ctx.consul_prefix,
        Duration::from_secs(10),
    )?;
    let wh = a.host(&web);
    let s = a.index.snapshot();
    let w5 = s
        .workload_by_ip("127.0.0.5")
        .context("workload at the service address")?;
    let w6 = s
        .workload_by_ip("127.0.0.6")
        .context("workload at the tagged address")?;
    assert_eq!(w5, w6);
    assert_eq!(w5.addresses, vec!["127.0.0.5", "127.0.0.6"]);
    assert_eq!(
        endpoints(&s, &wh, 80).len(),
        1,
        "one endpoint, at the service address"
    );
    assert_eq!(
        a.drain(),
        vec![
            ServiceAdded(wh.clone()),
            EndpointsChanged(wh, 80),
            WorkloadChanged("127.0.0.5".into()),
            WorkloadChanged("127.0.0.6".into())
        ]
    );
    Ok(())
}

/// A loopback TCP forwarder that can be closed (refusing and cutting connections), so a test
/// decides when the adapter sees the restarted agent.
struct Gate {
    addr: String,
    open: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Gate {
    fn new(upstream: String) -> Result<Gate> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<std::sync::Mutex<Vec<TcpStream>>> = Arc::default();
        let (o, c) = (open.clone(), conns.clone());
        // The thread ends with the test process; it holds no resources beyond its sockets.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !o.load(Ordering::SeqCst) {
                    continue; // dropped: the adapter sees a reset/EOF
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut list = c.lock().unwrap();
                list.extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                drop(list);
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Ok(Gate { addr, open, conns })
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        if !open {
            for s in self.conns.lock().unwrap().drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }
}

#[test]
fn agent_restart_keeps_state_while_down_and_converges() -> Result<()> {
    let Some(ctx) = context("consul_adapter_restart")? else {
        return Ok(());
    };
    let mut agent = PrivateConsul::start(ctx.infra, "capstan-restart", &ctx.scratch)?;
    let register = |agent: &PrivateConsul, v: Value| {
        ok(
            agent.http("PUT", "/v1/agent/service/register", Some(&v.to_string())),
            "register",
        )
    };
    register(&agent, instance("svc-a", "a1", "127.0.0.2", 80, "v1"))?;
    register(&agent, instance("svc-b", "b1", "127.0.0.3", 81, "v1"))?;
    let gate = Gate::new(agent.http_addr())?;
    let mut a = Adapter::start(&gate.addr, "svc-", Duration::from_secs(10))?;
    let (ah, bh) = (a.host("svc-a"), a.host("svc-b"));
    assert_eq!(a.index.snapshot().service_count(), 2);
    a.drain();
    let before = a.index.snapshot();

    // Down: the index keeps everything, and the adapter backs off instead of spinning.
    agent.stop();
    gate.set_open(false);
    let r0 = a.status.requests();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let down_requests = a.status.requests() - r0;
    println!(
        "agent down: {down_requests} requests in {:?} (3 watchers, backoff 100 ms..1 s)",
        t0.elapsed()
    );
    assert_eq!(
        a.drain(),
        vec![],
        "nothing is removed while the agent is down"
    );
    assert_eq!(a.index.snapshot().version, before.version);
    assert!(
        down_requests <= 3 * 12,
        "backoff bounds retries: {down_requests}"
    );

    // Back, with its in-memory catalog lost; svc-a is re-registered identically, svc-b is not.
    agent.restart()?;
    register(&agent, instance("svc-a", "a1", "127.0.0.2", 80, "v1"))?;
    gate.set_open(true);
    let ev = a.events_until("svc-b removed", |s| s.service(&bh).is_none())?;
    assert_eq!(
        ev,
        vec![
            ServiceRemoved(bh.clone()),
            EndpointsChanged(bh, 81),
            WorkloadChanged("127.0.0.3".into())
        ],
        "svc-a unchanged: no event"
    );
    let s = a.index.snapshot();
    assert_eq!(s.service(&ah), before.service(&ah));
    assert_eq!(endpoints(&s, &ah, 80), endpoints(&before, &ah, 80));

    // And the adapter follows the new agent.
    register(&agent, instance("svc-c", "c1", "127.0.0.4", 82, "v1"))?;
    let ch = a.host("svc-c");
    let ev = a.events_until("svc-c", |s| s.service(&ch).is_some())?;
    assert_eq!(ev.len(), 3, "{ev:?}");
    Ok(())
}

#[test]
fn quiet_catalog_means_almost_no_requests() -> Result<()> {
    let Some(ctx) = context("consul_adapter_quiet")? else {
        return Ok(());
    };
    let agent = PrivateConsul::start(ctx.infra, "capstan-quiet", &ctx.scratch)?;
    for (i, name) in ["svc-a", "svc-b", "svc-c"].iter().enumerate() {
        let v = instance(name, &format!("{name}-1"), "127.0.0.2", 80 + i as u16, "v1");
        ok(
            agent.http("PUT", "/v1/agent/service/register", Some(&v.to_string())),
            "register",
        )?;
    }
    let a = Adapter::start(&agent.http_addr(), "svc-", Duration::from_secs(10))?;
    assert_eq!(a.index.snapshot().service_count(), 3);
    std::thread::sleep(Duration::from_millis(500));
    let r0 = a.status.requests();
    std::thread::sleep(Duration::from_secs(3));
    let quiet = a.status.requests() - r0;
    println!("quiet: {quiet} requests in 3 s with 3 services (sync took {r0} requests)");
    // Each watcher (catalog + 3 services) holds one blocking query of up to 10 s.
    assert!(
        quiet <= 3 + 1 + 2,
        "busy polling: {quiet} requests in 3 quiet seconds"
    );
    Ok(())
}

/// A stand-in for a Consul agent gone wrong: valid answers until `broken` is set, then `200 OK`
/// bodies that are not JSON (with a moving index). Blocking queries are held 200 ms.
fn fake_consul(broken: Arc<AtomicBool>) -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    let health = json!([{
        "Node": {"Node": "n1", "Address": "127.0.0.1", "Datacenter": "dc1"},
        "Service": {"ID": "a1", "Service": "svc-a", "Address": "127.0.0.2", "Port": 80},
        "Checks": [],
    }])
    .to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (broken, health) = (broken.clone(), health.clone());
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head);
                if head.contains("index=") {
                    std::thread::sleep(Duration::from_millis(200));
                }
                let (index, body) = if broken.load(Ordering::SeqCst) {
                    (7 + next_fake_index(), "{not json".to_string())
                } else if head.starts_with("GET /v1/catalog/services") {
                    (5, json!({"svc-a": []}).to_string())
                } else {
                    (5, health)
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: {index}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    Ok(addr)
}

/// A different index each call, so the adapter sees "changed" answers.
fn next_fake_index() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[test]
fn malformed_responses_keep_the_last_state() -> Result<()> {
    // No shared infra needed: the point is what a broken agent answers.
    let broken = Arc::new(AtomicBool::new(false));
    let addr = fake_consul(broken.clone())?;
    let mut a = Adapter::start(&addr, "svc-", Duration::from_secs(10))?;
    let ah = a.host("svc-a");
    assert_eq!(endpoints(&a.index.snapshot(), &ah, 80).len(), 1);
    a.drain();
    let version = a.index.snapshot().version;

    broken.store(true, Ordering::SeqCst);
    let r0 = a.status.requests();
    std::thread::sleep(Duration::from_secs(3));
    let bad = a.status.requests() - r0;
    println!("malformed answers: {bad} requests in 3 s (2 watchers, backoff 100 ms..1 s)");
    assert_eq!(a.drain(), vec![], "a malformed answer changes nothing");
    assert_eq!(a.index.snapshot().version, version);
    assert!(
        bad <= 2 * 12,
        "backoff bounds retries on malformed answers: {bad}"
    );

    broken.store(false, Ordering::SeqCst);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(a.drain(), vec![], "same data after recovery: no event");
    assert_eq!(endpoints(&a.index.snapshot(), &ah, 80).len(), 1);
    Ok(())
}

//! Smoke test: register a service in the Consul dev agent over its HTTP API and observe a
//! change through a blocking query.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use capstan_e2e::{context, TestContext};
use serde_json::json;

fn register(ctx: &TestContext, name: &str, id: &str, port: u16) -> Result<()> {
    let body = json!({
        "ID": id, "Name": name, "Address": "127.0.0.1", "Port": port,
        "Tags": ["e2e"], "Meta": {"version": "v1"},
    });
    let r = ctx.infra.consul_http(
        "PUT",
        "/v1/agent/service/register",
        Some(&body.to_string()),
        Duration::from_secs(10),
    )?;
    if r.status != 200 {
        bail!("register {id}: HTTP {} {}", r.status, r.body);
    }
    Ok(())
}

#[test]
fn register_and_blocking_query() -> Result<()> {
    let Some(ctx) = context("consul")? else {
        return Ok(());
    };
    let name = ctx.consul_service("web");
    register(&ctx, &name, &format!("{name}-1"), 8080)?;

    let path = format!("/v1/health/service/{name}");
    let first = ctx
        .infra
        .consul_http("GET", &path, None, Duration::from_secs(10))?;
    assert_eq!(first.status, 200, "{}", first.body);
    let entries = first.json()?;
    assert_eq!(entries.as_array().map(Vec::len), Some(1), "{entries}");
    assert_eq!(entries[0]["Service"]["Port"], 8080);
    let index: u64 = first
        .header("x-consul-index")
        .context("no X-Consul-Index header")?
        .parse()?;

    // A blocking query with the current index returns only when the data changes.
    let blocking = {
        let infra = ctx.infra;
        let path = format!("{path}?index={index}&wait=5s");
        thread::spawn(move || {
            let t0 = Instant::now();
            let r = infra.consul_http("GET", &path, None, Duration::from_secs(15));
            (t0.elapsed(), r)
        })
    };
    thread::sleep(Duration::from_millis(700));
    register(&ctx, &name, &format!("{name}-2"), 8081)?;

    let (elapsed, resp) = blocking.join().expect("blocking query thread");
    let resp = resp?;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let new_index: u64 = resp.header("x-consul-index").context("no index")?.parse()?;
    assert!(new_index > index, "index {index} -> {new_index}");
    let mut ports: Vec<u64> = resp
        .json()?
        .as_array()
        .context("array")?
        .iter()
        .filter_map(|e| e["Service"]["Port"].as_u64())
        .collect();
    ports.sort_unstable();
    assert_eq!(ports, vec![8080, 8081]);
    assert!(
        elapsed >= Duration::from_millis(500),
        "query returned before the change: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(4500),
        "query waited for its timeout instead of the change: {elapsed:?}"
    );
    Ok(())
}

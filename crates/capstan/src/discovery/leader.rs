//! Leader election on a `coordination.k8s.io` Lease, as istiod elects the replica that does
//! cluster-wide writes (its `leaderelection` package): every replica serves xDS, only the
//! holder of the Lease publishes `istio-ca-root-cert` and patches the webhook CA bundle, so
//! replicas do not fight over the same objects.
//!
//! The holder renews the Lease every `--leader-renew-period`; another replica takes it once it
//! has not been renewed for its `leaseDurationSeconds`. A holder that cannot renew for that
//! long stops its leader-only work before anyone else may start theirs. Writes are
//! compare-and-swap on the Lease's resourceVersion: two candidates never both win.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Leader-election flags.
#[derive(clap::Args, Debug, Clone)]
pub struct LeaderArgs {
    /// Elect a leader among replicas (with `--kubeconfig` or in cluster); `false`: this process
    /// always does the leader-only work.
    #[arg(long = "leader-election", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// Name of the Lease (in `--system-namespace`) the replicas elect a leader on.
    #[arg(long = "leader-lease-name", default_value = "capstan-discovery-leader")]
    pub lease_name: String,
    /// How long a Lease not renewed stays held (client-go's default 15s).
    #[arg(long = "leader-lease-duration", default_value = "15s", value_parser = super::ca::parse_duration)]
    pub lease_duration: Duration,
    /// How often the leader renews, and candidates retry (client-go's retry period 2s).
    #[arg(long = "leader-renew-period", default_value = "2s", value_parser = super::ca::parse_duration)]
    pub renew_period: Duration,
}

/// What a candidate does about the Lease it read.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Free, expired or already ours: write ourselves in.
    Take,
    /// Held by another replica and still valid.
    Wait,
}

fn millis(t: &MicroTime) -> i64 {
    t.0.as_millisecond()
}

fn step(spec: Option<&LeaseSpec>, me: &str, now_ms: i64) -> Step {
    let Some(spec) = spec else {
        return Step::Take;
    };
    match spec.holder_identity.as_deref() {
        None | Some("") => Step::Take,
        Some(holder) if holder == me => Step::Take,
        Some(_) => {
            let last = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .map(millis);
            let duration_ms = i64::from(spec.lease_duration_seconds.unwrap_or(15)) * 1000;
            match last {
                Some(at) if now_ms <= at + duration_ms => Step::Wait,
                _ => Step::Take,
            }
        }
    }
}

/// The Lease's spec with `me` as holder, renewed at `now`.
fn claimed(old: Option<&LeaseSpec>, me: &str, now: Timestamp, duration: Duration) -> LeaseSpec {
    let ours = old.and_then(|s| s.holder_identity.as_deref()) == Some(me);
    let transitions = old.and_then(|s| s.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_owned()),
        lease_duration_seconds: Some(duration.as_secs().clamp(1, i32::MAX as u64) as i32),
        acquire_time: if ours {
            old.and_then(|s| s.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours || old.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..LeaseSpec::default()
    }
}

/// This replica's identity: the pod name (or host name) and the process id.
pub fn identity() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "capstan".to_owned());
    format!("{host}_{}", std::process::id())
}

/// One election round: whether we hold the Lease afterwards.
async fn round(
    api: &Api<Lease>,
    name: &str,
    me: &str,
    duration: Duration,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let conflict = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409);
    match api.get_opt(name).await? {
        None => {
            let lease = Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    ..Default::default()
                },
                spec: Some(claimed(None, me, now, duration)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if conflict(&e) => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            if step(lease.spec.as_ref(), me, now.as_millisecond()) == Step::Wait {
                return Ok(false);
            }
            lease.spec = Some(claimed(lease.spec.as_ref(), me, now, duration));
            match api.replace(name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if conflict(&e) => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Runs the election until the process ends, publishing whether this replica leads.
pub async fn run(
    client: kube::Client,
    namespace: String,
    args: LeaderArgs,
    leader: watch::Sender<bool>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let me = identity();
    tracing::info!(lease = %args.lease_name, %namespace, identity = %me, "leader election: candidate");
    let mut renewed: Option<Instant> = None;
    loop {
        match round(&api, &args.lease_name, &me, args.lease_duration).await {
            Ok(true) => {
                renewed = Some(Instant::now());
                if !*leader.borrow() {
                    tracing::info!(lease = %args.lease_name, identity = %me, "leader election: leading");
                }
                leader.send_replace(true);
            }
            Ok(false) => {
                if *leader.borrow() {
                    tracing::warn!(lease = %args.lease_name, "leader election: lost the lease");
                }
                renewed = None;
                leader.send_replace(false);
            }
            Err(e) => {
                tracing::warn!(lease = %args.lease_name, "leader election: {e}");
                // Step down before the Lease can expire and be taken: never two leaders.
                let stale = renewed
                    .is_none_or(|at| at.elapsed() + args.renew_period >= args.lease_duration);
                if stale && *leader.borrow() {
                    tracing::warn!("leader election: cannot renew; stepping down");
                    leader.send_replace(false);
                }
            }
        }
        tokio::time::sleep(args.renew_period).await;
    }
}

/// Runs `task` while `leader` says so: started on winning, aborted on losing, restarted on
/// winning again.
pub async fn while_leader<F, Fut>(mut leader: watch::Receiver<bool>, what: &'static str, task: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        if leader.wait_for(|l| *l).await.is_err() {
            return;
        }
        tracing::info!(task = what, "leading: started");
        let handle = tokio::spawn(task());
        let lost = leader.wait_for(|l| !*l).await.is_err();
        handle.abort();
        if lost {
            return;
        }
        tracing::info!(task = what, "not leading: stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(by: &str, renewed_ms: i64, secs: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(by.to_owned()),
            lease_duration_seconds: Some(secs),
            renew_time: Some(MicroTime(Timestamp::from_millisecond(renewed_ms).unwrap())),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_valid_lease_of_another_replica_is_waited_for_until_it_expires() {
        let t = 1_700_000_000_000;
        assert_eq!(step(None, "a", t), Step::Take);
        assert_eq!(step(Some(&LeaseSpec::default()), "a", t), Step::Take);
        assert_eq!(
            step(Some(&held("a", t - 60_000, 15)), "a", t),
            Step::Take,
            "ours"
        );
        assert_eq!(step(Some(&held("b", t - 14_000, 15)), "a", t), Step::Wait);
        assert_eq!(
            step(Some(&held("b", t - 15_000, 15)), "a", t),
            Step::Wait,
            "boundary"
        );
        assert_eq!(
            step(Some(&held("b", t - 15_001, 15)), "a", t),
            Step::Take,
            "expired"
        );
        let mut never = held("b", t, 15);
        never.renew_time = None;
        assert_eq!(step(Some(&never), "a", t), Step::Take, "never renewed");
    }

    #[test]
    fn claiming_counts_transitions_and_keeps_the_acquire_time_on_renewal() {
        let t0 = Timestamp::from_millisecond(1_700_000_000_000).unwrap();
        let t1 = Timestamp::from_millisecond(1_700_000_002_000).unwrap();
        let first = claimed(None, "a", t0, Duration::from_secs(15));
        assert_eq!(first.lease_transitions, Some(0));
        assert_eq!(first.lease_duration_seconds, Some(15));
        let renewed = claimed(Some(&first), "a", t1, Duration::from_secs(15));
        assert_eq!(renewed.acquire_time, first.acquire_time);
        assert_eq!(renewed.renew_time, Some(MicroTime(t1)));
        assert_eq!(renewed.lease_transitions, Some(0));
        let taken = claimed(Some(&renewed), "b", t1, Duration::from_secs(15));
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.acquire_time, Some(MicroTime(t1)));
        assert_eq!(taken.lease_transitions, Some(1));
    }

    /// Waits (bounded) until `f` holds.
    async fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn leader_only_work_starts_and_stops_with_the_lease() {
        use std::sync::atomic::Ordering::SeqCst;
        let (tx, rx) = watch::channel(false);
        let running = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
        let r = running.clone();
        let gate = tokio::spawn(while_leader(rx, "test", move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _guard = scopeguard(r);
                std::future::pending::<()>().await;
            }
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(running.load(SeqCst), 0, "not started before leading");
        tx.send_replace(true);
        eventually("started on winning", || running.load(SeqCst) == 1).await;
        tx.send_replace(false);
        eventually("aborted on losing", || running.load(SeqCst) == 0).await;
        tx.send_replace(true);
        eventually("restarted on winning again", || running.load(SeqCst) == 1).await;
        drop(tx);
        eventually("ends with the election", || gate.is_finished()).await;
        assert_eq!(running.load(SeqCst), 0);
    }

    /// Decrements the counter when the task is dropped (aborted).
    fn scopeguard(r: std::sync::Arc<std::sync::atomic::AtomicI32>) -> impl Drop {
        struct G(std::sync::Arc<std::sync::atomic::AtomicI32>);
        impl Drop for G {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        G(r)
    }
}

//! Injection benchmark (not a test): creates N workloads, annotates them all, and reports the
//! time until every one is patched, the annotate→patched latency percentiles, the writes during
//! 60 s of steady state, and the operator's peak RSS. Uses KUBECONFIG and KOTEL_OPERATOR_BIN.
//!
//! Usage: bench-inject [N=1000] [STEADY_SECONDS=60] [KINDS=deployments|mixed]
//!
//! `mixed` cycles Deployment, StatefulSet, DaemonSet and CronJob. No workload runs a pod:
//! replicas 0, a suspended CronJob, and DaemonSets on a cluster without nodes (`make bench`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kotel_e2e::measure::{peak_rss_mib, percentile, status_mib};
use kotel_e2e::workloads::{api, hash, manifest, template};
use kotel_e2e::*;
use kotel_operator::workload::Kind;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(1000);
    let steady: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(60);
    let kinds: &[Kind] = match args.get(3).map(String::as_str) {
        None | Some("deployments") => &[Kind::Deployment],
        Some("mixed") => &Kind::ALL,
        Some(other) => anyhow::bail!("KINDS is `deployments` or `mixed`, not `{other}`"),
    };
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "bench", json!({})).await?;
    ns.apply(json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Instrumentation", "metadata": {"name": "otel"},
                    "spec": {"exporter": {"endpoint": "http://gw.obs:4318"}}}))
        .await?;
    let workloads: Vec<(Kind, String)> = (0..n)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            (
                kind,
                format!("bench-{}-{i:04}", kind.as_str().to_lowercase()),
            )
        })
        .collect();
    eprintln!("creating {n} workloads of {kinds:?}");
    stream::iter(workloads.clone())
        .map(|(kind, name)| {
            let api = api(&client, &ns.name, kind);
            async move {
                let mut w = manifest(
                    kind,
                    &name,
                    "example.com/app:1",
                    json!({}),
                    json!([{"name": "USER_VAR", "value": "1"}]),
                );
                match kind {
                    Kind::Deployment | Kind::StatefulSet => w["spec"]["replicas"] = json!(0),
                    Kind::CronJob => w["spec"]["suspend"] = json!(true),
                    Kind::DaemonSet => {}
                }
                api.create(&PostParams::default(), &serde_json::from_value(w)?)
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;

    let op = Operator::start().await?;
    eprintln!(
        "operator ready (pid {}, peak RSS so far {:.1} MiB); annotating",
        op.pid(),
        peak_rss_mib(op.pid())
    );

    let patched: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watches: Vec<_> = kinds
        .iter()
        .map(|&kind| {
            let patched = patched.clone();
            let api = api(&client, &ns.name, kind);
            tokio::spawn(async move {
                let mut s =
                    std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
                while let Some(Ok(o)) = s.next().await {
                    if hash(&template(
                        kind,
                        &serde_json::to_value(&o).unwrap_or_default(),
                    ))
                    .is_some()
                    {
                        patched
                            .lock()
                            .unwrap()
                            .entry(kube::ResourceExt::name_any(&o))
                            .or_insert_with(Instant::now);
                    }
                }
            })
        })
        .collect();

    let annotated: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let start = Instant::now();
    stream::iter(workloads.clone())
        .map(|(kind, name)| {
            let api = api(&client, &ns.name, kind);
            let annotated = annotated.clone();
            async move {
                annotated
                    .lock()
                    .unwrap()
                    .insert(name.clone(), Instant::now());
                let p = json!({"metadata": {"annotations": {"kotel.dev/inject": "true"}}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&p))
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let annotate_done = start.elapsed();

    let deadline = Instant::now() + Duration::from_secs(300);
    while patched.lock().unwrap().len() < n {
        if Instant::now() > deadline {
            anyhow::bail!(
                "only {} of {n} patched in time (peak RSS {:.1} MiB)",
                patched.lock().unwrap().len(),
                peak_rss_mib(op.pid())
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_patched = start.elapsed();
    let mut lat: Vec<f64> = {
        let p = patched.lock().unwrap();
        let a = annotated.lock().unwrap();
        workloads
            .iter()
            .map(|(_, n)| p[n].saturating_duration_since(a[n]).as_secs_f64() * 1000.0)
            .collect()
    };
    lat.sort_by(f64::total_cmp);
    watches.iter().for_each(|w| w.abort());

    eprintln!(
        "all patched (peak RSS so far {:.1} MiB); measuring {steady} s of steady state",
        peak_rss_mib(op.pid())
    );
    // Steady means every rollout kotel started has settled (the StatefulSets' revisions take
    // the controller-manager a while): status writes before that report real changes. The
    // rollout gauge counts only what a status pass has seen (one every 5 s at most), so it
    // counts once every workload is counted injected.
    let metrics = || async { http_get(&format!("http://{}/metrics", op.addr)).await };
    let settle = Instant::now();
    loop {
        let (_, m) = metrics().await?;
        if metric_sum(&m, "kotel_injected_workloads") >= n as f64
            && series_value(&m, "kotel_rollouts{state=\"pending\"}") == Some(0.0)
        {
            break;
        }
        if settle.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("rollouts still pending after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled_after = settle.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_, before) = metrics().await?;
    tokio::time::sleep(Duration::from_secs(steady)).await;
    let (_, after) = metrics().await?;
    let writes = |m: &str| -> Vec<(String, f64)> {
        m.lines()
            .filter_map(|l| l.strip_prefix("kotel_writes_total{kind=\""))
            .filter_map(|l| {
                let (kind, v) = l.split_once("\"} ")?;
                Some((kind.to_string(), v.parse().ok()?))
            })
            .collect()
    };
    let w0 = writes(&before);
    let by_kind: Vec<(String, f64)> = writes(&after)
        .into_iter()
        .map(|(k, v)| {
            let was = w0.iter().find(|(k0, _)| *k0 == k).map_or(0.0, |(_, v)| *v);
            (k, v - was)
        })
        .filter(|(_, d)| *d != 0.0)
        .collect();
    let steady_writes: i64 = by_kind.iter().map(|(_, d)| *d as i64).sum();
    let rss = peak_rss_mib(op.pid());
    let rss_now = status_mib(op.pid(), "VmRSS:");
    op.stop()?;
    ns.cleanup().await;

    println!("workloads: {n} of {kinds:?}");
    println!("annotating all took: {:.2} s", annotate_done.as_secs_f64());
    println!("all patched after: {:.2} s", all_patched.as_secs_f64());
    println!(
        "annotate→patched p50: {:.0} ms, p99: {:.0} ms, max: {:.0} ms",
        percentile(&lat, 50.0),
        percentile(&lat, 99.0),
        percentile(&lat, 100.0)
    );
    println!(
        "rollouts settled {:.1} s after all were patched",
        settled_after.as_secs_f64()
    );
    println!("writes during {steady} s of steady state: {steady_writes} {by_kind:?}");
    println!("operator peak RSS: {rss:.1} MiB (after the steady state: {rss_now:.1} MiB)");
    Ok(())
}

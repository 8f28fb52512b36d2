//! Scale benchmark (not a test): N workloads of every kind across NS namespaces, each using one
//! of INST Instrumentations by `NAMESPACE/NAME`, all annotated before the operator starts.
//! Reports the time until every one is patched, the rollouts settling, the writes and API
//! requests in STEADY seconds of steady state, then one Instrumentation changed: the time
//! until exactly its workloads carry a new hash, and that no other workload's changed. Also
//! the operator's peak RSS, its CPU time, and its RSS per workload. Uses KUBECONFIG and
//! KOTEL_OPERATOR_BIN.
//!
//! Usage: bench-scale [N=5000] [NS=50] [INST=20] [STEADY=60]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kotel_e2e::measure::{cpu_seconds, peak_rss_mib, status_mib};
use kotel_e2e::workloads::{api, hash, manifest, template};
use kotel_e2e::*;
use kotel_operator::workload::Kind;
use kube::Client;
use kube::api::ListParams;
use serde_json::json;

fn arg(i: usize, default: usize) -> anyhow::Result<usize> {
    Ok(std::env::args()
        .nth(i)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(default))
}

/// Every workload's config hash (None: not patched), keyed by kind, namespace and name.
async fn hashes(
    client: &Client,
    namespaces: &[TestNamespace],
) -> anyhow::Result<BTreeMap<(&'static str, String, String), Option<String>>> {
    let mut all = BTreeMap::new();
    for ns in namespaces {
        for kind in Kind::ALL {
            let list = api(client, &ns.name, kind)
                .list(&ListParams::default())
                .await?;
            for o in list.items {
                let v = serde_json::to_value(&o)?;
                let name = v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                all.insert(
                    (kind.as_str(), ns.name.clone(), name),
                    hash(&template(kind, &v)),
                );
            }
        }
    }
    Ok(all)
}

/// The operator's API requests so far, by verb.
fn requests(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("kotel_api_request_duration_seconds_count{verb=\""))
        .filter_map(|l| {
            let (verb, v) = l.split_once("\"} ")?;
            Some((verb.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// The operator's mean API answer time by verb so far, in ms.
fn mean_answers(metrics: &str) -> String {
    let total = |suffix: &str| -> BTreeMap<String, f64> {
        let prefix = format!("kotel_api_request_duration_seconds_{suffix}{{verb=\"");
        metrics
            .lines()
            .filter_map(|l| l.strip_prefix(prefix.as_str()))
            .filter_map(|l| {
                let (verb, v) = l.split_once("\"} ")?;
                Some((verb.to_string(), v.parse().ok()?))
            })
            .collect()
    };
    let (sum, count) = (total("sum"), total("count"));
    count
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(verb, n)| format!("{verb} {:.0} ms", 1000.0 * sum[verb] / n))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The control plane's processes (from the run directory `controlplane.sh` keeps), each with
/// its CPU seconds so far: they share the two cores with the operator.
fn control_plane_cpu() -> BTreeMap<String, f64> {
    let Ok(dir) = std::env::var("KOTEL_E2E_DIR") else {
        return BTreeMap::new();
    };
    let Ok(entries) = std::fs::read_dir(format!("{dir}/pids")) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                cpu_seconds(pid),
            ))
        })
        .collect()
}

fn delta(after: &BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> (f64, String) {
    let by_verb: Vec<String> = after
        .iter()
        .map(|(k, v)| (k, v - before.get(k).unwrap_or(&0.0)))
        .filter(|(_, d)| *d > 0.0)
        .map(|(k, d)| format!("{k} {d:.0}"))
        .collect();
    let total = after.values().sum::<f64>() - before.values().sum::<f64>();
    (total, by_verb.join(", "))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (n, n_ns, n_inst, steady) = (arg(1, 5000)?, arg(2, 50)?, arg(3, 20)?, arg(4, 60)?);
    let client = client().await?;
    install_crds(&client).await?;
    let start = Instant::now();
    let mut namespaces = Vec::new();
    for _ in 0..n_ns {
        namespaces.push(TestNamespace::create(&client, "scale", json!({})).await?);
    }
    // Instrumentation i lives in namespace i % NS, and workload j uses Instrumentation j % INST.
    let inst_ref = |i: usize| format!("{}/otel-{i:02}", namespaces[i % n_ns].name);
    for i in 0..n_inst {
        namespaces[i % n_ns]
            .apply(
                json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Instrumentation",
                          "metadata": {"name": format!("otel-{i:02}")},
                          "spec": {"exporter": {"endpoint": "http://gw.obs:4318"}}}),
            )
            .await?;
    }
    eprintln!("creating {n} annotated workloads of every kind in {n_ns} namespaces");
    stream::iter(0..n)
        .map(|j| {
            let kind = Kind::ALL[j % Kind::ALL.len()];
            let ns = &namespaces[j % n_ns];
            let annotations = json!({"kotel.dev/inject": inst_ref(j % n_inst)});
            let name = format!("w-{j:05}");
            let mut w = manifest(kind, &name, "example.com/app:1", annotations, json!([]));
            match kind {
                Kind::Deployment | Kind::StatefulSet => w["spec"]["replicas"] = json!(0),
                Kind::CronJob => w["spec"]["suspend"] = json!(true),
                Kind::DaemonSet => {}
            }
            ns.apply(w)
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!("created in {:.0} s", start.elapsed().as_secs_f64());

    let started = Instant::now();
    let cp_cpu0 = control_plane_cpu();
    let op = Operator::start().await?;
    let pid = op.pid();
    eprintln!(
        "operator ready after {:.1} s (RSS {:.1} MiB); waiting until every workload is patched",
        started.elapsed().as_secs_f64(),
        status_mib(pid, "VmRSS:")
    );
    let metrics =
        || async { anyhow::Ok(http_get(&format!("http://{}/metrics", op.addr)).await?.1) };
    // Converged: the operator has written every workload once (each needs exactly one write),
    // checked against every workload's hash below. Its own count of injected workloads, which
    // the status reconciler keeps, is reported too.
    let (mut all_written, mut all_patched, mut cpu_written) = (None, None, 0.0);
    let mut progress = Instant::now();
    while started.elapsed() < Duration::from_secs(900) {
        let m = metrics().await?;
        let written: f64 = Kind::ALL
            .iter()
            .filter_map(|k| {
                let kind = k.as_str().to_lowercase();
                series_value(&m, &format!("kotel_writes_total{{kind=\"{kind}\"}}"))
            })
            .sum();
        let injected = metric_sum(&m, "kotel_injected_workloads");
        if progress.elapsed() >= Duration::from_secs(10) {
            progress = Instant::now();
            // Little's law: reconciles in flight = their rate × their mean duration.
            let reconciles = metric_sum(&m, "kotel_reconciles_total");
            let busy = metric_sum(&m, "kotel_reconcile_duration_seconds_sum");
            eprintln!(
                "  {:>4.0} s: {written:.0} written, {injected:.0} counted injected, {reconciles:.0} reconciles, {:.1} in flight on average",
                started.elapsed().as_secs_f64(),
                busy / started.elapsed().as_secs_f64()
            );
        }
        if all_written.is_none() && written as usize >= n {
            all_written = Some(started.elapsed());
            cpu_written = cpu_seconds(pid);
        }
        if injected as usize >= n {
            all_patched = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let all_patched = all_patched.ok_or_else(|| anyhow::anyhow!("not all counted in 900 s"))?;
    let all_written = all_written.unwrap_or(all_patched);
    let unpatched = hashes(&client, &namespaces)
        .await?
        .into_iter()
        .filter(|(_, h)| h.is_none())
        .count();
    anyhow::ensure!(unpatched == 0, "{unpatched} workloads without kotel's hash");
    let cpu_converge = cpu_seconds(pid);
    let cp_converge: Vec<String> = control_plane_cpu()
        .iter()
        .map(|(name, s)| format!("{name} {:.1} s", s - cp_cpu0.get(name).unwrap_or(&0.0)))
        .collect();
    let answers_converge = mean_answers(&metrics().await?);

    let settle = Instant::now();
    loop {
        if series_value(&metrics().await?, "kotel_rollouts{state=\"pending\"}") == Some(0.0) {
            break;
        }
        anyhow::ensure!(
            settle.elapsed() < Duration::from_secs(900),
            "rollouts still pending after 900 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let settled = settle.elapsed();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (m0, cpu0) = (metrics().await?, cpu_seconds(pid));
    tokio::time::sleep(Duration::from_secs(steady as u64)).await;
    let (m1, cpu1) = (metrics().await?, cpu_seconds(pid));
    let steady_writes =
        metric_sum(&m1, "kotel_writes_total") - metric_sum(&m0, "kotel_writes_total");
    let (steady_requests, steady_by_verb) = delta(&requests(&m1), &requests(&m0));
    let rss_steady = status_mib(pid, "VmRSS:");

    // One Instrumentation changed: exactly its workloads get a new hash.
    let changed = 3 % n_inst;
    let before = hashes(&client, &namespaces).await?;
    let users: Vec<_> = (0..n).filter(|j| j % n_inst == changed).collect();
    let change = Instant::now();
    namespaces[changed % n_ns]
        .apply(
            json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Instrumentation",
                      "metadata": {"name": format!("otel-{changed:02}")},
                      "spec": {"exporter": {"endpoint": "http://gw.obs:4318"},
                               "resourceAttributes": {"deployment.environment.name": "scale"}}}),
        )
        .await?;
    let after = loop {
        let now = hashes(&client, &namespaces).await?;
        let moved = now
            .iter()
            .filter(|(k, h)| before.get(*k) != Some(*h))
            .count();
        if moved >= users.len() {
            break now;
        }
        anyhow::ensure!(
            change.elapsed() < Duration::from_secs(600),
            "only {moved} of {} re-rolled in 600 s",
            users.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let rerolled = change.elapsed();
    // The operator has written the change's workloads; wait until it is idle again, then
    // compare every hash.
    let settle = Instant::now();
    loop {
        let w0 = metric_sum(&metrics().await?, "kotel_writes_total");
        tokio::time::sleep(Duration::from_secs(5)).await;
        if metric_sum(&metrics().await?, "kotel_writes_total") == w0
            || settle.elapsed() > Duration::from_secs(300)
        {
            break;
        }
    }
    let final_hashes = hashes(&client, &namespaces).await?;
    let moved: Vec<_> = final_hashes
        .iter()
        .filter(|(k, h)| before.get(*k) != Some(*h))
        .map(|(k, _)| k.clone())
        .collect();
    let expected: std::collections::BTreeSet<_> = users
        .iter()
        .map(|j| {
            (
                Kind::ALL[j % Kind::ALL.len()].as_str(),
                namespaces[j % n_ns].name.clone(),
                format!("w-{j:05}"),
            )
        })
        .collect();
    let others = moved.iter().filter(|k| !expected.contains(*k)).count();
    let missed = expected.iter().filter(|k| !moved.contains(k)).count();
    drop(after);
    let m_end = metrics().await?;
    let (total_requests, by_verb) = delta(&requests(&m_end), &BTreeMap::new());
    let rss_peak = peak_rss_mib(pid);
    let cpu_total = cpu_seconds(pid);
    op.stop()?;
    for ns in namespaces {
        ns.cleanup().await;
    }

    println!(
        "workloads: {n} of {:?} in {n_ns} namespaces, {n_inst} Instrumentations",
        Kind::ALL
    );
    println!(
        "operator start → every workload written: {:.1} s (CPU {cpu_written:.1} s); counted injected by the status pass at {:.1} s (CPU {cpu_converge:.1} s)",
        all_written.as_secs_f64(),
        all_patched.as_secs_f64()
    );
    println!(
        "  control plane CPU meanwhile: {}; mean API answer: {answers_converge}",
        cp_converge.join(", ")
    );
    println!("rollouts settled {:.1} s later", settled.as_secs_f64());
    println!(
        "steady {steady} s: {steady_writes:.0} writes, {steady_requests:.0} API requests ({steady_by_verb}), CPU {:.2} s",
        cpu1 - cpu0
    );
    println!(
        "one Instrumentation changed: its {} workloads re-rolled in {:.1} s; {others} others changed, {missed} of its own missed",
        users.len(),
        rerolled.as_secs_f64()
    );
    println!("API requests in all: {total_requests:.0} ({by_verb})");
    println!(
        "operator RSS: peak {rss_peak:.1} MiB, steady {rss_steady:.1} MiB ({:.1} KiB per workload); CPU in all {cpu_total:.1} s",
        rss_steady * 1024.0 / n as f64
    );
    anyhow::ensure!(
        others == 0 && missed == 0,
        "the change reached {others} other workloads and missed {missed}"
    );
    anyhow::ensure!(
        steady_writes == 0.0,
        "{steady_writes} writes in {steady} s of steady state"
    );
    Ok(())
}

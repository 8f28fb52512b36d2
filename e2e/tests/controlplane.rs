//! Faults of the control plane itself, with the operator running: kube-apiserver restarted and
//! etcd stopped for 10 s while 200 Deployments are being injected, and the operator's watches
//! expiring (410 Gone). A test stops the local control plane's processes through
//! `e2e/controlplane.sh`; against another cluster (KOTEL_E2E_KUBECONFIG) each says why and
//! passes without running. Run with --test-threads=1.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kotel_e2e::control_plane::ControlPlane;
use kotel_e2e::*;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const T: Duration = Duration::from_secs(180);

fn local_control_plane() -> Option<ControlPlane> {
    ControlPlane::local()
        .inspect_err(|why| eprintln!("skipped: {why}"))
        .ok()
}

/// `n` Deployments that run no pod, an Instrumentation they will use, and the operator.
async fn scene(
    client: &Client,
    prefix: &str,
    n: usize,
) -> anyhow::Result<(TestNamespace, Vec<String>, Operator)> {
    install_crds(client).await?;
    let ns = TestNamespace::create(client, prefix, json!({})).await?;
    ns.apply(json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Instrumentation", "metadata": {"name": "otel"},
                    "spec": {"exporter": {"endpoint": "http://gw.obs:4318"}}}))
        .await?;
    let names: Vec<String> = (0..n).map(|i| format!("web-{i:03}")).collect();
    stream::iter(&names)
        .map(|name| {
            let mut d = deployment(name, json!({}), json!([]));
            d["spec"]["replicas"] = json!(0);
            ns.apply(d)
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let op = Operator::start().await?;
    Ok((ns, names, op))
}

async fn annotate(client: &Client, ns: &str, names: &[String]) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let patch = Patch::Merge(json!({"metadata": {"annotations": {"kotel.dev/inject": "true"}}}));
    let params = PatchParams::default();
    stream::iter(names)
        .map(|n| api.patch(n, &params, &patch))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Every Deployment of `names` carries kotel's injection, and each rolled exactly once.
async fn all_injected_once(client: &Client, ns: &str, names: &[String]) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_for("every Deployment injected", T, || async {
        let list = api.list(&ListParams::default()).await?.items;
        Ok(names.iter().all(|n| {
            list.iter()
                .any(|d| d.name_any() == *n && template_hash(d).is_some())
        }))
    })
    .await?;
    wait_rolled_once(client, ns, names, T).await
}

/// Injection through a fault that `fault` starts and finishes: half the Deployments are
/// annotated and being injected when the operator is paused, the other half are annotated
/// while it cannot see them, and it is resumed once `outage` shows the fault in effect. It
/// then meets the outage with work pending, and must finish it afterwards.
async fn inject_through(
    prefix: &str,
    component: &'static str,
    down: Duration,
    outage: &str,
) -> anyhow::Result<()> {
    let Some(cp) = local_control_plane() else {
        return Ok(());
    };
    let client = client().await?;
    let (ns, names, mut op) = scene(&client, prefix, 200).await?;
    let (first, second) = names.split_at(100);
    annotate(&client, &ns.name, first).await?;
    wait_for("the operator's first injections", T, || async {
        Ok(op.metric_sum("kotel_writes_total").await? >= 5.0)
    })
    .await?;
    op.signal("STOP")?;
    let paused = async {
        annotate(&client, &ns.name, second).await?;
        let fault = tokio::spawn(async move { cp.restart(component, down).await });
        wait_for(outage, T, || async {
            Ok(client
                .request_text(http::Request::get("/readyz").body(vec![])?)
                .await
                .is_err())
        })
        .await?;
        anyhow::Ok(fault)
    }
    .await;
    op.signal("CONT")?;
    paused?.await??;
    all_injected_once(&client, &ns.name, &names).await?;
    assert!(op.running(), "the operator is still the same process");
    // kotel's own lines: kube's client logs its failed requests besides.
    let warnings: Vec<String> = op
        .warnings()
        .into_iter()
        .filter(|w| w.contains("\"target\":\"kotel_operator"))
        .collect();
    assert!(
        !warnings.is_empty(),
        "the operator logged nothing about the outage"
    );
    eprintln!(
        "the operator's warnings ({}), the first: {}",
        warnings.len(),
        warnings[0]
    );
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_restarted_kube_apiserver_leaves_every_workload_injected_once() -> anyhow::Result<()> {
    inject_through(
        "apiserver",
        "kube-apiserver",
        Duration::from_secs(5),
        "the API server to stop answering",
    )
    .await
}

#[tokio::test]
async fn etcd_stopped_for_10_s_leaves_every_workload_injected_once() -> anyhow::Result<()> {
    inject_through(
        "etcd",
        "etcd",
        Duration::from_secs(10),
        "the API server to report etcd down",
    )
    .await
}

/// The operator is paused, its Deployments annotated, etcd's history compacted past what it
/// has seen, and the API server restarted: each watch resumes from an expired
/// resourceVersion, gets 410 Gone, and must list afresh to find the annotations.
#[tokio::test]
async fn an_expired_watch_lists_afresh_and_misses_nothing() -> anyhow::Result<()> {
    let Some(cp) = local_control_plane() else {
        return Ok(());
    };
    let client = client().await?;
    let (ns, names, mut op) = scene(&client, "gone", 50).await?;
    op.signal("STOP")?;
    let paused = async {
        annotate(&client, &ns.name, &names).await?;
        cp.compact().await?;
        cp.restart("kube-apiserver", Duration::ZERO).await
    }
    .await;
    op.signal("CONT")?;
    paused?;
    all_injected_once(&client, &ns.name, &names).await?;
    let gone: Vec<String> = op
        .warnings()
        .into_iter()
        .filter(|w| w.contains("too old resource version"))
        .collect();
    assert!(
        !gone.is_empty(),
        "no watch of the operator was told its resourceVersion expired: {:?}",
        op.warnings()
    );
    eprintln!("{}", gone[0]);
    assert!(op.running());
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

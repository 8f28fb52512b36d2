//! Pods that really run: the images of the suite (built by `e2e/images.sh`, or loaded into a
//! cluster such as kind by its own means), Helm releases that uninstall themselves, rollouts,
//! pod logs, and the API server's proxy to a pod's port.

use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::{helm, wait_for};

/// `<prefix>/<name>:<tag>`: KOTEL_E2E_IMAGE_PREFIX (default `kotel`) and KOTEL_E2E_IMAGE_TAG
/// (default `e2e`), as `e2e/images.sh` names them.
pub fn image(name: &str) -> String {
    format!("{}:{}", image_repository(name), image_tag())
}

/// The repository part of [`image`], for a chart's `image.repository`.
pub fn image_repository(name: &str) -> String {
    let prefix = std::env::var("KOTEL_E2E_IMAGE_PREFIX").unwrap_or_else(|_| "kotel".into());
    format!("{prefix}/{name}")
}

/// The tag part of [`image`], for a chart's `image.tag`.
pub fn image_tag() -> String {
    std::env::var("KOTEL_E2E_IMAGE_TAG").unwrap_or_else(|_| "e2e".into())
}

/// An image whose container runs until stopped and answers SIGTERM at once:
/// KOTEL_E2E_PAUSE_IMAGE, default the node's own sandbox image `kotel/pause:3.10` (on kind,
/// `registry.k8s.io/pause:3.10`).
pub fn pause_image() -> String {
    std::env::var("KOTEL_E2E_PAUSE_IMAGE").unwrap_or_else(|_| "kotel/pause:3.10".into())
}

/// Fails clearly when the cluster has no Ready node to run pods on.
pub async fn require_node(client: &Client) -> anyhow::Result<()> {
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let ready = nodes.items.iter().any(|n| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    });
    if !ready {
        bail!(
            "the cluster has no Ready node, so pods cannot run: see $KOTEL_E2E_DIR/mode and logs/ for why e2e/controlplane.sh started no node"
        );
    }
    Ok(())
}

/// A Helm release, uninstalled when dropped (however the test ends).
pub struct Release {
    /// Its name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
}

impl Release {
    /// `helm install NAME CHART -n NS --wait` with `--set` pairs.
    pub fn install(
        name: &str,
        namespace: &str,
        chart: &std::path::Path,
        sets: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        let chart = chart.to_str().context("chart path")?;
        helm_with_sets(&["install", name, chart, "-n", namespace], sets)?;
        Ok(Release {
            name: name.to_string(),
            namespace: namespace.to_string(),
        })
    }

    /// `helm upgrade --reuse-values --wait` with more `--set` pairs.
    pub fn upgrade(&self, chart: &std::path::Path, sets: &[(&str, String)]) -> anyhow::Result<()> {
        let chart = chart.to_str().context("chart path")?;
        let upgrade = [
            "upgrade",
            &self.name,
            chart,
            "-n",
            &self.namespace,
            "--reuse-values",
        ];
        helm_with_sets(&upgrade, sets)?;
        Ok(())
    }
}

/// Runs helm with `args`, `--wait --timeout 3m` and a `--set` per pair.
fn helm_with_sets(args: &[&str], sets: &[(&str, String)]) -> anyhow::Result<String> {
    let sets: Vec<String> = sets.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--wait", "--timeout", "3m"]);
    for s in &sets {
        all.extend(["--set", s]);
    }
    helm(&all)
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm(&[
            "uninstall",
            &self.name,
            "-n",
            &self.namespace,
            "--wait",
            "--timeout",
            "2m",
        ]);
    }
}

/// The pods of a namespace that match a label selector, oldest first.
pub async fn pods(client: &Client, ns: &str, selector: &str) -> anyhow::Result<Vec<Pod>> {
    let mut list = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await?
        .items;
    list.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    Ok(list)
}

/// Whether a pod is Ready (every container, sidecars included, passed its probes).
pub fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until a Deployment has rolled out completely: its controller saw the newest spec,
/// all of its replicas are updated, ready and available, and no old pod is left, not even a
/// terminating one (a Service may still send it a connection that it then drops).
pub async fn wait_rollout(client: &Client, ns: &str, name: &str) -> anyhow::Result<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    wait_for(
        &format!("Deployment {ns}/{name} to roll out"),
        Duration::from_secs(180),
        || async {
            let d = api.get(name).await?;
            let spec = d.spec.clone().unwrap_or_default();
            let want = spec.replicas.unwrap_or(1);
            let s = d.status.clone().unwrap_or_default();
            let done = s.observed_generation >= d.metadata.generation
                && s.replicas == Some(want)
                && s.updated_replicas.unwrap_or(0) == want
                && s.ready_replicas.unwrap_or(0) == want
                && s.available_replicas.unwrap_or(0) == want;
            if !done {
                return Ok(false);
            }
            let selector = spec
                .selector
                .match_labels
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",");
            let pods = pods(client, ns, &selector).await?;
            Ok(pods.len() == want as usize && pods.iter().all(is_ready))
        },
    )
    .await?;
    Ok(api.get(name).await?)
}

/// The logs of one container of a pod (all of them, not only the last lines).
pub async fn logs(client: &Client, ns: &str, pod: &str, container: &str) -> anyhow::Result<String> {
    Ok(Api::<Pod>::namespaced(client.clone(), ns)
        .logs(
            pod,
            &LogParams {
                container: Some(container.to_string()),
                ..Default::default()
            },
        )
        .await?)
}

/// Everything the `debug` exporter of the collector pods matching `selector` printed (a pod
/// whose log cannot be read yet counts as empty).
pub async fn collector_output(
    client: &Client,
    ns: &str,
    selector: &str,
) -> anyhow::Result<Vec<crate::debug_exporter::Resource>> {
    let mut all = Vec::new();
    for p in pods(client, ns, selector).await? {
        if let Ok(log) = logs(client, ns, &p.name_any(), "collector").await {
            all.extend(crate::debug_exporter::parse(&log));
        }
    }
    Ok(all)
}

/// GET `path` on a pod's port through the API server's proxy (it connects to the pod's IP).
pub async fn proxy_get(
    client: &Client,
    ns: &str,
    pod: &str,
    port: u16,
    path: &str,
) -> anyhow::Result<String> {
    proxy_get_with(client, ns, pod, port, path, &[]).await
}

/// [`proxy_get`] with request headers (the proxy passes them on, `traceparent` included).
pub async fn proxy_get_with(
    client: &Client,
    ns: &str,
    pod: &str,
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<String> {
    let uri = format!(
        "/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/{}",
        path.trim_start_matches('/')
    );
    let mut req = http::Request::get(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Ok(client.request_text(req.body(Vec::new())?).await?)
}

/// POST a JSON `body` to `path` on a pod's port through the API server's proxy.
pub async fn proxy_post(
    client: &Client,
    ns: &str,
    pod: &str,
    port: u16,
    path: &str,
    body: &Value,
) -> anyhow::Result<String> {
    let uri = format!(
        "/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/{}",
        path.trim_start_matches('/')
    );
    let req = http::Request::post(uri)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body)?)?;
    Ok(client.request_text(req).await?)
}

/// Runs a pod to completion (it must end by itself) and returns its logs; the pod is deleted
/// afterwards.
pub async fn run_to_completion(client: &Client, ns: &str, pod: Value) -> anyhow::Result<String> {
    let pod: Pod = serde_json::from_value(pod)?;
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), &pod).await?;
    finished(client, ns, &pod.name_any(), Duration::from_secs(120)).await
}

/// Waits up to `timeout` for a created pod to succeed, then deletes it and returns the log of
/// its first container (an error with that log if it failed).
pub async fn finished(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let done = wait_for(&format!("pod {ns}/{name} to finish"), timeout, || async {
        let p = api.get(name).await?;
        match p.status.and_then(|s| s.phase).as_deref() {
            Some("Succeeded") => Ok(true),
            Some("Failed") => bail!("pod {name} failed"),
            _ => Ok(false),
        }
    })
    .await;
    let container = api
        .get(name)
        .await?
        .spec
        .and_then(|s| s.containers.first().map(|c| c.name.clone()))
        .unwrap_or_default();
    let out = logs(client, ns, name, &container).await;
    let _ = api.delete(name, &Default::default()).await;
    done.with_context(|| format!("its logs: {}", out.as_deref().unwrap_or("(none)")))?;
    out
}

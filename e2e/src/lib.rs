//! Harness for kotel's end-to-end tests: a client for the cluster named by KUBECONFIG, a fresh
//! namespace per test, and the operator as a real process.

pub mod cluster;
pub mod control_plane;
pub mod debug_exporter;
pub mod measure;
pub mod trace_tree;
pub mod workloads;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{EnvVar, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// The repository root.
pub fn repo_root() -> PathBuf {
    // Cargo's value at run time first: a target directory shared between checkouts (CI's
    // cache) can hold a test binary built in another checkout, whose compile-time path is gone.
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .join("..")
}

/// A client for the cluster named by KUBECONFIG; fails clearly when there is none.
pub async fn client() -> anyhow::Result<Client> {
    if std::env::var_os("KUBECONFIG").is_none() {
        bail!(
            "KUBECONFIG is not set: run the e2e suite with `make test` (which starts a local control plane) or point KUBECONFIG at a cluster"
        );
    }
    Ok(Client::try_default().await?)
}

/// Installs kotel's CRDs from `crds/` and waits until they are established.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(repo_root().join("crds/kotel.dev.yaml"))?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for doc in text.split("\n---\n") {
        let crd: CustomResourceDefinition = serde_norway::from_str(doc)?;
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("kotel-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await?;
        kube::runtime::wait::await_condition(
            api.clone(),
            &name,
            kube::runtime::conditions::is_crd_established(),
        )
        .await?;
    }
    Ok(())
}

/// A namespace of one test, deleted by `cleanup` or, however the test ends, when dropped.
pub struct TestNamespace {
    /// Its name.
    pub name: String,
    client: Client,
    deleted: bool,
}

impl TestNamespace {
    /// Creates `e2e-<prefix>-<random>` with the given annotations.
    pub async fn create(client: &Client, prefix: &str, annotations: Value) -> anyhow::Result<Self> {
        Self::create_with(client, prefix, annotations, json!({})).await
    }

    /// Creates `e2e-<prefix>-<random>` with the given annotations and labels.
    pub async fn create_with(
        client: &Client,
        prefix: &str,
        annotations: Value,
        labels: Value,
    ) -> anyhow::Result<Self> {
        let suffix = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos()
                & 0xffffff
        );
        let name = format!("e2e-{prefix}-{suffix}");
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "annotations": annotations, "labels": labels}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        // Pods need the namespace's default ServiceAccount (made by the controller-manager).
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        let _ = wait_for(
            "default ServiceAccount",
            Duration::from_secs(30),
            || async { Ok(sa.get_opt("default").await?.is_some()) },
        )
        .await;
        Ok(TestNamespace {
            name,
            client: client.clone(),
            deleted: false,
        })
    }

    /// Creates any namespaced object of this namespace from JSON.
    pub async fn apply(&self, obj: Value) -> anyhow::Result<()> {
        apply_json(&self.client, &self.name, obj, "kotel-e2e-user").await
    }

    /// Deletes the namespace.
    pub async fn cleanup(mut self) {
        let _ = Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await;
        self.deleted = true;
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.deleted {
            let _ = kubectl(&[
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ]);
        }
    }
}

/// Applies an object of any kind (a namespaced one into `ns`) by server-side apply with `manager`.
pub async fn apply_json(
    client: &Client,
    ns: &str,
    mut obj: Value,
    manager: &str,
) -> anyhow::Result<()> {
    let tm: kube::core::TypeMeta = serde_json::from_value(obj.clone())?;
    let name = obj["metadata"]["name"]
        .as_str()
        .context("metadata.name")?
        .to_string();
    let gvk = kube::core::GroupVersionKind::try_from(&tm)?;
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let api: Api<kube::core::DynamicObject> = match caps.scope {
        kube::discovery::Scope::Cluster => Api::all_with(client.clone(), &ar),
        kube::discovery::Scope::Namespaced => {
            obj["metadata"]["namespace"] = json!(ns);
            Api::namespaced_with(client.clone(), ns, &ar)
        }
    };
    api.patch(
        &name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&obj),
    )
    .await?;
    Ok(())
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what} (last error: {last_err:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A Deployment whose single container `app` sets `env` itself.
pub fn deployment(name: &str, annotations: Value, env: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "example.com/shop/app:1.4.2", "env": env}]}
            }
        }
    })
}

/// The env of container `container` in the Deployment's pod template.
pub fn template_env(d: &Deployment, container: &str) -> Vec<EnvVar> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
}

/// The value of env var `name`, if set as a literal.
pub fn env_value<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

/// The pod template's `kotel.dev/config-hash`.
pub fn template_hash(d: &Deployment) -> Option<String> {
    kotel_operator::annotations::template_hash(&d.spec.as_ref()?.template).map(str::to_string)
}

/// The ReplicaSets of a Deployment, newest revision first.
pub async fn replicasets(
    client: &Client,
    ns: &str,
    deployment: &str,
) -> anyhow::Result<Vec<ReplicaSet>> {
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let mut list: Vec<ReplicaSet> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.kind == "Deployment" && o.name == deployment)
        })
        .collect();
    let rev = |rs: &ReplicaSet| {
        rs.annotations()
            .get("deployment.kubernetes.io/revision")
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or(0)
    };
    list.sort_by_key(|rs| std::cmp::Reverse(rev(rs)));
    Ok(list)
}

/// Waits until each Deployment of `names` has stamped its current (injected) template into a
/// ReplicaSet, then checks that kotel's injection rolled it exactly once: one ReplicaSet of
/// kotel's template, and at most two in all (the original one, made before kotel's patch).
pub async fn wait_rolled_once(
    client: &Client,
    ns: &str,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let all_rs = || async {
        anyhow::Ok(
            Api::<ReplicaSet>::namespaced(client.clone(), ns)
                .list(&ListParams::default())
                .await?
                .items,
        )
    };
    let owned = |rs: &[ReplicaSet], name: &str| -> Vec<Option<String>> {
        rs.iter()
            .filter(|rs| {
                rs.owner_references()
                    .iter()
                    .any(|o| o.kind == "Deployment" && o.name == name)
            })
            .map(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .and_then(kotel_operator::annotations::template_hash)
                    .map(str::to_string)
            })
            .collect()
    };
    wait_for(
        "every injected template stamped into a ReplicaSet",
        timeout,
        || async {
            let rs = all_rs().await?;
            let list = deployments.list(&ListParams::default()).await?.items;
            Ok(names.iter().all(|n| {
                list.iter().find(|d| d.name_any() == *n).is_some_and(|d| {
                    let seen = d.status.as_ref().and_then(|s| s.observed_generation)
                        >= d.metadata.generation;
                    let hash = template_hash(d);
                    seen && hash.is_some() && owned(&rs, n).contains(&hash)
                })
            }))
        },
    )
    .await?;
    let rs = all_rs().await?;
    let rolled_more: Vec<String> = names
        .iter()
        .filter_map(|n| {
            let owned = owned(&rs, n);
            let injected = owned.iter().filter(|h| h.is_some()).count();
            (owned.len() > 2 || injected != 1).then(|| {
                format!(
                    "{n}: {} ReplicaSets, {injected} of kotel's template",
                    owned.len()
                )
            })
        })
        .collect();
    ensure!(
        rolled_more.is_empty(),
        "rolled more than once: {rolled_more:?}"
    );
    Ok(())
}

/// Events (events.k8s.io/v1) about one object, by reason.
pub async fn event_reasons(
    client: &Client,
    ns: &str,
    name: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    Ok(api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

/// The operator, running as a process against KUBECONFIG.
pub struct Operator {
    child: Child,
    /// Its HTTP address.
    pub addr: String,
    /// Its log file.
    pub log: PathBuf,
}

/// A binary of this workspace's debug build ($CARGO_TARGET_DIR, else target/).
pub fn built_binary(name: &str) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("debug")
        .join(name)
}

/// A loopback port nobody listens on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Operator {
    /// Starts `kotel-operator` (KOTEL_OPERATOR_BIN, else target/debug/kotel-operator) and waits
    /// until it leads and its caches have synced (readiness alone does not wait for the Lease).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(None, "default").await
    }

    /// Starts it with another kubeconfig (e.g. one that impersonates the chart's
    /// ServiceAccount) and its Lease in `lease_namespace`.
    pub async fn start_with(
        kubeconfig: Option<&std::path::Path>,
        lease_namespace: &str,
    ) -> anyhow::Result<Self> {
        Self::start_env(kubeconfig, lease_namespace, &[]).await
    }

    /// Starts it with extra environment variables.
    pub async fn start_env(
        kubeconfig: Option<&std::path::Path>,
        lease_namespace: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut op = Self::spawn(kubeconfig, lease_namespace, env)?;
        let url = format!("http://{}/readyz", op.addr);
        let start = Instant::now();
        let ready = loop {
            if let Some(status) = op.child.try_wait()? {
                break Err(anyhow::anyhow!(
                    "the operator exited during start-up with {status}"
                ));
            }
            if http_get(&url).await.is_ok_and(|(code, body)| {
                code == 200 && body.contains("leader: true") && body.contains("caches synced: true")
            }) {
                break Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                break Err(anyhow::anyhow!("the operator was not ready within 60s"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        ready.with_context(|| {
            format!(
                "operator log: {}",
                std::fs::read_to_string(&op.log).unwrap_or_default()
            )
        })?;
        Ok(op)
    }

    /// Starts it without waiting for it to be ready. Its stdout (the JSON log) and stderr (an
    /// error it exits with) both go to `log`.
    pub fn spawn(
        kubeconfig: Option<&std::path::Path>,
        lease_namespace: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let bin = std::env::var_os("KOTEL_OPERATOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| built_binary("kotel-operator"));
        if !bin.exists() {
            bail!(
                "{} does not exist: build it with `cargo build -p kotel-operator` or set KOTEL_OPERATOR_BIN",
                bin.display()
            );
        }
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("kotel-operator-{port}.log"));
        let mut cmd = Command::new(&bin);
        if let Some(k) = kubeconfig {
            cmd.env("KUBECONFIG", k);
        }
        cmd.env_remove("OTEL_EXPORTER_OTLP_ENDPOINT");
        // The default filter, plus the debug line of every Deployment reconcile that
        // `reconciled` looks for.
        cmd.env(
            "KOTEL_LOG",
            "info,kube_runtime=warn,kube_client=warn,kotel_operator::controller::workloads=debug",
        );
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = std::fs::File::create(&log)?;
        let child = cmd
            .args([
                "run",
                "--http-addr",
                &addr,
                "--lease-namespace",
                lease_namespace,
            ])
            .env("POD_NAME", format!("e2e-{port}"))
            .stderr(out.try_clone()?)
            .stdout(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Operator { child, addr, log })
    }

    /// Whether the operator has reconciled the workload `ns/name` (of any kind) at least once (a positive
    /// sign to wait for before asserting that it wrote nothing there).
    pub fn reconciled(&self, ns: &str, name: &str) -> bool {
        self.reconcile_count(ns, name) > 0
    }

    /// How many reconciles of the workload `ns/name` the operator has logged (so that a test
    /// can wait for the next one before asserting that it wrote nothing).
    pub fn reconcile_count(&self, ns: &str, name: &str) -> usize {
        std::fs::read_to_string(&self.log).map_or(0, |log| {
            log.lines()
                .filter(|l| l.contains("\"message\":\"reconciled\""))
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|l| l["span"]["workload"] == name && l["span"]["namespace"] == ns)
                .count()
        })
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (it has not crashed or exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal by name (`STOP` pauses it, `CONT` resumes it, `KILL`).
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()?;
        ensure!(status.success(), "kill -{signal} failed");
        Ok(())
    }

    /// Its log lines at WARN level or above.
    pub fn warnings(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
            .map(str::to_string)
            .collect()
    }

    /// The value of an unlabelled or summed metric from /metrics.
    pub async fn metric_sum(&self, name: &str) -> anyhow::Result<f64> {
        let (_, body) = http_get(&format!("http://{}/metrics", self.addr)).await?;
        Ok(metric_sum(&body, name))
    }

    /// Its writes of one kind so far (`kotel_writes_total{kind="deployment"}`, ...).
    pub async fn writes(&self, kind: &str) -> anyhow::Result<f64> {
        let (_, m) = http_get(&format!("http://{}/metrics", self.addr)).await?;
        Ok(series_value(&m, &format!("kotel_writes_total{{kind=\"{kind}\"}}")).unwrap_or(0.0))
    }

    /// Stops it with SIGTERM and waits for it to exit.
    pub fn stop(mut self) -> anyhow::Result<std::process::ExitStatus> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let start = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                bail!("operator did not stop within 20s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sum of every series of metric `name` in a Prometheus text exposition.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of one series, written with its labels as the exposition writes them
/// (`kotel_rollouts{state="failed"}`).
pub fn series_value(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A minimal HTTP GET over loopback (status, body).
pub async fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    http_request("GET", url, None).await
}

/// A minimal HTTP/1.1 request over loopback, with a JSON body if any (status, body).
pub async fn http_request(
    method: &str,
    url: &str,
    json: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("http:// URL")?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    let body = json.unwrap_or_default();
    let content = match json {
        Some(b) => format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ),
        None => String::new(),
    };
    s.write_all(
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{content}Connection: close\r\n\r\n{body}"
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Runs a CLI (the path in `env_var`, else `name` on PATH) and returns its stdout, or an
/// error with its stderr.
fn run_cli(name: &str, env_var: &str, args: &[&str]) -> anyhow::Result<String> {
    let bin = std::env::var(env_var).unwrap_or_else(|_| name.into());
    let out = Command::new(&bin)
        .args(args)
        .output()
        .with_context(|| format!("running {bin}"))?;
    if !out.status.success() {
        bail!(
            "{name} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs kubectl (KOTEL_KUBECTL, else `kubectl` on PATH) and returns stdout.
pub fn kubectl(args: &[&str]) -> anyhow::Result<String> {
    run_cli("kubectl", "KOTEL_KUBECTL", args)
}

/// Runs helm (KOTEL_HELM, else `helm` on PATH) and returns stdout.
pub fn helm(args: &[&str]) -> anyhow::Result<String> {
    run_cli("helm", "KOTEL_HELM", args)
}

/// A copy of the current kubeconfig whose user impersonates `user`, written to `path`.
pub fn impersonating_kubeconfig(user: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let src = std::env::var("KUBECONFIG").context("KUBECONFIG")?;
    let text = std::fs::read_to_string(src.split(':').next().unwrap_or(&src))?;
    let mut cfg: Value = serde_norway::from_str(&text)?;
    for u in cfg["users"].as_array_mut().context("users")? {
        u["user"]["as"] = json!(user);
    }
    std::fs::write(path, serde_norway::to_string(&cfg)?)?;
    Ok(())
}

/// A minimal OTLP/HTTP receiver on loopback: counts the requests per path (e.g. `/v1/traces`)
/// and answers 200, so the operator's own exporter has a live endpoint.
pub struct OtlpHttpSink {
    /// Its base URL.
    pub url: String,
    /// (path, body bytes) of every request received.
    pub received: std::sync::Arc<std::sync::Mutex<Vec<(String, usize)>>>,
}

impl OtlpHttpSink {
    /// Starts it on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let received: std::sync::Arc<std::sync::Mutex<Vec<(String, usize)>>> = Default::default();
        let r = received.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        let n = match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() < end + 4 + len {
                            continue;
                        }
                        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                        r.lock().unwrap().push((path, len));
                        buf.drain(..end + 4 + len);
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n")
                            .await;
                    }
                });
            }
        });
        Ok(OtlpHttpSink { url, received })
    }
}

/// A child process that is killed when the test ends, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cmd` with stdout and stderr in `log`.
pub fn spawn(cmd: &mut Command, log: &std::path::Path) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log)?;
    Ok(Proc(
        cmd.stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?,
    ))
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// A fresh directory under the system's temp dir.
pub fn tempdir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", free_port()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A binary `e2e/controlplane.sh build` made: on PATH, else in `~/.cache/kotel-e2e/bin`.
pub fn built_tool(name: &str) -> anyhow::Result<PathBuf> {
    which(name)
        .or_else(|| {
            let p = std::env::var_os("HOME")
                .map(PathBuf::from)?
                .join(".cache/kotel-e2e/bin")
                .join(name);
            p.is_file().then_some(p)
        })
        .ok_or_else(|| anyhow::anyhow!("{name} not found: run e2e/controlplane.sh build"))
}

/// The collector the tests run (built by `e2e/controlplane.sh build` with ocb).
pub fn otelcol() -> anyhow::Result<PathBuf> {
    built_tool("otelcol-kotel")
}

/// The environment a kubelet would give a container with `env`: values, the pod-name,
/// node-name and pod-label field references, and `$(VAR)` references to earlier variables
/// expanded.
pub fn container_env(
    env: &[EnvVar],
    pod: &str,
    node: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for e in env {
        let field = e
            .value_from
            .as_ref()
            .and_then(|f| f.field_ref.as_ref())
            .map(|f| f.field_path.as_str());
        let label = field
            .and_then(|p| p.strip_prefix("metadata.labels['"))
            .and_then(|p| p.strip_suffix("']"));
        let raw = match (&e.value, field) {
            (Some(v), _) => v.clone(),
            (None, Some("metadata.name")) => pod.to_string(),
            (None, Some("spec.nodeName")) => node.to_string(),
            (None, Some(_)) if label.is_some() => match labels.get(label.unwrap_or_default()) {
                Some(v) => v.clone(),
                None => continue,
            },
            _ => continue,
        };
        let mut value = raw;
        for (k, v) in &out {
            value = value.replace(&format!("$({k})"), v);
        }
        out.push((e.name.clone(), value));
    }
    out
}

/// The inference app as a local process: a freshly trained model, serving on a free port
/// with exactly the OTEL_* env it is given (inherited OTEL_* variables are removed).
pub struct InferenceApp {
    _proc: Proc,
    /// Its `host:port`.
    pub addr: String,
}

impl InferenceApp {
    /// The debug build of `inference-app`, or an error that says how to build it.
    pub fn binary() -> anyhow::Result<PathBuf> {
        let bin = built_binary("inference-app");
        if !bin.exists() {
            bail!(
                "{} does not exist: cargo build -p inference-app",
                bin.display()
            );
        }
        Ok(bin)
    }

    /// Trains a model under `work`, starts `serve` with `env` and waits until it is ready.
    pub async fn start(
        bin: &std::path::Path,
        work: &std::path::Path,
        env: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let model = work.join("model");
        let trained = Command::new(bin)
            .args(["train", "--out"])
            .arg(&model)
            .output()?;
        assert!(
            trained.status.success(),
            "{}",
            String::from_utf8_lossy(&trained.stderr)
        );
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--addr", &addr, "--model-dir"])
            .arg(&model);
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")) {
            cmd.env_remove(k);
        }
        cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let proc = spawn(&mut cmd, &work.join("app.log"))?;
        wait_for("the app to be ready", Duration::from_secs(30), || async {
            Ok(http_get(&format!("http://{addr}/ready"))
                .await
                .is_ok_and(|(c, _)| c == 200))
        })
        .await?;
        Ok(InferenceApp { _proc: proc, addr })
    }

    /// Sends `requests` predictions, one after another, each of which must succeed.
    pub async fn load(&self, requests: u32) -> anyhow::Result<()> {
        for i in 0..requests {
            let body = format!(r#"{{"features": [{}]}}"#, 1000 + 10 * i);
            let url = format!("http://{}/predict", self.addr);
            let (code, reply) = http_request("POST", &url, Some(&body)).await?;
            ensure!(code == 200, "POST /predict {body}: {code} {reply}");
        }
        Ok(())
    }
}

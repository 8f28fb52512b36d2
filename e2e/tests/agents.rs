//! Language agents on running pods: an application with no OpenTelemetry code is traced by one
//! annotation. The agent image is built from its registry (`agents/build.sh`), the application
//! image from Debian's runtime with its framework from the same registry, and a real Collector
//! (its `debug` exporter) is the sink. Run with --test-threads=1.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kotel_e2e::cluster::{self, image, require_node};
use kotel_e2e::debug_exporter::{self, Signal};
use kotel_e2e::workloads::template;
use kotel_e2e::*;
use kotel_operator::workload::Kind;
use kube::api::Api;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(180);
/// The trace a request joins through its `traceparent` header.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The sink: a gateway Collector that prints everything it receives.
fn gateway() -> Value {
    json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Collector", "metadata": {"name": "sink"},
        "spec": {"mode": "deployment", "replicas": 1, "image": image("otelcol-kotel"), "config": {
            "receivers": {"otlp": {"protocols": {"http": {"endpoint": "0.0.0.0:4318"}}}},
            "exporters": {"debug": {"verbosity": "detailed"}},
            "service": {"pipelines": {
                "traces": {"receivers": ["otlp"], "exporters": ["debug"]},
                "logs": {"receivers": ["otlp"], "exporters": ["debug"]}}}}}})
}

/// A Deployment of `image` listening on 8000, restricted-compliant, with a second container
/// (`side`) that the agent must leave alone, annotated with `annotations`.
fn app(name: &str, image: &str, annotations: Value, env: Value) -> Value {
    let restricted = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}});
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name, "app.kubernetes.io/name": name}},
                "spec": {"terminationGracePeriodSeconds": 1,
                    "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [
                        {"name": "app", "image": image, "env": env,
                         "ports": [{"containerPort": 8000}],
                         "readinessProbe": {"httpGet": {"path": "/hello", "port": 8000}, "periodSeconds": 1},
                         "securityContext": restricted},
                        {"name": "side", "image": cluster::pause_image(), "securityContext": restricted}]}}}})
}

async fn the_pod(client: &Client, ns: &str, app: &str) -> anyhow::Result<Pod> {
    let pods = cluster::pods(client, ns, &format!("app={app}")).await?;
    pods.into_iter().next().context("no pod")
}

/// What the sink printed, over all its pods.
async fn received(client: &Client, ns: &str) -> anyhow::Result<Vec<debug_exporter::Resource>> {
    cluster::collector_output(client, ns, "app.kubernetes.io/instance").await
}

/// One language's story: the user's Deployment of `<language>-app`, then annotated
/// `kotel.dev/inject-<language>` (with only `app` selected) in a restricted namespace; the
/// agent's init container, mount and activation; server spans at the sink whose `http.route`
/// satisfies `route` for a GET of `path`; a `traceparent` joining its trace; then `extra`
/// (more checks, given the namespace, the sink's namespace and the pod); and the exact
/// template back when the annotation goes.
async fn story<F, Fut>(
    language: &str,
    path: &str,
    route: fn(&str) -> bool,
    extra: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Client, String, String, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let client = client().await?;
    install_crds(&client).await?;
    require_node(&client).await?;
    let obs = TestNamespace::create(&client, &format!("sink-{language}"), json!({})).await?;
    let ns = TestNamespace::create_with(
        &client,
        &format!("agent-{language}"),
        json!({}),
        json!({"pod-security.kubernetes.io/enforce": "restricted"}),
    )
    .await?;
    let op = Operator::start().await?;
    obs.apply(gateway()).await?;
    cluster::wait_rollout(&client, &obs.name, "sink-collector").await?;
    ns.apply(json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Instrumentation",
        "metadata": {"name": "otel"},
        "spec": {"exporter": {"endpoint": format!("http://sink-collector.{}.svc.cluster.local:4318", obs.name)},
                 language: {"image": image(&format!("{language}-agent"))}}}))
        .await?;

    // The user's Deployment as they wrote it, then the same with the annotation.
    let app_image = image(&format!("{language}-app"));
    let plain = app("shop", &app_image, json!({}), json!([]));
    ns.apply(plain.clone()).await?;
    cluster::wait_rollout(&client, &ns.name, "shop").await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let original = template(
        Kind::Deployment,
        &serde_json::to_value(deployments.get("shop").await?)?,
    );
    let annotations =
        json!({format!("kotel.dev/inject-{language}"): "true", "kotel.dev/container-names": "app"});
    ns.apply(app("shop", &app_image, annotations, json!([])))
        .await?;
    wait_for("the agent in the pod template", T, || async {
        Ok(template_hash(&deployments.get("shop").await?).is_some())
    })
    .await?;
    cluster::wait_rollout(&client, &ns.name, "shop").await?;

    // The pod: the agent copied by a hardened init container that finished within its
    // resources, mounted and activated in `app` only.
    let agent = format!("kotel-agent-{language}");
    let pod = the_pod(&client, &ns.name, "shop").await?;
    let spec = pod.spec.clone().unwrap();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .find(|c| c.name == agent)
        .context("the agent's init container")?;
    assert!(
        init.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .is_some_and(|l| l.contains_key("memory"))
    );
    let state = pod
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.as_ref())
        .and_then(|s| s.iter().find(|c| c.name == agent))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .context("the init container's end")?;
    assert_eq!(
        (state.exit_code, state.reason.as_deref()),
        (0, Some("Completed"))
    );
    let app_c = spec.containers.iter().find(|c| c.name == "app").unwrap();
    let side = spec.containers.iter().find(|c| c.name == "side").unwrap();
    let mount = format!("/otel-auto-instrumentation-{language}");
    let activation = app_c
        .env
        .iter()
        .flatten()
        .filter(|e| ["PYTHONPATH", "JAVA_TOOL_OPTIONS", "NODE_OPTIONS"].contains(&e.name.as_str()))
        .filter_map(|e| e.value.clone())
        .collect::<Vec<_>>();
    assert!(
        activation.len() == 1 && activation[0].contains(&mount),
        "{activation:?}"
    );
    assert!(
        app_c
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == agent)
    );
    assert!(
        side.env.is_none() && !side.volume_mounts.iter().flatten().any(|m| m.name == agent),
        "side is not selected: {side:?}"
    );

    // Requests produce server spans with the route, the service and the k8s attributes; one
    // with a traceparent joins that trace.
    let pod_name = pod.name_any();
    cluster::proxy_get(&client, &ns.name, &pod_name, 8000, path).await?;
    let traceparent = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    cluster::proxy_get_with(
        &client,
        &ns.name,
        &pod_name,
        8000,
        "/hello",
        &[("traceparent", &traceparent)],
    )
    .await?;
    let want_ns = ns.name.clone();
    wait_for(
        &format!("server spans from the {language} agent"),
        T,
        || async {
            let r = received(&client, &obs.name).await?;
            let ours: Vec<_> = r
                .iter()
                .filter(|r| {
                    r.signal == Signal::Traces
                        && r.attr("service.name") == Some("shop")
                        && r.attr("k8s.deployment.name") == Some("shop")
                        && r.attr("k8s.namespace.name") == Some(want_ns.as_str())
                        && r.attr("k8s.pod.name") == Some(pod_name.as_str())
                })
                .flat_map(|r| &r.spans)
                .filter(|s| s.kind == "Server")
                .collect();
            let routed = ours
                .iter()
                .any(|s| s.attributes.get("http.route").is_some_and(|r| route(r)));
            let joined = ours.iter().any(|s| s.trace_id == TRACE_ID);
            Ok(routed && joined)
        },
    )
    .await?;

    extra(
        client.clone(),
        ns.name.clone(),
        obs.name.clone(),
        pod_name.clone(),
    )
    .await?;

    // Removing the annotation rolls the pod back to the user's template, exactly.
    ns.apply(plain).await?;
    wait_for("the template back to the user's", T, || async {
        let now = template(
            Kind::Deployment,
            &serde_json::to_value(deployments.get("shop").await?)?,
        );
        Ok(now == original)
    })
    .await?;
    cluster::wait_rollout(&client, &ns.name, "shop").await?;
    let pod = the_pod(&client, &ns.name, "shop").await?;
    assert!(
        pod.spec.unwrap().init_containers.is_none(),
        "no agent left in the pod"
    );
    op.stop()?;
    ns.cleanup().await;
    obs.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_python_app_with_no_opentelemetry_code_is_traced_by_one_annotation() -> anyhow::Result<()>
{
    story(
        "python",
        "/items/7?q=x",
        |r| r == "/items/{item_id}",
        |client, ns, obs, pod| async move {
            // The house-price prediction, as the inference app serves it: a POST, traced too.
            let features = json!({"features": [1500.0]});
            let reply =
                cluster::proxy_post(&client, &ns, &pod, 8000, "/predict", &features).await?;
            assert!(reply.contains("price"), "{reply}");
            wait_for("a server span of POST /predict", T, || async {
                Ok(received(&client, &obs)
                    .await?
                    .iter()
                    .flat_map(|r| &r.spans)
                    .any(|s| {
                        s.kind == "Server"
                            && s.attributes.get("http.route").map(String::as_str)
                                == Some("/predict")
                    }))
            })
            .await?;
            // A workload that sets PYTHONPATH itself keeps it, is told what to add, and keeps
            // working.
            let own = app(
                "own",
                &image("python-app"),
                json!({"kotel.dev/inject-python": "true", "kotel.dev/container-names": "app"}),
                json!([{"name": "PYTHONPATH", "value": "/app"}]),
            );
            apply_json(&client, &ns, own, "kotel-e2e-user").await?;
            wait_for("an AgentNotInjected Event naming PYTHONPATH", T, || async {
                Ok(event_reasons(&client, &ns, "own")
                    .await?
                    .iter()
                    .any(|(r, n)| {
                        r == "AgentNotInjected"
                            && n.contains("PYTHONPATH")
                            && n.contains("/otel-auto-instrumentation-python")
                    }))
            })
            .await?;
            let d = cluster::wait_rollout(&client, &ns, "own").await?;
            assert_eq!(
                env_value(&template_env(&d, "app"), "PYTHONPATH"),
                Some("/app")
            );
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn a_java_app_with_no_opentelemetry_code_is_traced_by_one_annotation() -> anyhow::Result<()> {
    // The JDK's own server routes by context path.
    story(
        "java",
        "/items/7",
        |r| r.starts_with("/items"),
        |_, _, _, _| async { Ok(()) },
    )
    .await
}

#[tokio::test]
async fn a_nodejs_app_with_no_opentelemetry_code_is_traced_by_one_annotation() -> anyhow::Result<()>
{
    story(
        "nodejs",
        "/items/7",
        |r| r == "/items/:itemId",
        |_, _, _, _| async { Ok(()) },
    )
    .await
}

//! kotel against a real API server and controller-manager (whatever KUBECONFIG names).
//! Each test has its own namespace and its own operator process; run with --test-threads=1
//! so that one operator's write counter sees only its own test.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use kotel_e2e::*;
use kotel_operator::annotations::template_hash as template_hash_of;
use kotel_operator::collector::Collector;
use kotel_operator::instrumentation::Instrumentation;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(30);

fn instrumentation(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Instrumentation", "metadata": {"name": name}, "spec": spec})
}

/// The Instrumentation most tests inject from: `otel`, exporting to a gateway by its Service name.
fn otel() -> Value {
    instrumentation(
        "otel",
        json!({"exporter": {"endpoint": "http://gw.obs:4318"}}),
    )
}

fn sidecar_collector(name: &str, config: Value) -> Value {
    json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Collector", "metadata": {"name": name},
           "spec": {"mode": "sidecar", "config": config}})
}

fn collector_config() -> Value {
    json!({
        "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
        "processors": {"batch": {}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["debug"]}}}
    })
}

async fn setup(prefix: &str, ns_annotations: Value) -> anyhow::Result<(Client, TestNamespace)> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, prefix, ns_annotations).await?;
    Ok((client, ns))
}

async fn get_deploy(client: &Client, ns: &str, name: &str) -> anyhow::Result<Deployment> {
    Ok(Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await?)
}

async fn wait_deploy(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    cond: impl Fn(&Deployment) -> bool,
) -> anyhow::Result<Deployment> {
    wait_for(what, T, || async {
        Ok(cond(&get_deploy(client, ns, name).await?))
    })
    .await?;
    get_deploy(client, ns, name).await
}

async fn annotate(
    client: &Client,
    ns: &str,
    name: &str,
    key: &str,
    value: Option<&str>,
) -> anyhow::Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let patch = json!({"metadata": {"annotations": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

fn kotel_owns_anything(d: &Deployment) -> bool {
    d.managed_fields().iter().any(|m| {
        m.manager.as_deref() == Some("kotel")
            && m.fields_v1.as_ref().is_some_and(|f| {
                f.0.as_object()
                    .is_some_and(|o| o.keys().any(|k| k == "f:spec"))
            })
    })
}

#[tokio::test]
async fn crds_install_and_kubectl_shows_printer_columns() -> anyhow::Result<()> {
    let (client, ns) = setup("crds", json!({})).await?;
    let op = Operator::start().await?;
    ns.apply(instrumentation(
        "traces",
        json!({"exporter": {"endpoint": "http://gw.obs:4318"}, "sampler": {"type": "traceidratio", "argument": 0.1}}),
    ))
    .await?;
    ns.apply(sidecar_collector("side", collector_config()))
        .await?;
    let api: Api<Collector> = Api::namespaced(client.clone(), &ns.name);
    wait_for("Collector status", T, || async {
        Ok(api
            .get("side")
            .await?
            .status
            .is_some_and(|s| s.image.is_some()))
    })
    .await?;
    let out = kubectl(&["get", "kinst,kcol", "-n", &ns.name])?;
    for needle in [
        "ENDPOINT",
        "SAMPLER",
        "WORKLOADS",
        "AGE",
        "http://gw.obs:4318",
        "traceidratio",
        "MODE",
        "IMAGE",
        "READY",
        "sidecar",
        "otel/opentelemetry-collector-contrib",
    ] {
        assert!(
            out.contains(needle),
            "`kubectl get kinst,kcol` lacks {needle}:\n{out}"
        );
    }
    let all = kubectl(&["get", "kotel", "-n", &ns.name, "-o", "name"])?;
    assert!(
        all.contains("instrumentation.kotel.dev/traces")
            && all.contains("collector.kotel.dev/side"),
        "{all}"
    );
    let explain = kubectl(&["explain", "instrumentation.spec.exporter.endpoint"])?;
    assert!(explain.contains("The OTLP endpoint URL"), "{explain}");

    // Schema validation: an unknown protocol and a bad URL are refused.
    for bad in [
        json!({"exporter": {"endpoint": "http://x:4318", "protocol": "thrift"}}),
        json!({"exporter": {"endpoint": "not a url"}}),
    ] {
        let err = ns.apply(instrumentation("bad", bad.clone())).await;
        assert!(err.is_err(), "the API server accepted {bad}");
    }
    // The sampler ratio, a number or a string as upstream writes it, is range-checked by
    // kotel (a structural schema cannot type it): Ready=False naming the field, and an Event.
    ns.apply(instrumentation(
        "upstream",
        json!({"exporter": {"endpoint": "http://x:4318"}, "sampler": {"type": "parentbased_traceidratio", "argument": "0.25"},
               "env": [{"name": "OTEL_TRACES_SAMPLER", "value": "always_on"}]}),
    ))
    .await?;
    ns.apply(instrumentation(
        "ratio",
        json!({"exporter": {"endpoint": "http://x:4318"}, "sampler": {"type": "traceidratio", "argument": "1.5"}}),
    ))
    .await?;
    let api: Api<Instrumentation> = Api::namespaced(client.clone(), &ns.name);
    wait_for("Ready=False naming spec.sampler.argument", T, || async {
        let s: Value = serde_json::to_value(
            Api::<kube::core::DynamicObject>::namespaced_with(
                client.clone(),
                &ns.name,
                &kube::api::ApiResource::erase::<Instrumentation>(&()),
            )
            .get("ratio")
            .await?,
        )?;
        Ok(s["status"]["conditions"][0]["reason"] == "InvalidSpec"
            && s["status"]["conditions"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("spec.sampler.argument 1.5")))
    })
    .await?;
    // Its env replaces the sampler kotel derives from spec.sampler: accepted, and said.
    wait_for(
        "the upstream-style Instrumentation is Ready, naming spec.env's OTEL_TRACES_SAMPLER",
        T,
        || async {
            Ok(api.get("upstream").await?.status.is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Ready"
                        && c.status == "True"
                        && c.message.contains("spec.env sets OTEL_TRACES_SAMPLER")
                })
            }))
        },
    )
    .await?;
    assert!(
        event_reasons(&client, &ns.name, "ratio")
            .await?
            .iter()
            .any(|(r, n)| r == "InvalidSpec" && n.contains("between 0 and 1")),
        "an InvalidSpec Event"
    );
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn an_upstream_instrumentation_applies_with_only_its_api_version_changed()
-> anyhow::Result<()> {
    let (client, ns) = setup("upstream", json!({})).await?;
    let op = Operator::start().await?;
    let file = repo_root().join("e2e/testdata/upstream-instrumentation.yaml");
    kubectl(&["apply", "-n", &ns.name, "-f", file.to_str().unwrap()])?;
    // The workload's annotation: upstream's `instrumentation.opentelemetry.io/` prefix
    // replaced by `kotel.dev/`, nothing else.
    ns.apply(deployment(
        "shop",
        json!({"kotel.dev/inject-python": "true"}),
        json!([]),
    ))
    .await?;
    let d = wait_deploy(&client, &ns.name, "shop", "the Python agent", |d| {
        template_hash(d).is_some()
    })
    .await?;
    let env = template_env(&d, "app");
    assert_eq!(
        env_value(&env, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://otel-collector:4318")
    );
    assert_eq!(env_value(&env, "OTEL_TRACES_SAMPLER_ARG"), Some("0.25"));
    assert_eq!(
        env_value(&env, "OTEL_METRICS_EXPORTER"),
        Some("otlp_proto_http")
    );
    assert!(
        env_value(&env, "PYTHONPATH")
            .is_some_and(|v| v.contains("/otel-auto-instrumentation-python"))
    );
    let init = d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .clone()
        .unwrap_or_default();
    assert_eq!(
        init.iter()
            .map(|c| (c.name.as_str(), c.image.as_deref()))
            .collect::<Vec<_>>(),
        [(
            "kotel-agent-python",
            Some("registry.example.com/autoinstrumentation-python:0.64b0")
        )]
    );
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn annotate_injects_env_into_deployment_and_new_replicaset() -> anyhow::Result<()> {
    let (client, ns) = setup("inject", json!({})).await?;
    let op = Operator::start().await?;
    ns.apply(otel()).await?;
    ns.apply(deployment(
        "shop",
        json!({}),
        json!([{"name": "FOO", "value": "bar"}]),
    ))
    .await?;
    let before = replicasets(&client, &ns.name, "shop").await;
    annotate(&client, &ns.name, "shop", "kotel.dev/inject", Some("true")).await?;

    let d = wait_deploy(&client, &ns.name, "shop", "injected env", |d| {
        template_hash(d).is_some()
    })
    .await?;
    let env = template_env(&d, "app");
    let names: Vec<&str> = env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names[0], "FOO", "the user's variable stays first");
    assert_eq!(env_value(&env, "FOO"), Some("bar"));
    assert_eq!(env_value(&env, "OTEL_SERVICE_NAME"), Some("shop"));
    assert_eq!(
        env_value(&env, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://gw.obs:4318")
    );
    let attrs = env_value(&env, "OTEL_RESOURCE_ATTRIBUTES").unwrap();
    assert!(
        attrs.contains(&format!("k8s.namespace.name={}", ns.name)),
        "{attrs}"
    );
    assert!(
        !attrs.contains("service.version"),
        "no app.kubernetes.io/version label, no version (never the image tag): {attrs}"
    );
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("OTEL_RESOURCE_ATTRIBUTES_POD_NAME") < pos("OTEL_RESOURCE_ATTRIBUTES"));

    // The real controller-manager stamps a ReplicaSet from the patched template.
    let hash = template_hash(&d).unwrap();
    wait_for("a ReplicaSet with the injected template", T, || async {
        let rs = replicasets(&client, &ns.name, "shop").await?;
        Ok(rs.first().is_some_and(|rs| {
            let t = &rs.spec.as_ref().unwrap().template.as_ref().unwrap();
            let env = t.spec.as_ref().unwrap().containers[0]
                .env
                .clone()
                .unwrap_or_default();
            template_hash_of(t) == Some(hash.as_str())
                && env_value(&env, "OTEL_SERVICE_NAME") == Some("shop")
        }))
    })
    .await?;
    assert!(before.is_ok());
    wait_for("an Injected Event", T, || async {
        let events = event_reasons(&client, &ns.name, "shop").await?;
        Ok(events.iter().any(|(r, _)| r == "Injected"))
    })
    .await?;

    let inst: Api<Instrumentation> = Api::namespaced(client.clone(), &ns.name);
    wait_for("Instrumentation status workloads=1", T, || async {
        Ok(inst.get("otel").await?.status.is_some_and(|s| {
            s.workloads == 1
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        }))
    })
    .await?;
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn instrumentation_change_rolls_out_a_new_replicaset() -> anyhow::Result<()> {
    let (client, ns) = setup("roll", json!({})).await?;
    let op = Operator::start().await?;
    ns.apply(otel()).await?;
    ns.apply(deployment(
        "api",
        json!({"kotel.dev/inject": "otel"}),
        json!([]),
    ))
    .await?;
    let d = wait_deploy(&client, &ns.name, "api", "first injection", |d| {
        template_hash(d).is_some()
    })
    .await?;
    let first = template_hash(&d).unwrap();

    ns.apply(instrumentation(
        "otel",
        json!({"exporter": {"endpoint": "http://gw.obs:4318"}, "sampler": {"type": "always_off"}}),
    ))
    .await?;
    let d = wait_deploy(&client, &ns.name, "api", "a new config hash", |d| {
        template_hash(d).is_some_and(|h| h != first)
    })
    .await?;
    let second = template_hash(&d).unwrap();
    assert_eq!(
        env_value(&template_env(&d, "app"), "OTEL_TRACES_SAMPLER"),
        Some("always_off")
    );
    wait_for("a ReplicaSet for the new hash", T, || async {
        let rs = replicasets(&client, &ns.name, "api").await?;
        let hashes: Vec<Option<String>> = rs
            .iter()
            .map(|r| template_hash_of(r.spec.as_ref()?.template.as_ref()?).map(str::to_string))
            .collect();
        Ok(hashes.first() == Some(&Some(second.clone())) && hashes.contains(&Some(first.clone())))
    })
    .await?;
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

/// One user change, one rollout: `service.version` follows the pod's `app.kubernetes.io/version`
/// label through the downward API, so a user's apply of a new image and label makes exactly
/// one new ReplicaSet (kotel deriving the version from the image tag made a second one).
#[tokio::test]
async fn an_image_and_version_bump_rolls_out_once() -> anyhow::Result<()> {
    let (client, ns) = setup("version", json!({})).await?;
    let op = Operator::start().await?;
    ns.apply(otel()).await?;
    let web = |version: &str| {
        let mut d = deployment("web", json!({"kotel.dev/inject": "otel"}), json!([]));
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] = json!(version);
        d["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!(format!("example.com/shop/web:{version}"));
        d
    };
    ns.apply(web("1.0")).await?;
    let d = wait_deploy(&client, &ns.name, "web", "injection", |d| {
        template_hash(d).is_some()
    })
    .await?;
    let attrs = env_value(&template_env(&d, "app"), "OTEL_RESOURCE_ATTRIBUTES")
        .unwrap()
        .to_string();
    assert!(
        attrs.contains("service.version=$(OTEL_RESOURCE_ATTRIBUTES_VERSION)"),
        "{attrs}"
    );
    let generation = d.metadata.generation;
    wait_for("the injected ReplicaSet", T, || async {
        let rs = replicasets(&client, &ns.name, "web").await?;
        Ok(rs
            .first()
            .and_then(|r| template_hash_of(r.spec.as_ref()?.template.as_ref()?))
            == template_hash(&d).as_deref())
    })
    .await?;
    let before = replicasets(&client, &ns.name, "web").await?.len();
    let reconciles = op.metric_sum("kotel_reconciles_total").await?;

    // The user's one apply: new image, new version label.
    ns.apply(web("1.1")).await?;
    // A positive sign that kotel saw it before counting: it reconciled again.
    wait_for("kotel to reconcile the bump", T, || async {
        Ok(op.metric_sum("kotel_reconciles_total").await? > reconciles)
    })
    .await?;
    let d = get_deploy(&client, &ns.name, "web").await?;
    assert_eq!(
        d.metadata.generation,
        generation.map(|g| g + 1),
        "the user's apply is the only new generation"
    );
    let rs = replicasets(&client, &ns.name, "web").await?;
    assert_eq!(rs.len(), before + 1, "one new ReplicaSet");
    let t = rs[0].spec.as_ref().unwrap().template.as_ref().unwrap();
    assert_eq!(
        t.metadata.as_ref().unwrap().labels.as_ref().unwrap()["app.kubernetes.io/version"],
        "1.1"
    );
    let env = t.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let version = container_env(
        &env,
        "web-x",
        "node",
        t.metadata.as_ref().unwrap().labels.as_ref().unwrap(),
    );
    let attrs = &version
        .iter()
        .find(|(k, _)| k == "OTEL_RESOURCE_ATTRIBUTES")
        .unwrap()
        .1;
    assert!(attrs.contains("service.version=1.1"), "{attrs}");
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

/// A rollout of kotel's injection that cannot finish (its image cannot be pulled) is reported
/// once as `RolloutStuck` and counted as failed; kotel rolls nothing back. Needs a node (or any
/// cluster whose pods are scheduled) for the controller-manager to see the deadline pass.
#[tokio::test]
async fn a_stuck_rollout_is_reported_and_not_rolled_back() -> anyhow::Result<()> {
    let (client, ns) = setup("stuck", json!({})).await?;
    kotel_e2e::cluster::require_node(&client).await?;
    let op = Operator::start().await?;
    ns.apply(otel()).await?;
    let mut d = deployment("web", json!({"kotel.dev/inject": "otel"}), json!([]));
    d["spec"]["progressDeadlineSeconds"] = json!(10);
    ns.apply(d).await?;
    let injected = wait_deploy(&client, &ns.name, "web", "injection", |d| {
        template_hash(d).is_some()
    })
    .await?;
    wait_for("a RolloutStuck Event", Duration::from_secs(90), || async {
        Ok(event_reasons(&client, &ns.name, "web")
            .await?
            .iter()
            .any(|(r, _)| r == "RolloutStuck"))
    })
    .await?;
    // The gauges follow within one status period (5 s).
    wait_for(
        "kotel_rollouts{state=failed} >= 1",
        Duration::from_secs(30),
        || async {
            let (_, body) = http_get(&format!("http://{}/metrics", op.addr)).await?;
            Ok(series_value(&body, "kotel_rollouts{state=\"failed\"}").is_some_and(|n| n >= 1.0))
        },
    )
    .await?;
    let events = event_reasons(&client, &ns.name, "web").await?;
    let stuck: Vec<_> = events.iter().filter(|(r, _)| r == "RolloutStuck").collect();
    assert_eq!(stuck.len(), 1, "reported once: {events:?}");
    assert!(stuck[0].1.contains("does not roll back"), "{}", stuck[0].1);
    // Nothing rolled back: the template is still kotel's injected one.
    let now = get_deploy(&client, &ns.name, "web").await?;
    assert_eq!(template_hash(&now), template_hash(&injected));
    assert_eq!(now.metadata.generation, injected.metadata.generation);
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn removing_the_annotation_removes_exactly_what_kotel_added() -> anyhow::Result<()> {
    let (client, ns) = setup("remove", json!({})).await?;
    let op = Operator::start().await?;
    ns.apply(otel()).await?;
    ns.apply(sidecar_collector("side", collector_config()))
        .await?;
    let user_env = json!([{"name": "OTEL_SERVICE_NAME", "value": "users-own-name"}, {"name": "FOO", "value": "bar"}]);
    ns.apply(deployment(
        "web",
        json!({"kotel.dev/inject": "true", "kotel.dev/sidecar": "true"}),
        user_env,
    ))
    .await?;
    let d = wait_deploy(&client, &ns.name, "web", "injection", |d| {
        template_hash(d).is_some()
    })
    .await?;
    let env = template_env(&d, "app");
    assert_eq!(
        env_value(&env, "OTEL_SERVICE_NAME"),
        Some("users-own-name"),
        "the user's value wins"
    );
    assert_eq!(
        env.iter().filter(|e| e.name == "OTEL_SERVICE_NAME").count(),
        1
    );
    assert_eq!(
        env_value(&env, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://localhost:4318")
    );
    let init = d
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .clone()
        .unwrap();
    assert_eq!(init[0].name, "kotel-collector");
    assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
    wait_for(
        "a UserVariableKept Event naming OTEL_SERVICE_NAME",
        T,
        || async {
            let events = event_reasons(&client, &ns.name, "web").await?;
            Ok(events
                .iter()
                .any(|(r, n)| r == "UserVariableKept" && n.contains("OTEL_SERVICE_NAME")))
        },
    )
    .await?;

    // Remove both annotations: the template returns to exactly what the user wrote.
    annotate(&client, &ns.name, "web", "kotel.dev/inject", None).await?;
    annotate(&client, &ns.name, "web", "kotel.dev/sidecar", None).await?;
    let d = wait_deploy(&client, &ns.name, "web", "removal", |d| {
        template_hash(d).is_none()
    })
    .await?;
    let spec = d.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    // Exactly what the user applied: their two variables, values unchanged, in their order.
    let env: Vec<(String, Option<String>)> = spec.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    assert_eq!(
        env,
        vec![
            (
                "OTEL_SERVICE_NAME".to_string(),
                Some("users-own-name".to_string())
            ),
            ("FOO".to_string(), Some("bar".to_string())),
        ],
        "the user's env is untouched and nothing of kotel's is left"
    );
    assert_eq!(spec.containers.len(), 1);
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some("example.com/shop/app:1.4.2")
    );
    assert!(
        spec.init_containers.as_ref().is_none_or(|i| i.is_empty()),
        "sidecar removed"
    );
    assert!(
        !kotel_owns_anything(&d),
        "kotel still owns fields: {:?}",
        d.managed_fields()
    );
    wait_for("a Removed Event", T, || async {
        let events = event_reasons(&client, &ns.name, "web").await?;
        Ok(events.iter().any(|(r, _)| r == "Removed"))
    })
    .await?;
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn namespace_default_with_deployment_opt_out() -> anyhow::Result<()> {
    let (client, ns) = setup("nsdefault", json!({"kotel.dev/inject": "true"})).await?;
    let op = Operator::start().await?;
    ns.apply(otel()).await?;
    ns.apply(deployment("in", json!({}), json!([]))).await?;
    ns.apply(deployment(
        "out",
        json!({"kotel.dev/inject": "false"}),
        json!([]),
    ))
    .await?;
    wait_deploy(&client, &ns.name, "in", "namespace-level injection", |d| {
        template_hash(d).is_some()
    })
    .await?;
    // A positive sign that the operator handled "out" as well; it must stay untouched.
    wait_for("kotel to reconcile out", T, || async {
        Ok(op.reconciled(&ns.name, "out"))
    })
    .await?;
    let out = get_deploy(&client, &ns.name, "out").await?;
    assert!(template_hash(&out).is_none());
    assert!(env_value(&template_env(&out, "app"), "OTEL_SERVICE_NAME").is_none());
    assert!(!kotel_owns_anything(&out));
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn ambiguous_inject_true_is_an_event_not_a_guess() -> anyhow::Result<()> {
    let (client, ns) = setup("ambiguous", json!({})).await?;
    let op = Operator::start().await?;
    ns.apply(instrumentation(
        "one",
        json!({"exporter": {"endpoint": "http://a:4318"}}),
    ))
    .await?;
    ns.apply(instrumentation(
        "two",
        json!({"exporter": {"endpoint": "http://b:4318"}}),
    ))
    .await?;
    ns.apply(deployment(
        "amb",
        json!({"kotel.dev/inject": "true"}),
        json!([]),
    ))
    .await?;
    wait_for("an AmbiguousInstrumentation Event", T, || async {
        let ev = event_reasons(&client, &ns.name, "amb").await?;
        Ok(ev
            .iter()
            .any(|(r, n)| r == "AmbiguousInstrumentation" && n.contains("one, two")))
    })
    .await?;
    let d = get_deploy(&client, &ns.name, "amb").await?;
    assert!(template_hash(&d).is_none());
    assert!(!kotel_owns_anything(&d));
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn invalid_collector_config_never_reaches_the_pod_template() -> anyhow::Result<()> {
    let (client, ns) = setup("badconfig", json!({})).await?;
    let op = Operator::start().await?;
    ns.apply(sidecar_collector("side", collector_config()))
        .await?;
    ns.apply(deployment(
        "svc",
        json!({"kotel.dev/sidecar": "side"}),
        json!([]),
    ))
    .await?;
    let d = wait_deploy(&client, &ns.name, "svc", "sidecar", |d| {
        template_hash(d).is_some()
    })
    .await?;
    let good = template_hash(&d).unwrap();

    let mut bad = collector_config();
    bad["service"]["pipelines"]["traces"]["exporters"] = json!(["otlp/nowhere"]);
    ns.apply(sidecar_collector("side", bad)).await?;
    let api: Api<Collector> = Api::namespaced(client.clone(), &ns.name);
    wait_for("ConfigValid=False", T, || async {
        Ok(api.get("side").await?.status.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "ConfigValid"
                    && c.status == "False"
                    && c.message.contains("otlp/nowhere")
            })
        }))
    })
    .await?;
    wait_for("an InvalidConfig Event", T, || async {
        Ok(event_reasons(&client, &ns.name, "side")
            .await?
            .iter()
            .any(|(r, _)| r == "InvalidConfig"))
    })
    .await?;
    // A positive sign that the Deployment's reconcile saw the bad config: its own Event.
    wait_for("an InvalidCollectorConfig Event on svc", T, || async {
        Ok(event_reasons(&client, &ns.name, "svc")
            .await?
            .iter()
            .any(|(r, _)| r == "InvalidCollectorConfig"))
    })
    .await?;
    let d = get_deploy(&client, &ns.name, "svc").await?;
    assert_eq!(
        template_hash(&d).as_deref(),
        Some(good.as_str()),
        "the last good sidecar stays"
    );
    let init = d
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .init_containers
        .unwrap();
    let cfg = init[0].env.as_ref().unwrap()[0].value.clone().unwrap();
    assert!(!cfg.contains("otlp/nowhere"));
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

fn gateway_collector(name: &str, mode: &str, config: Value) -> Value {
    json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Collector", "metadata": {"name": name},
           "spec": {"mode": mode, "replicas": 2, "config": config}})
}

/// What kotel owns of a gateway is repaired when someone deletes or edits it (that a gateway
/// as kotel wants it costs no write is `restart_and_idle_cause_zero_writes`).
#[tokio::test]
async fn deleted_or_edited_gateway_objects_are_restored() -> anyhow::Result<()> {
    let (client, ns) = setup("drift", json!({})).await?;
    let op = Operator::start().await?;
    ns.apply(gateway_collector("gw", "deployment", collector_config()))
        .await?;
    let svc: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    wait_for("the gateway's objects", T, || async {
        Ok(svc.get_opt("gw-collector").await?.is_some()
            && cm.get_opt("gw-collector").await?.is_some()
            && sa.get_opt("gw-collector").await?.is_some()
            && deployments.get_opt("gw-collector").await?.is_some())
    })
    .await?;
    let yaml = cm.get("gw-collector").await?.data.unwrap()["collector.yaml"].clone();
    let settled = op.metric_sum("kotel_writes_total").await?;

    // Deleted: the Service and the ServiceAccount come back.
    svc.delete("gw-collector", &Default::default()).await?;
    sa.delete("gw-collector", &Default::default()).await?;
    wait_for("the Service and ServiceAccount restored", T, || async {
        Ok(svc
            .get_opt("gw-collector")
            .await?
            .is_some_and(|s| s.metadata.deletion_timestamp.is_none())
            && sa.get_opt("gw-collector").await?.is_some())
    })
    .await?;
    // Edited: the configuration, a port and the replicas go back to kotel's.
    cm.patch(
        "gw-collector",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"collector.yaml": "receivers: {}"}})),
    )
    .await?;
    svc.patch(
        "gw-collector",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"spec": {"ports": [{"name": "mine", "port": 9999, "targetPort": 4317}]}}),
        ),
    )
    .await?;
    deployments
        .patch(
            "gw-collector",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await?;
    wait_for(
        "the ConfigMap, Service and replicas restored",
        T,
        || async {
            let data = cm.get("gw-collector").await?.data.unwrap_or_default();
            let ports: Vec<i32> = svc
                .get("gw-collector")
                .await?
                .spec
                .and_then(|s| s.ports)
                .unwrap_or_default()
                .iter()
                .map(|p| p.port)
                .collect();
            let replicas = deployments
                .get("gw-collector")
                .await?
                .spec
                .and_then(|s| s.replicas);
            // kotel's ports are back; the one another manager added is that manager's and stays.
            Ok(data.get("collector.yaml") == Some(&yaml)
                && ports.contains(&4317)
                && ports.contains(&4318)
                && replicas == Some(2))
        },
    )
    .await?;
    let repaired = op.metric_sum("kotel_writes_total").await?;
    assert!(repaired > settled, "the repairs were kotel's writes");

    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn gateway_collector_runs_as_owned_objects_and_rolls_on_config_change() -> anyhow::Result<()>
{
    // A namespace-wide inject default must not reach the collector's own Deployment.
    let (client, ns) = setup("gateway", json!({"kotel.dev/inject": "true"})).await?;
    let op = Operator::start().await?;
    ns.apply(instrumentation(
        "otel",
        json!({"exporter": {"endpoint": "http://gw-collector:4318"}}),
    ))
    .await?;
    ns.apply(gateway_collector("gw", "deployment", collector_config()))
        .await?;
    let d = wait_deploy(
        &client,
        &ns.name,
        "gw-collector",
        "the gateway Deployment",
        |d| template_hash(d).is_some(),
    )
    .await?;
    let first = template_hash(&d).unwrap();
    let spec = d.spec.clone().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("gw-collector"));
    assert!(
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .all(|e| !e.name.starts_with("OTEL_")),
        "kotel injected into its own collector: {:?}",
        pod.containers[0].env
    );
    let owner = &d.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Collector", "gw")
    );

    let cm: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let yaml = cm.get("gw-collector").await?.data.unwrap()["collector.yaml"].clone();
    assert!(
        yaml.contains("debug") && yaml.contains("pipelines"),
        "{yaml}"
    );
    let svc: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let ports: Vec<i32> = svc
        .get("gw-collector")
        .await?
        .spec
        .unwrap()
        .ports
        .unwrap()
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, vec![4317, 4318]);
    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .get("gw-collector")
        .await?;

    // Status: two pods wanted; without a kubelet none becomes ready.
    let api: Api<Collector> = Api::namespaced(client.clone(), &ns.name);
    wait_for("gateway status", T, || async {
        Ok(api.get("gw").await?.status.is_some_and(|s| {
            s.replicas == Some(2)
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "False" && c.reason == "Progressing")
                && s.conditions
                    .iter()
                    .any(|c| c.type_ == "ConfigValid" && c.status == "True")
        }))
    })
    .await?;

    // A config change rolls the pods (new hash) and rewrites the ConfigMap.
    let mut changed = collector_config();
    changed["exporters"]["debug"] = json!({"verbosity": "detailed"});
    ns.apply(gateway_collector("gw", "deployment", changed))
        .await?;
    let d = wait_deploy(&client, &ns.name, "gw-collector", "a new hash", |d| {
        template_hash(d).is_some_and(|h| h != first)
    })
    .await?;
    let second = template_hash(&d).unwrap();
    assert!(cm.get("gw-collector").await?.data.unwrap()["collector.yaml"].contains("detailed"));

    // Invalid config never reaches the pods: the last good one stays.
    let mut bad = collector_config();
    bad["service"]["pipelines"]["traces"]["exporters"] = json!(["otlp/nowhere"]);
    ns.apply(gateway_collector("gw", "deployment", bad)).await?;
    wait_for("ConfigValid=False", T, || async {
        Ok(api.get("gw").await?.status.is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "ConfigValid" && c.status == "False")
        }))
    })
    .await?;
    // ConfigValid=False is written by the same reconcile that, because of it, applied nothing.
    assert_eq!(
        template_hash(&get_deploy(&client, &ns.name, "gw-collector").await?).as_deref(),
        Some(second.as_str())
    );
    assert!(!cm.get("gw-collector").await?.data.unwrap()["collector.yaml"].contains("nowhere"));

    // daemonset mode replaces the Deployment with a DaemonSet.
    ns.apply(gateway_collector("gw", "daemonset", collector_config()))
        .await?;
    let ds: Api<DaemonSet> = Api::namespaced(client.clone(), &ns.name);
    wait_for("the DaemonSet instead of the Deployment", T, || async {
        let gone = Api::<Deployment>::namespaced(client.clone(), &ns.name)
            .get_opt("gw-collector")
            .await?
            .is_none_or(|d| d.metadata.deletion_timestamp.is_some());
        Ok(gone && ds.get_opt("gw-collector").await?.is_some())
    })
    .await?;

    // Deleting the Collector garbage-collects what kotel made for it. The controller-manager's
    // garbage collector learns new kinds from discovery every 30 s, so a fresh CRD may wait.
    api.delete("gw", &Default::default()).await?;
    wait_for("garbage collection of the gateway", 3 * T, || async {
        Ok(svc.get_opt("gw-collector").await?.is_none()
            && cm.get_opt("gw-collector").await?.is_none())
    })
    .await?;
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn restart_and_idle_cause_zero_writes() -> anyhow::Result<()> {
    let (client, ns) = setup("idle", json!({})).await?;
    let op = Operator::start().await?;
    ns.apply(otel()).await?;
    ns.apply(sidecar_collector("side", collector_config()))
        .await?;
    ns.apply(gateway_collector("gw", "deployment", collector_config()))
        .await?;
    for name in ["a", "b", "c"] {
        ns.apply(deployment(
            name,
            json!({"kotel.dev/inject": "true", "kotel.dev/sidecar": "true"}),
            json!([{"name": "OTEL_SERVICE_NAME", "value": "x"}]),
        ))
        .await?;
    }
    for name in ["a", "b", "c", "gw-collector"] {
        wait_deploy(&client, &ns.name, name, "injection", |d| {
            template_hash(d).is_some()
        })
        .await?;
    }
    let inst: Api<Instrumentation> = Api::namespaced(client.clone(), &ns.name);
    wait_for("status workloads=3", T, || async {
        Ok(inst
            .get("otel")
            .await?
            .status
            .is_some_and(|s| s.workloads == 3))
    })
    .await?;
    let status = op.stop()?;
    assert!(status.success(), "SIGTERM is a clean exit, got {status}");

    // What a write by kotel would change: the spec (generation) or kotel's managed-fields
    // entry. Not the resourceVersion: the controller-manager may still be writing status and
    // the revision annotation of the Deployments it has just rolled.
    let versions = |ds: Vec<Deployment>| {
        ds.into_iter()
            .map(|d| {
                let kotel: Vec<_> = d
                    .managed_fields()
                    .iter()
                    .filter(|m| m.manager.as_deref() == Some("kotel"))
                    .cloned()
                    .collect();
                assert!(
                    !kotel.is_empty(),
                    "kotel manages fields of {}",
                    d.name_any()
                );
                (d.name_any(), d.metadata.generation, kotel)
            })
            .collect::<Vec<_>>()
    };
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let before = versions(api.list(&Default::default()).await?.items);
    let inst_rv = inst.get("otel").await?.resource_version();

    let events_before = event_reasons(&client, &ns.name, "a").await?.len();

    let op = Operator::start().await?;
    // Other namespaces of a shared cluster may hold standing problems that a fresh operator
    // reports once; this test's own objects must see no write at all, and after the start-up
    // pass the whole operator must idle for 30 s without writing anything.
    // The start-up pass is through once every Deployment of the cluster was reconciled at
    // least once (counted) and this test's own ones were (seen in the log).
    let all: Api<Deployment> = Api::all(client.clone());
    let cluster_deployments = all.list(&Default::default()).await?.items.len() as f64;
    wait_for("the restarted operator's start-up pass", T, || async {
        Ok(["a", "b", "c"].iter().all(|n| op.reconciled(&ns.name, n))
            && op.metric_sum("kotel_reconciles_total").await? >= cluster_deployments)
    })
    .await?;
    // Status passes run at most every 5 s, so one may still report what changed in other
    // namespaces while the operator was down (a deleted workload, a finished rollout): the
    // start-up is through once the write count holds still for longer than that.
    let mut writes_settled = op.metric_sum("kotel_writes_total").await?;
    let start_up = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(6)).await;
        let now = op.metric_sum("kotel_writes_total").await?;
        if now == writes_settled || start_up.elapsed() > T {
            break;
        }
        writes_settled = now;
    }
    // An observation window, not a wait: the start-up pass was seen above, and nothing may be
    // written during the 30 s that follow.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let writes = op.metric_sum("kotel_writes_total").await? - writes_settled;
    let reconciles = op.metric_sum("kotel_reconciles_total").await?;
    assert!(
        reconciles >= 3.0,
        "the restarted operator reconciled every Deployment ({reconciles})"
    );
    let (_, m) = http_get(&format!("http://{}/metrics", op.addr)).await?;
    let by_kind: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("kotel_writes_total{"))
        .collect();
    assert_eq!(
        writes,
        0.0,
        "idling must not write ({by_kind:?}, {writes_settled} before); operator log: {}",
        op.log.display()
    );
    assert_eq!(
        event_reasons(&client, &ns.name, "a").await?.len(),
        events_before,
        "no new Event"
    );
    let after = versions(api.list(&Default::default()).await?.items);
    assert_eq!(
        before, after,
        "no Deployment written, the gateway's included"
    );
    assert_eq!(
        inst.get("otel").await?.resource_version(),
        inst_rv,
        "no status rewrite"
    );
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn helm_install_and_the_operator_works_with_the_charts_rbac() -> anyhow::Result<()> {
    let (client, ns) = setup("helm", json!({})).await?;
    let system = TestNamespace::create(&client, "kotel-system", json!({})).await?;
    let chart = repo_root().join("charts/kotel-operator");
    helm(&[
        "install",
        "kotel",
        chart.to_str().unwrap(),
        "-n",
        &system.name,
        "--set",
        "replicaCount=1",
    ])?;
    let deploy = get_deploy(&client, &system.name, "kotel-kotel-operator").await?;
    let pod = deploy.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("kotel-kotel-operator")
    );
    let listed = helm(&["list", "-n", &system.name, "-o", "json"])?;
    assert!(listed.contains("\"status\":\"deployed\""), "{listed}");

    // The operator, acting as the chart's ServiceAccount, can do everything it needs.
    let kubeconfig = std::env::temp_dir().join(format!("kotel-sa-{}.kubeconfig", system.name));
    impersonating_kubeconfig(
        &format!("system:serviceaccount:{}:kotel-kotel-operator", system.name),
        &kubeconfig,
    )?;
    let op = Operator::start_with(Some(&kubeconfig), &system.name).await?;
    ns.apply(otel()).await?;
    ns.apply(sidecar_collector("side", collector_config()))
        .await?;
    ns.apply(deployment(
        "rbac",
        json!({"kotel.dev/inject": "true", "kotel.dev/sidecar": "true"}),
        json!([]),
    ))
    .await?;
    wait_deploy(
        &client,
        &ns.name,
        "rbac",
        "injection by the chart's ServiceAccount",
        |d| template_hash(d).is_some(),
    )
    .await?;
    let inst: Api<Instrumentation> = Api::namespaced(client.clone(), &ns.name);
    wait_for(
        "status written by the chart's ServiceAccount",
        T,
        || async {
            Ok(inst
                .get("otel")
                .await?
                .status
                .is_some_and(|s| s.workloads == 1))
        },
    )
    .await?;
    wait_for(
        "an Event written by the chart's ServiceAccount",
        T,
        || async {
            Ok(event_reasons(&client, &ns.name, "rbac")
                .await?
                .iter()
                .any(|(r, _)| r == "Injected"))
        },
    )
    .await?;
    let log = std::fs::read_to_string(&op.log)?;
    assert!(
        !log.lines()
            .any(|l| l.contains("system:serviceaccount") && l.contains("cannot")),
        "the chart's RBAC refused something:\n{log}"
    );
    op.stop()?;
    helm(&["uninstall", "kotel", "-n", &system.name])?;
    let _ = std::fs::remove_file(&kubeconfig);
    system.cleanup().await;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn the_operator_exports_its_own_traces_when_an_otlp_endpoint_is_set() -> anyhow::Result<()> {
    let (client, ns) = setup("selftrace", json!({})).await?;
    let sink = OtlpHttpSink::start().await?;
    let op = Operator::start_env(
        None,
        "default",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &sink.url)],
    )
    .await?;
    ns.apply(otel()).await?;
    ns.apply(deployment(
        "traced",
        json!({"kotel.dev/inject": "true"}),
        json!([]),
    ))
    .await?;
    wait_deploy(&client, &ns.name, "traced", "injection", |d| {
        template_hash(d).is_some()
    })
    .await?;
    wait_for("reconcile spans at /v1/traces", T, || async {
        Ok(sink
            .received
            .lock()
            .unwrap()
            .iter()
            .any(|(p, len)| p == "/v1/traces" && *len > 0))
    })
    .await?;
    // The JSON log lines carry the reconcile's trace id.
    let log = std::fs::read_to_string(&op.log)?;
    let line = log
        .lines()
        .find(|l| l.contains("injected Instrumentation") && l.contains("traced"))
        .expect("an injection log line");
    let v: serde_json::Value = serde_json::from_str(line)?;
    let tid = v["span"]["trace_id"].as_str().unwrap_or_default();
    assert_eq!(tid.len(), 32, "trace_id in {line}");
    assert_ne!(tid, "00000000000000000000000000000000");
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

/// Bad input is named where the user looks, and nothing is half-applied: an Instrumentation
/// whose resource attribute key would break the list is refused by the API server; a bad
/// annotation value is an Event naming the annotation and the fix, and the workload is left
/// alone; a container name that does not exist is an Event; 300 annotations are no trouble.
#[tokio::test]
async fn bad_input_is_named_and_nothing_is_half_applied() -> anyhow::Result<()> {
    let (client, ns) = setup("badinput", json!({})).await?;
    let op = Operator::start().await?;
    ns.apply(otel()).await?;
    let err = ns
        .apply(instrumentation(
            "broken",
            json!({"exporter": {"endpoint": "http://gw.obs:4318"}, "resourceAttributes": {"team=a,b": "x"}}),
        ))
        .await
        .expect_err("the API server refuses a key with '=' or ','");
    assert!(
        format!("{err:#}").contains("spec.resourceAttributes keys cannot contain"),
        "{err:#}"
    );

    let cases = [
        (
            "please",
            json!({"kotel.dev/inject": "yes please"}),
            "InvalidAnnotation",
            "NAMESPACE/NAME",
        ),
        (
            "slashes",
            json!({"kotel.dev/inject": "a/b/c"}),
            "InvalidAnnotation",
            "NAMESPACE/NAME",
        ),
        (
            "empty",
            json!({"kotel.dev/inject": ""}),
            "InvalidAnnotation",
            "kotel.dev/inject",
        ),
        (
            "ghost",
            json!({"kotel.dev/inject": "true", "kotel.dev/container-names": "ghost"}),
            "UnknownContainer",
            "ghost",
        ),
    ];
    for (name, annotations, _, _) in &cases {
        ns.apply(deployment(name, annotations.clone(), json!([])))
            .await?;
    }
    let mut many = serde_json::Map::new();
    for i in 0..300 {
        many.insert(format!("example.com/note-{i}"), json!("x".repeat(20)));
    }
    many.insert("kotel.dev/inject".into(), json!("true"));
    ns.apply(deployment("many", Value::Object(many), json!([])))
        .await?;

    for (name, _, reason, names) in &cases {
        wait_for(&format!("a {reason} Event for {name}"), T, || async {
            Ok(event_reasons(&client, &ns.name, name)
                .await?
                .iter()
                .any(|(r, n)| r == reason && n.contains(names)))
        })
        .await?;
        let d = get_deploy(&client, &ns.name, name).await?;
        assert!(template_hash(&d).is_none(), "{name}: nothing applied");
        assert!(!kotel_owns_anything(&d), "{name}: kotel owns nothing");
    }
    wait_deploy(
        &client,
        &ns.name,
        "many",
        "injection despite 300 annotations",
        |d| template_hash(d).is_some(),
    )
    .await?;
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

/// An exporter header that references a Secret nobody created: kotel reads no Secrets, so the
/// pods tell it. Their `CreateContainerConfigError` becomes one `SecretMissing` Event naming the
/// header, `spec.exporter.headers`, the Secret, its key and the fix; once the Secret exists the
/// rollout completes, with nothing for kotel to change.
#[tokio::test]
async fn a_header_secret_that_is_missing_is_named_with_the_fix() -> anyhow::Result<()> {
    let (client, ns) = setup("secret", json!({})).await?;
    kotel_e2e::cluster::require_node(&client).await?;
    ns.apply(instrumentation(
        "otel",
        json!({"exporter": {"endpoint": "http://gw.obs:4318",
                            "headers": {"authorization": {"secretKeyRef": {"name": "otlp-auth", "key": "token"}}}}}),
    ))
    .await?;
    let mut d = deployment("web", json!({"kotel.dev/inject": "true"}), json!([]));
    d["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!(kotel_e2e::cluster::pause_image());
    ns.apply(d).await?;
    let op = Operator::start().await?;
    wait_for("a SecretMissing Event", Duration::from_secs(90), || async {
        Ok(event_reasons(&client, &ns.name, "web")
            .await?
            .iter()
            .any(|(r, note)| {
                r == "SecretMissing"
                    && note.contains("`authorization`")
                    && note.contains("spec.exporter.headers")
                    && note.contains("create Secret otlp-auth with key `token`")
            }))
    })
    .await?;
    let writes = op.writes("deployment").await?;
    ns.apply(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "otlp-auth"},
                    "stringData": {"token": "Bearer e2e"}}),
    )
    .await?;
    kotel_e2e::cluster::wait_rollout(&client, &ns.name, "web").await?;
    let missing = event_reasons(&client, &ns.name, "web")
        .await?
        .into_iter()
        .filter(|(r, _)| r == "SecretMissing")
        .count();
    assert_eq!(missing, 1, "one Event for the standing problem");
    assert_eq!(
        op.writes("deployment").await?,
        writes,
        "the Secret's arrival needed no write to the Deployment"
    );
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

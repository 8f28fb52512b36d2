//! StatefulSets, DaemonSets and CronJobs get what Deployments get (operator.rs covers those):
//! injection with the kind's own resource attribute, a re-roll on an Instrumentation change,
//! the user's variables kept with an Event, rollout status reaching complete on the node,
//! zero writes when idle, and exact removal. A CronJob's next Job carries the env; an annotated
//! bare Pod or Job gets an Event instead of a patch. Run with --test-threads=1.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kotel_e2e::cluster::{pause_image, require_node};
use kotel_e2e::workloads::{api, get, hash, manifest, template};
use kotel_e2e::*;
use kotel_operator::instrumentation::Instrumentation;
use kotel_operator::workload::Kind;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);

fn instrumentation(endpoint: &str) -> Value {
    json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Instrumentation",
           "metadata": {"name": "otel"}, "spec": {"exporter": {"endpoint": endpoint}}})
}

/// A workload of `kind` named `name`, annotated `kotel.dev/inject: "true"`, whose one
/// container sets FOO and its own OTEL_SERVICE_NAME.
fn workload(kind: Kind, name: &str) -> Value {
    manifest(
        kind,
        name,
        &pause_image(),
        json!({"kotel.dev/inject": "true"}),
        json!([{"name": "FOO", "value": "bar"},
               {"name": "OTEL_SERVICE_NAME", "value": "users-own-name"}]),
    )
}

fn env(template: &Value) -> Vec<(String, Value)> {
    template["spec"]["containers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["name"].as_str().unwrap_or_default().to_string(),
                e["value"].clone(),
            )
        })
        .collect()
}

fn value<'a>(env: &'a [(String, Value)], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_str())
}

async fn wait_template(
    client: &Client,
    ns: &str,
    kind: Kind,
    name: &str,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    wait_for(what, T, || async {
        Ok(cond(&template(kind, &get(client, ns, kind, name).await?)))
    })
    .await?;
    Ok(template(kind, &get(client, ns, kind, name).await?))
}

/// The Instrumentation's status count of `kind`, and its complete rollouts.
async fn counts(client: &Client, ns: &str, kind: Kind) -> anyhow::Result<(i32, i32)> {
    let s = Api::<Instrumentation>::namespaced(client.clone(), ns)
        .get("otel")
        .await?
        .status
        .unwrap_or_default();
    let k = s.by_kind.unwrap_or_default();
    let n = match kind {
        Kind::Deployment => k.deployments,
        Kind::StatefulSet => k.stateful_sets,
        Kind::DaemonSet => k.daemon_sets,
        Kind::CronJob => k.cron_jobs,
    };
    Ok((n, s.rollouts.unwrap_or_default().complete))
}

/// The whole story for one kind.
async fn every_step_for(kind: Kind) -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    require_node(&client).await?;
    let prefix = kind.as_str().to_lowercase();
    let ns = TestNamespace::create(&client, &prefix, json!({})).await?;
    let op = Operator::start().await?;
    ns.apply(instrumentation("http://gw.obs:4318")).await?;
    let mut unannotated = workload(kind, "web");
    unannotated["metadata"]["annotations"] = json!({});
    ns.apply(unannotated).await?;
    let original = template(kind, &get(&client, &ns.name, kind, "web").await?);
    ns.apply(workload(kind, "web")).await?;

    // Injected, with the kind's own name attribute; the user's variable is kept.
    let t = wait_template(&client, &ns.name, kind, "web", "injection", |t| {
        hash(t).is_some()
    })
    .await?;
    let e = env(&t);
    assert_eq!(value(&e, "FOO"), Some("bar"));
    assert_eq!(value(&e, "OTEL_SERVICE_NAME"), Some("users-own-name"));
    assert_eq!(
        e.iter().filter(|(n, _)| n == "OTEL_SERVICE_NAME").count(),
        1
    );
    assert_eq!(
        value(&e, "OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://gw.obs:4318")
    );
    let attrs = value(&e, "OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    assert!(
        attrs.contains(&format!("{}=web", kind.name_attribute())),
        "{attrs}"
    );
    assert!(
        kind == Kind::Deployment || !attrs.contains("k8s.deployment.name"),
        "{attrs}"
    );
    wait_for("Injected and UserVariableKept Events", T, || async {
        let ev = event_reasons(&client, &ns.name, "web").await?;
        Ok(ev.iter().any(|(r, _)| r == "Injected")
            && ev
                .iter()
                .any(|(r, n)| r == "UserVariableKept" && n.contains("OTEL_SERVICE_NAME")))
    })
    .await?;

    // Status: counted under its kind; its rollout reaches complete on the node.
    let rollouts = kind != Kind::CronJob;
    wait_for("the Instrumentation's status counts it", T, || async {
        let (n, complete) = counts(&client, &ns.name, kind).await?;
        Ok(n == 1 && (!rollouts || complete == 1))
    })
    .await?;

    // A CronJob's next Job carries the env (`kubectl create job --from` makes it as the
    // schedule would).
    if kind == Kind::CronJob {
        kubectl(&[
            "-n",
            &ns.name,
            "create",
            "job",
            "next",
            "--from=cronjob/web",
        ])?;
        let job = Api::<Job>::namespaced(client.clone(), &ns.name)
            .get("next")
            .await?;
        let job_template = serde_json::to_value(&job)?["spec"]["template"].clone();
        assert_eq!(hash(&job_template), hash(&t));
        assert_eq!(
            value(&env(&job_template), "OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("http://gw.obs:4318")
        );
    }

    // Idle: a change kotel has nothing to do about is reconciled and writes nothing.
    let writes = op.metric_sum("kotel_writes_total").await?;
    let seen = op.reconcile_count(&ns.name, "web");
    api(&client, &ns.name, kind)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await?;
    wait_for("kotel reconciled the touched workload", T, || async {
        Ok(op.reconcile_count(&ns.name, "web") > seen)
    })
    .await?;
    assert_eq!(
        op.metric_sum("kotel_writes_total").await?,
        writes,
        "no write when idle"
    );

    // An Instrumentation change re-rolls it, and the rollout completes again.
    let first = hash(&t);
    ns.apply(instrumentation("http://gw2.obs:4318")).await?;
    let t2 = wait_template(&client, &ns.name, kind, "web", "a re-roll", |t| {
        value(&env(t), "OTEL_EXPORTER_OTLP_ENDPOINT") == Some("http://gw2.obs:4318")
    })
    .await?;
    assert_ne!(hash(&t2), first);
    if rollouts {
        let obj = get(&client, &ns.name, kind, "web").await?;
        let generation = obj["metadata"]["generation"].as_i64();
        wait_for("the new rollout completes", T, || async {
            let o = get(&client, &ns.name, kind, "web").await?;
            let (_, complete) = counts(&client, &ns.name, kind).await?;
            Ok(o["status"]["observedGeneration"].as_i64() >= generation && complete == 1)
        })
        .await?;
    }

    // Removing the annotation leaves exactly the template the user applied.
    let mut plain = workload(kind, "web");
    plain["metadata"]["annotations"] = json!({});
    ns.apply(plain).await?;
    let back = wait_template(&client, &ns.name, kind, "web", "removal", |t| {
        hash(t).is_none()
    })
    .await?;
    assert_eq!(
        back, original,
        "the template is what the user applied, exactly"
    );
    wait_for("a Removed Event", T, || async {
        Ok(event_reasons(&client, &ns.name, "web")
            .await?
            .iter()
            .any(|(r, _)| r == "Removed"))
    })
    .await?;
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

#[tokio::test]
async fn a_stateful_set_is_injected_rerolled_and_cleaned_exactly() -> anyhow::Result<()> {
    every_step_for(Kind::StatefulSet).await
}

#[tokio::test]
async fn a_daemon_set_is_injected_rerolled_and_cleaned_exactly() -> anyhow::Result<()> {
    every_step_for(Kind::DaemonSet).await
}

#[tokio::test]
async fn a_cron_job_is_injected_and_its_next_job_carries_the_env() -> anyhow::Result<()> {
    every_step_for(Kind::CronJob).await
}

#[tokio::test]
async fn an_annotated_bare_pod_or_job_gets_an_event_not_a_patch() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "bare", json!({})).await?;
    let op = Operator::start().await?;
    ns.apply(instrumentation("http://gw.obs:4318")).await?;
    // A CronJob's Job is its owner's business; created first, so that the bare Job's Event
    // (same watch, later) shows that the operator has seen it.
    let mut cron = workload(Kind::CronJob, "nightly");
    cron["spec"]["jobTemplate"]["metadata"] = json!({"annotations": {"kotel.dev/inject": "true"}});
    ns.apply(cron).await?;
    kubectl(&[
        "-n",
        &ns.name,
        "create",
        "job",
        "owned",
        "--from=cronjob/nightly",
    ])?;
    let pod_spec = json!({"restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                          "containers": [{"name": "app", "image": pause_image()}]});
    ns.apply(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "bare", "annotations": {"kotel.dev/inject": "true"}},
        "spec": pod_spec}))
        .await?;
    ns.apply(json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "once", "annotations": {"kotel.dev/inject": "true"}},
        "spec": {"template": {"spec": pod_spec}}}))
        .await?;
    for (name, owner) in [("bare", "Deployment, StatefulSet"), ("once", "CronJob")] {
        wait_for(&format!("a NotPatchable Event for {name}"), T, || async {
            Ok(event_reasons(&client, &ns.name, name)
                .await?
                .iter()
                .any(|(r, n)| r == "NotPatchable" && n.contains(owner)))
        })
        .await?;
    }
    let owned = event_reasons(&client, &ns.name, "owned").await?;
    assert!(
        !owned.iter().any(|(r, _)| r == "NotPatchable"),
        "a CronJob's Job is not reported: {owned:?}"
    );
    let pod = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns.name)
        .get("bare")
        .await?;
    assert!(
        pod.spec.unwrap().containers[0].env.is_none(),
        "nothing was patched into the Pod"
    );
    assert!(
        !pod.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some("kotel")),
        "kotel wrote nothing to the Pod"
    );
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

//! Least privilege, shown on the real API server's RBAC: for every verb the operator chart
//! grants on every resource, the operator runs as a user granted all the rest, against a
//! namespace that needs all of it, and must be refused exactly that request (`cannot <verb>
//! resource "<resource>"`). A grant whose removal breaks nothing is one the chart should not
//! make, and fails the test. The baseline, with nothing removed, does everything unrefused.
//! Needs the node (the Collector image's validation Job runs). Run with --test-threads=1.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use kotel_e2e::cluster::{image, pause_image, require_node};
use kotel_e2e::workloads::manifest;
use kotel_e2e::*;
use kotel_operator::workload::Kind;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

const USER: &str = "kotel-rbac-trial";

/// One verb on one resource, as the chart grants it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Grant {
    /// Granted by the namespaced Role (the Lease) rather than the ClusterRole.
    namespaced: bool,
    group: String,
    resource: String,
    verb: String,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {} ({group})", self.verb, self.resource)
    }
}

impl Grant {
    /// The API server's words when it refuses this request.
    fn refusal(&self) -> String {
        if self.verb == "update" && self.resource.ends_with("/finalizers") {
            // The OwnerReferencesPermissionEnforcement admission plugin's words, for an owner
            // reference with blockOwnerDeletion.
            return "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set finalizers on".into();
        }
        format!(
            r#"cannot {} resource "{}" in API group "{}""#,
            self.verb, self.resource, self.group
        )
    }

    /// Why a grant that this test cannot see refused is kept anyway.
    fn kept_because(&self) -> Option<&'static str> {
        match (self.resource.as_str(), self.verb.as_str()) {
            ("customresourcedefinitions", "watch") => Some(
                "the operator watches its CRDs until they are established when it starts before them; here they are established before every trial",
            ),
            _ => None,
        }
    }
}

/// Every verb the chart's ClusterRole and Role grant, rendered by the real Helm.
fn chart_grants() -> anyhow::Result<Vec<Grant>> {
    let chart = repo_root().join("charts/kotel-operator");
    let rendered = helm(&["template", "kotel", chart.to_str().unwrap()])?;
    let mut grants = Vec::new();
    for doc in rendered.split("\n---") {
        let Ok(obj) = serde_norway::from_str::<Value>(doc) else {
            continue;
        };
        let namespaced = match obj["kind"].as_str() {
            Some("ClusterRole") => false,
            Some("Role") => true,
            _ => continue,
        };
        for rule in obj["rules"].as_array().into_iter().flatten() {
            let strings = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        grants.push(Grant {
                            namespaced,
                            group: group.clone(),
                            resource: resource.clone(),
                            verb,
                        });
                    }
                }
            }
        }
    }
    grants.sort();
    grants.dedup();
    anyhow::ensure!(
        grants.len() > 10,
        "the chart's roles rendered no rules: {rendered}"
    );
    Ok(grants)
}

/// RBAC rules granting exactly `grants`, one rule per group and resource.
fn rules<'a>(grants: impl Iterator<Item = &'a Grant>) -> Value {
    let mut by_resource: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for g in grants {
        by_resource
            .entry((&g.group, &g.resource))
            .or_default()
            .push(&g.verb);
    }
    by_resource
        .into_iter()
        .map(|((group, resource), verbs)| {
            json!({"apiGroups": [group], "resources": [resource], "verbs": verbs})
        })
        .collect()
}

/// The trial user's ClusterRole and Role (the latter in `ns`, where its Lease is) with
/// everything but `removed`.
async fn grant_all_but(
    client: &Client,
    grants: &[Grant],
    removed: Option<&Grant>,
    ns: &str,
) -> anyhow::Result<()> {
    let kept = |namespaced: bool| {
        rules(
            grants
                .iter()
                .filter(move |g| g.namespaced == namespaced && Some(*g) != removed),
        )
    };
    let subject = json!([{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": USER}]);
    for obj in [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": USER}, "rules": kept(false)}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": USER}, "subjects": subject,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": USER}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": USER, "namespace": ns}, "rules": kept(true)}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": USER, "namespace": ns}, "subjects": subject,
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": USER}}),
    ] {
        apply_json(client, ns, obj, "kotel-e2e").await?;
    }
    // A positive sign that the authorizer sees the new roles: the removed verb is refused
    // (and, for the baseline, the Lease's `create` allowed).
    let probe = removed.cloned().unwrap_or(Grant {
        namespaced: true,
        group: "coordination.k8s.io".into(),
        resource: "leases".into(),
        verb: "create".into(),
    });
    let (resource, subresource) = probe
        .resource
        .split_once('/')
        .map_or((probe.resource.as_str(), None), |(r, s)| (r, Some(s)));
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {"user": USER, "resourceAttributes": {
            "namespace": ns, "group": probe.group, "resource": resource,
            "subresource": subresource, "verb": probe.verb}}
    }))?;
    let reviews: Api<SubjectAccessReview> = Api::all(client.clone());
    wait_for(
        "the authorizer to see the trial's roles",
        Duration::from_secs(30),
        || async {
            let allowed = reviews
                .create(&PostParams::default(), &review)
                .await?
                .status
                .is_some_and(|s| s.allowed);
            Ok(allowed == removed.is_none())
        },
    )
    .await
}

/// A namespace that needs every grant: an Instrumentation used by one annotated workload of
/// each kind (the Deployment keeps its own `OTEL_SERVICE_NAME`, so an Event says so); an
/// annotated bare Pod and Job (kotel cannot patch them, and says so); a gateway Collector in
/// each mode, validated by its image in a Job, each beside a workload of the other mode
/// labelled as kotel's, which kotel must delete; and a Collector switched from a gateway to
/// sidecar mode, whose gateway objects kotel must delete.
async fn scene(client: &Client, ns: &TestNamespace) -> anyhow::Result<()> {
    ns.apply(json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Instrumentation", "metadata": {"name": "otel"},
                    "spec": {"exporter": {"endpoint": "http://gw.obs:4318"}}}))
        .await?;
    let inject = json!({"kotel.dev/inject": "true"});
    let nowhere = json!({"kotel.dev/no-such-node": "true"});
    for kind in Kind::ALL {
        let env = match kind {
            Kind::Deployment => json!([{"name": "OTEL_SERVICE_NAME", "value": "mine"}]),
            _ => json!([]),
        };
        let name = format!("app-{}", kind.as_str().to_lowercase());
        let mut w = manifest(kind, &name, &pause_image(), inject.clone(), env);
        match kind {
            Kind::Deployment | Kind::StatefulSet => w["spec"]["replicas"] = json!(0),
            Kind::CronJob => w["spec"]["suspend"] = json!(true),
            Kind::DaemonSet => w["spec"]["template"]["spec"]["nodeSelector"] = nowhere.clone(),
        }
        ns.apply(w).await?;
    }
    let container = json!([{"name": "app", "image": pause_image()}]);
    ns.apply(json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "bare", "annotations": inject},
                    "spec": {"nodeSelector": nowhere, "containers": container}}))
        .await?;
    ns.apply(json!({"apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": "bare", "annotations": inject},
                    "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never", "containers": container}}}}))
        .await?;
    let config = json!({
        "receivers": {"otlp": {"protocols": {"grpc": {}}}},
        "exporters": {"debug": {}},
        "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}}
    });
    for (name, mode, stale) in [
        ("gwd", "deployment", "DaemonSet"),
        ("gws", "daemonset", "Deployment"),
    ] {
        ns.apply(json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Collector", "metadata": {"name": name},
                        "spec": {"mode": mode, "replicas": 1, "image": image("otelcol-kotel"), "config": config}}))
            .await?;
        let labels = json!({"kotel.dev/collector": name, "app.kubernetes.io/managed-by": "kotel"});
        let mut w = json!({"apiVersion": "apps/v1", "kind": stale,
            "metadata": {"name": format!("{name}-collector"), "labels": labels},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"nodeSelector": nowhere, "containers": container}}}});
        if stale == "Deployment" {
            w["spec"]["replicas"] = json!(0);
        }
        ns.apply(w).await?;
    }
    // Switched to sidecar mode: its status still counts the gateway's replicas.
    ns.apply(json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Collector", "metadata": {"name": "gwx"},
                    "spec": {"mode": "sidecar", "image": image("otelcol-kotel"), "config": config}}))
        .await?;
    let cols: Api<kotel_operator::collector::Collector> = Api::namespaced(client.clone(), &ns.name);
    cols.patch_status(
        "gwx",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": 1}})),
    )
    .await?;
    let labels = json!({"kotel.dev/collector": "gwx", "app.kubernetes.io/managed-by": "kotel"});
    let meta = json!({"name": "gwx-collector", "labels": labels});
    let pod = json!({"metadata": {"labels": labels},
                     "spec": {"nodeSelector": nowhere, "containers": container}});
    for obj in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"x": "y"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": meta,
               "spec": {"selector": labels, "ports": [{"port": 4317}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
               "spec": {"replicas": 0, "selector": {"matchLabels": labels}, "template": pod}}),
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta,
               "spec": {"selector": {"matchLabels": labels}, "template": pod}}),
    ] {
        ns.apply(obj).await?;
    }
    Ok(())
}

/// The operator's log lines that report a refusal (`... is forbidden: ...`), JSON's escaped
/// quotes unescaped. A namespace of an earlier trial that is being deleted refuses too, with
/// words no grant's refusal has.
fn refusals(op: &Operator) -> Vec<String> {
    std::fs::read_to_string(&op.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("forbidden") && !l.contains("because it is being terminated"))
        .map(|l| l.replace(r#"\""#, r#"""#))
        .collect()
}

/// Everything the scene asks for, done: each workload injected, the bare Pod's and Job's
/// `NotPatchable` Events, both gateways' objects applied and the stale workloads gone, both
/// Collectors' statuses and the Instrumentation's written.
async fn scene_done(client: &Client, ns: &str) -> anyhow::Result<bool> {
    for kind in Kind::ALL {
        let w = kotel_e2e::workloads::get(
            client,
            ns,
            kind,
            &format!("app-{}", kind.as_str().to_lowercase()),
        )
        .await?;
        if kotel_e2e::workloads::hash(&kotel_e2e::workloads::template(kind, &w)).is_none() {
            return Ok(false);
        }
    }
    let events = |name: &'static str| event_reasons(client, ns, name);
    if !events("bare")
        .await?
        .iter()
        .any(|(r, _)| r == "NotPatchable")
        || !events("app-deployment")
            .await?
            .iter()
            .any(|(r, _)| r == "UserVariableKept")
    {
        return Ok(false);
    }
    let dyn_get = |kind: Kind, name: &str| {
        let api = kotel_e2e::workloads::api(client, ns, kind);
        let name = name.to_string();
        async move { anyhow::Ok(api.get_opt(&name).await?) }
    };
    let gateways = dyn_get(Kind::Deployment, "gwd-collector").await?.is_some()
        && dyn_get(Kind::DaemonSet, "gws-collector").await?.is_some()
        && dyn_get(Kind::DaemonSet, "gwd-collector").await?.is_none()
        && dyn_get(Kind::Deployment, "gws-collector").await?.is_none()
        && Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), ns)
            .get_opt("gwx-collector")
            .await?
            .is_none();
    let cols: Api<kotel_operator::collector::Collector> = Api::namespaced(client.clone(), ns);
    let statuses = ["gwd", "gws"].iter().map(|n| cols.get(n));
    let mut written = true;
    for s in statuses {
        written &= s.await?.status.is_some_and(|s| !s.conditions.is_empty());
    }
    let inst: Api<kotel_operator::instrumentation::Instrumentation> =
        Api::namespaced(client.clone(), ns);
    let inst_written = inst
        .get("otel")
        .await?
        .status
        .is_some_and(|s| s.workloads >= 4);
    Ok(gateways && written && inst_written)
}

#[tokio::test]
async fn every_verb_the_chart_grants_is_needed_and_enough() -> anyhow::Result<()> {
    let client = client().await?;
    require_node(&client).await?;
    install_crds(&client).await?;
    let grants = chart_grants()?;
    let kubeconfig = std::env::temp_dir().join("kotel-rbac-trial.kubeconfig");
    impersonating_kubeconfig(USER, &kubeconfig)?;
    let _roles = Cleanup;

    // The baseline: everything the chart grants is enough for the whole scene.
    let ns = TestNamespace::create(&client, "rbac", json!({})).await?;
    grant_all_but(&client, &grants, None, &ns.name).await?;
    scene(&client, &ns).await?;
    let op = Operator::spawn(Some(&kubeconfig), &ns.name, &[])?;
    wait_for(
        "the scene done as the chart's RBAC allows",
        Duration::from_secs(180),
        || async { scene_done(&client, &ns.name).await },
    )
    .await?;
    let refused = refusals(&op);
    assert!(refused.is_empty(), "the chart's RBAC refused: {refused:#?}");
    drop(op);
    ns.cleanup().await;

    // Each grant removed in turn must be refused, and named, within the trial.
    let mut unneeded = Vec::new();
    for removed in &grants {
        let started = Instant::now();
        let ns = TestNamespace::create(&client, "rbac", json!({})).await?;
        grant_all_but(&client, &grants, Some(removed), &ns.name).await?;
        scene(&client, &ns).await?;
        let op = Operator::spawn(Some(&kubeconfig), &ns.name, &[])?;
        let refusal = removed.refusal();
        let seen = wait_for(
            &format!("a refusal of {removed}"),
            Duration::from_secs(60),
            || async { Ok(refusals(&op).iter().any(|l| l.contains(&refusal))) },
        )
        .await;
        match seen {
            Ok(()) => eprintln!(
                "without {removed}: refused after {:.1} s",
                started.elapsed().as_secs_f64()
            ),
            Err(_) => match removed.kept_because() {
                Some(why) => eprintln!("without {removed}: nothing refused in 60 s; kept: {why}"),
                None => {
                    eprintln!("without {removed}: nothing refused in 60 s");
                    unneeded.push(removed.to_string());
                }
            },
        }
        drop(op);
        ns.cleanup().await;
    }
    assert!(
        unneeded.is_empty(),
        "the chart grants what the operator never needed here; remove it or say why it is kept: {unneeded:#?}"
    );
    Ok(())
}

/// Deletes the trial user's cluster-wide roles, however the test ends.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "delete",
            "clusterrolebinding,clusterrole",
            USER,
            "--ignore-not-found",
            "--wait=false",
        ]);
    }
}

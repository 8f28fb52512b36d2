//! Workloads of every kind kotel patches, as JSON manifests read through one dynamic API, so
//! that a test or the benchmark covers each kind with the same code.

use kotel_operator::workload::Kind;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

/// A workload of `kind` named `name` with the given annotations, whose one container `app`
/// runs `image` with `env`. A CronJob's Jobs never restart their pod; a StatefulSet has one
/// replica unless `replicas` says otherwise.
pub fn manifest(kind: Kind, name: &str, image: &str, annotations: Value, env: Value) -> Value {
    let mut template = json!({
        "metadata": {"labels": {"app": name}},
        "spec": {"terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "app", "image": image, "env": env}]}});
    let selector = json!({"matchLabels": {"app": name}});
    let spec = match kind {
        Kind::Deployment | Kind::DaemonSet => json!({"selector": selector, "template": template}),
        Kind::StatefulSet => {
            json!({"selector": selector, "serviceName": name, "template": template})
        }
        Kind::CronJob => {
            template["spec"]["restartPolicy"] = json!("Never");
            json!({"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template}}})
        }
    };
    json!({"apiVersion": kind.api_version(), "kind": kind.as_str(),
           "metadata": {"name": name, "annotations": annotations}, "spec": spec})
}

/// The API of `kind` in `ns`.
pub fn api(client: &Client, ns: &str, kind: Kind) -> Api<DynamicObject> {
    let (group, version) = kind.api_version().split_once('/').expect("group/version");
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind.as_str()));
    Api::namespaced_with(client.clone(), ns, &ar)
}

/// The object `ns/name` of `kind`, as JSON.
pub async fn get(client: &Client, ns: &str, kind: Kind, name: &str) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(
        api(client, ns, kind).get(name).await?,
    )?)
}

/// The pod template, wherever the kind keeps it.
pub fn template(kind: Kind, obj: &Value) -> Value {
    let pointer: String = kind
        .template_path()
        .iter()
        .map(|k| format!("/{k}"))
        .collect();
    obj.pointer(&pointer).cloned().unwrap_or(Value::Null)
}

/// kotel's config hash on a pod template.
pub fn hash(template: &Value) -> Option<String> {
    template["metadata"]["annotations"]["kotel.dev/config-hash"]
        .as_str()
        .map(String::from)
}

//! The kinds of workload whose pod template kotel patches, and the only things that differ
//! between them: their API group, where the pod template sits, the resource attribute that
//! names them, and how their status tells a rollout's progress. Everything else (intent, hash,
//! apply, removal) is the same for all, and reads a workload through [`Templated`]: a
//! [`Watched`] copy that keeps only what decisions read.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::marker::PhantomData;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;

use crate::annotations;
use crate::ownership::{self, Shape};
use crate::rollout::Progress;

/// A kind with a pod template kotel can patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// `batch/v1` CronJob: its `jobTemplate`'s pod template, so that its next Jobs carry it.
    CronJob,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::CronJob,
    ];

    /// `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::CronJob => "batch/v1",
            _ => "apps/v1",
        }
    }

    /// `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::CronJob => "CronJob",
        }
    }

    /// The resource attribute that names the workload, as the semantic conventions spell it.
    pub fn name_attribute(self) -> &'static str {
        match self {
            Kind::Deployment => "k8s.deployment.name",
            Kind::StatefulSet => "k8s.statefulset.name",
            Kind::DaemonSet => "k8s.daemonset.name",
            Kind::CronJob => "k8s.cronjob.name",
        }
    }

    /// Where the pod template sits in the object, as the keys leading to it.
    pub fn template_path(self) -> &'static [&'static str] {
        match self {
            Kind::CronJob => &["spec", "jobTemplate", "spec", "template"],
            _ => &["spec", "template"],
        }
    }

    /// The same path in a managedFields entry's `fieldsV1`, as a JSON pointer.
    pub fn template_pointer(self) -> String {
        self.template_path()
            .iter()
            .map(|k| format!("/f:{k}"))
            .collect()
    }
}

/// A workload as the pipeline reads it, whatever its kind; object-safe, so that one code
/// path (`&dyn Templated`) serves every kind.
pub trait Templated: Send + Sync {
    /// Its kind.
    fn kind(&self) -> Kind;
    /// Its metadata.
    fn object_meta(&self) -> &ObjectMeta;
    /// What decisions read of its pod template.
    fn template(&self) -> &Template;
    /// Its rollout, as its status reports it; `None` for a kind without rollouts (a CronJob's
    /// template is used by its next Job).
    fn progress(&self) -> Option<Progress>;
    /// What kotel owns on it, from its managedFields.
    fn owned(&self) -> &Shape;

    /// `metadata.namespace`.
    fn namespace(&self) -> &str {
        self.object_meta().namespace.as_deref().unwrap_or_default()
    }
    /// `metadata.name`.
    fn name(&self) -> &str {
        self.object_meta().name.as_deref().unwrap_or_default()
    }
    /// The config hash kotel put on the pod template, if it injected anything.
    fn config_hash(&self) -> Option<&str> {
        self.template()
            .annotations
            .get(annotations::CONFIG_HASH)
            .map(String::as_str)
    }
    /// The reference an Event about it carries.
    fn object_reference(&self) -> ObjectReference {
        let m = self.object_meta();
        ObjectReference {
            api_version: Some(self.kind().api_version().into()),
            kind: Some(self.kind().as_str().into()),
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            ..Default::default()
        }
    }
}

/// Of a pod template, what decisions read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Template {
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its containers (not the init containers, which kotel never injects into).
    pub containers: Vec<Container>,
}

/// Of a container, what decisions read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Container {
    /// Its name.
    pub name: String,
    /// The env vars it sets that kotel does not own: the user's, which kotel never overwrites.
    pub user_env: BTreeSet<String>,
}

impl Container {
    /// The container named `name` with the env vars `env`, of which kotel owns those in `owned`.
    pub fn new(name: String, env: impl IntoIterator<Item = String>, owned: &Shape) -> Self {
        let mine = owned.env.get(&name);
        Container {
            user_env: env
                .into_iter()
                .filter(|n| !mine.is_some_and(|m| m.contains(n)))
                .collect(),
            name,
        }
    }
}

/// A workload as kotel watches, caches and applies it: of the object of k8s-openapi type `R`,
/// only what decisions read, deserialised straight from the API server's answer. (k8s-openapi's
/// types are large inline however little of them is filled — a `Deployment` 2,400 bytes, a
/// `Container` 2,120 — and at 5,000 workloads their copies were most of the operator's memory.)
pub struct Watched<R> {
    /// Its metadata, without managedFields (kept as `owned`) and the last-applied annotation.
    pub metadata: ObjectMeta,
    /// Its pod template.
    pub template: Template,
    /// Its rollout.
    pub progress: Option<Progress>,
    /// What kotel owns on it.
    pub owned: Shape,
    of: PhantomData<fn() -> R>,
}

// By hand, as a derive would ask `R` itself to be `Clone` and `Debug`.
impl<R> Clone for Watched<R> {
    fn clone(&self) -> Self {
        Watched {
            metadata: self.metadata.clone(),
            template: self.template.clone(),
            progress: self.progress,
            owned: self.owned.clone(),
            of: PhantomData,
        }
    }
}

impl<R: Source> std::fmt::Debug for Watched<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(<R as Source>::KIND.as_str())
            .field("metadata", &self.metadata)
            .field("template", &self.template)
            .field("progress", &self.progress)
            .field("owned", &self.owned)
            .finish()
    }
}

/// A k8s-openapi workload type: the API kotel watches and applies a [`Watched`] through.
pub trait Source:
    k8s_openapi::Resource<Scope = k8s_openapi::NamespaceResourceScope> + Send + Sync + 'static
{
    /// Its kind.
    const KIND: Kind;
}

impl Source for Deployment {
    const KIND: Kind = Kind::Deployment;
}
impl Source for StatefulSet {
    const KIND: Kind = Kind::StatefulSet;
}
impl Source for DaemonSet {
    const KIND: Kind = Kind::DaemonSet;
}
impl Source for CronJob {
    const KIND: Kind = Kind::CronJob;
}

impl<R: Source> kube::Resource for Watched<R> {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        <R as k8s_openapi::Resource>::KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        R::GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        R::VERSION.into()
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        R::API_VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        R::URL_PATH_SEGMENT.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl<R: Source> Templated for Watched<R> {
    fn kind(&self) -> Kind {
        <R as Source>::KIND
    }
    fn object_meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn template(&self) -> &Template {
        &self.template
    }
    fn progress(&self) -> Option<Progress> {
        self.progress
    }
    fn owned(&self) -> &Shape {
        &self.owned
    }
}

/// A workload kind as its controller holds it, for its watch and its apply.
pub trait Object:
    Templated
    + kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + 'static
{
    /// Its kind.
    const KIND: Kind;
}

impl<R: Source> Object for Watched<R> {
    const KIND: Kind = <R as Source>::KIND;
}

impl<'de, R: Source> Deserialize<'de> for Watched<R> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire::Object {
            mut metadata,
            spec,
            status,
        } = wire::Object::deserialize(d)?;
        let owned = ownership::kotel_shape(&metadata.managed_fields.take().unwrap_or_default());
        if let Some(a) = metadata.annotations.as_mut() {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
        let progress = progress(<R as Source>::KIND, &metadata, spec.replicas, status);
        // Wherever the kind keeps it: `spec.template`, or a CronJob's in its `jobTemplate`.
        let pod = spec
            .template
            .or_else(|| spec.job_template?.spec?.template)
            .unwrap_or_default();
        let meta = pod.metadata.unwrap_or_default();
        let containers = pod
            .spec
            .and_then(|s| s.containers)
            .unwrap_or_default()
            .into_iter()
            .map(|c| Container::new(c.name, c.env.into_iter().flatten().map(|e| e.name), &owned))
            .collect();
        Ok(Watched {
            metadata,
            template: Template {
                labels: meta.labels.unwrap_or_default(),
                annotations: meta.annotations.unwrap_or_default(),
                containers,
            },
            progress,
            owned,
            of: PhantomData,
        })
    }
}

/// The workload's fields that a [`Watched`] is made of, as the API server sends them; serde
/// skips every other field without allocating it.
mod wire {
    use super::*;

    #[derive(Deserialize)]
    pub(super) struct Object {
        #[serde(default)]
        pub(super) metadata: ObjectMeta,
        #[serde(default)]
        pub(super) spec: Spec,
        pub(super) status: Option<Status>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    pub(super) struct Spec {
        pub(super) replicas: Option<i32>,
        pub(super) template: Option<Template>,
        pub(super) job_template: Option<JobTemplate>,
    }

    #[derive(Deserialize)]
    pub(super) struct JobTemplate {
        pub(super) spec: Option<JobSpec>,
    }

    #[derive(Deserialize)]
    pub(super) struct JobSpec {
        pub(super) template: Option<Template>,
    }

    #[derive(Deserialize, Default)]
    pub(super) struct Template {
        pub(super) metadata: Option<TemplateMeta>,
        pub(super) spec: Option<PodSpec>,
    }

    #[derive(Deserialize, Default)]
    pub(super) struct TemplateMeta {
        pub(super) labels: Option<BTreeMap<String, String>>,
        pub(super) annotations: Option<BTreeMap<String, String>>,
    }

    #[derive(Deserialize)]
    pub(super) struct PodSpec {
        pub(super) containers: Option<Vec<Container>>,
    }

    #[derive(Deserialize)]
    pub(super) struct Container {
        pub(super) name: String,
        pub(super) env: Option<Vec<EnvVar>>,
    }

    #[derive(Deserialize)]
    pub(super) struct EnvVar {
        pub(super) name: String,
    }

    /// The status fields of every kind with rollouts, by their JSON names.
    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    pub(super) struct Status {
        pub(super) observed_generation: Option<i64>,
        pub(super) replicas: Option<i32>,
        pub(super) updated_replicas: Option<i32>,
        pub(super) available_replicas: Option<i32>,
        pub(super) conditions: Option<Vec<Condition>>,
        pub(super) current_revision: Option<String>,
        pub(super) update_revision: Option<String>,
        pub(super) desired_number_scheduled: Option<i32>,
        pub(super) current_number_scheduled: Option<i32>,
        pub(super) updated_number_scheduled: Option<i32>,
        pub(super) number_available: Option<i32>,
    }

    #[derive(Deserialize)]
    pub(super) struct Condition {
        #[serde(rename = "type")]
        pub(super) type_: String,
        pub(super) status: String,
        pub(super) reason: Option<String>,
    }
}

/// A workload's rollout from its status, in the terms of its kind; a status not written yet is
/// a rollout not started.
fn progress(
    kind: Kind,
    meta: &ObjectMeta,
    replicas: Option<i32>,
    status: Option<wire::Status>,
) -> Option<Progress> {
    let Some(s) = status else {
        return (kind != Kind::CronJob).then(Progress::default);
    };
    // Whether the controller has seen the newest spec.
    let seen = meta.generation.is_none() || s.observed_generation >= meta.generation;
    let (current, updated, available) = match kind {
        Kind::Deployment | Kind::StatefulSet => {
            (s.replicas, s.updated_replicas, s.available_replicas)
        }
        Kind::DaemonSet => (
            s.current_number_scheduled,
            s.updated_number_scheduled,
            s.number_available,
        ),
        Kind::CronJob => return None,
    };
    Some(Progress {
        caught_up: seen
            // A StatefulSet's rolling update ends when its current revision is the update one.
            && (kind != Kind::StatefulSet
                || s.update_revision.is_none()
                || s.update_revision == s.current_revision),
        want: match kind {
            Kind::DaemonSet => s.desired_number_scheduled.unwrap_or(0),
            _ => replicas.unwrap_or(1),
        },
        current: current.unwrap_or(0),
        updated: updated.unwrap_or(0),
        available: available.unwrap_or(0),
        deadline_exceeded: kind == Kind::Deployment
            && s.conditions.iter().flatten().any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            }),
    })
}

/// Why kotel does not patch an annotated bare Pod or Job, and what to annotate instead:
/// `None` when the object asks for nothing, or is made by a controller (its owner is the
/// workload to annotate, and kotel handles that one).
pub fn unpatchable(kind: &str, meta: &ObjectMeta) -> Option<String> {
    let asks = meta.annotations.as_ref().is_some_and(|a| {
        [annotations::INJECT, annotations::SIDECAR]
            .into_iter()
            .chain(crate::agent::Language::ALL.map(|l| l.annotation()))
            .any(|k| a.get(k).is_some_and(|v| v.trim() != "false"))
    });
    let controlled = meta
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true));
    if !asks || controlled {
        return None;
    }
    let instead = match kind {
        "Job" => "a CronJob (whose jobTemplate kotel patches, so its next Jobs are instrumented)",
        _ => "the Deployment, StatefulSet, DaemonSet or CronJob that should run this pod",
    };
    Some(format!(
        "kotel does not patch a {kind}: its pod template cannot change after it is created. \
         Put the kotel.dev annotations on {instead}, or recreate the {kind} with the OTEL_* \
         variables set"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::{State, state};
    use serde_json::json;

    fn of<T: serde::de::DeserializeOwned + Templated>(v: serde_json::Value) -> Option<State> {
        serde_json::from_value::<T>(v)
            .unwrap()
            .progress()
            .map(|p| state(&p))
    }

    #[test]
    fn each_kind_reports_its_rollout_from_its_own_status() {
        let dep = |status: serde_json::Value| {
            of::<Watched<Deployment>>(json!({"metadata": {"generation": 3},
                "spec": {"replicas": 2, "selector": {}, "template": {}}, "status": status}))
        };
        assert_eq!(
            dep(
                json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2})
            ),
            Some(State::Complete)
        );
        assert_eq!(
            dep(
                json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2})
            ),
            Some(State::Pending)
        );
        assert_eq!(
            dep(
                json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1, "availableReplicas": 1,
                "conditions": [{"type": "Available", "status": "True"},
                    {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]})
            ),
            Some(State::Failed)
        );
        let sts = |status: serde_json::Value| {
            of::<Watched<StatefulSet>>(json!({"metadata": {"generation": 2},
                "spec": {"replicas": 1, "selector": {}, "template": {}, "serviceName": "s"}, "status": status}))
        };
        assert_eq!(
            sts(
                json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1,
                "currentRevision": "s-2", "updateRevision": "s-2"})
            ),
            Some(State::Complete)
        );
        assert_eq!(
            sts(
                json!({"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1,
                "currentRevision": "s-1", "updateRevision": "s-2"})
            ),
            Some(State::Pending),
            "still switching revisions"
        );
        let ds = |status: serde_json::Value| {
            of::<Watched<DaemonSet>>(json!({"metadata": {"generation": 4},
                "spec": {"selector": {}, "template": {}}, "status": status}))
        };
        assert_eq!(
            ds(
                json!({"observedGeneration": 4, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                "updatedNumberScheduled": 1, "numberAvailable": 1, "numberMisscheduled": 0, "numberReady": 1})
            ),
            Some(State::Complete)
        );
        assert_eq!(
            ds(
                json!({"observedGeneration": 4, "desiredNumberScheduled": 1, "currentNumberScheduled": 1,
                "updatedNumberScheduled": 0, "numberAvailable": 1, "numberMisscheduled": 0, "numberReady": 1})
            ),
            Some(State::Pending)
        );
        assert_eq!(
            of::<Watched<CronJob>>(
                json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {}}}}})
            ),
            None,
            "a CronJob has no rollout"
        );
    }

    #[test]
    fn a_watched_workload_keeps_what_decisions_read() {
        let d: Watched<Deployment> = serde_json::from_value(json!({
            "metadata": {"name": "d", "namespace": "n", "generation": 2,
                "annotations": {"kotel.dev/inject": "true", "kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [
                    {"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}}},
                    {"manager": "kotel", "operation": "Apply", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                        "k:{\"name\":\"app\"}": {".": {}, "f:name": {}, "f:env": {
                            "k:{\"name\":\"OTEL_SERVICE_NAME\"}": {".": {}, "f:name": {}, "f:value": {}}}}}}}}}}
                ]},
            "spec": {"replicas": 3, "selector": {}, "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "x"}, "annotations": {"kotel.dev/config-hash": "h"}},
                "spec": {"containers": [{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "secret-ish"}, {"name": "OTEL_SERVICE_NAME", "value": "x"}],
                          "resources": {"limits": {"cpu": "1"}}},
                         {"name": "side", "image": "s:1"}],
                         "initContainers": [{"name": "kotel-collector", "image": "c", "args": ["--config=env:X"]}],
                         "volumes": [{"name": "v", "emptyDir": {}}]}}},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1, "availableReplicas": 3, "readyReplicas": 3}
        }))
        .unwrap();
        assert!(d.metadata.managed_fields.is_none());
        assert_eq!(
            d.owned()
                .env
                .get("app")
                .map(|e| e.iter().map(String::as_str).collect::<Vec<_>>()),
            Some(vec!["OTEL_SERVICE_NAME"]),
            "kotel's variables are in the Shape"
        );
        assert!(
            !d.metadata
                .annotations
                .as_ref()
                .unwrap()
                .contains_key("kubectl.kubernetes.io/last-applied-configuration")
        );
        assert_eq!(d.config_hash(), Some("h"));
        assert_eq!(d.template().labels["app.kubernetes.io/name"], "x");
        assert_eq!(
            d.template().containers,
            [
                Container {
                    name: "app".into(),
                    user_env: BTreeSet::from(["A".into()]),
                },
                Container {
                    name: "side".into(),
                    user_env: BTreeSet::new(),
                },
            ],
            "only the user's variables' names"
        );
        assert_eq!(
            d.progress(),
            Some(Progress {
                caught_up: true,
                want: 3,
                current: 3,
                updated: 1,
                available: 3,
                deadline_exceeded: false,
            })
        );
        assert_eq!(
            <Watched<Deployment> as kube::Resource>::url_path(&(), Some("n")),
            "/apis/apps/v1/namespaces/n/deployments"
        );
        assert_eq!(
            <Watched<CronJob> as kube::Resource>::url_path(&(), Some("n")),
            "/apis/batch/v1/namespaces/n/cronjobs"
        );
    }

    #[test]
    fn a_cron_jobs_template_is_its_job_templates() {
        let c: Watched<CronJob> = serde_json::from_value(json!({"metadata": {"name": "nightly", "namespace": "n"},
            "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": {
                "metadata": {"labels": {"app": "x"}, "annotations": {"kotel.dev/config-hash": "h"}}}}}}}))
        .unwrap();
        assert_eq!(c.config_hash(), Some("h"));
        assert_eq!(c.template().labels["app"], "x");
        let r = c.object_reference();
        assert_eq!(
            (
                r.api_version.as_deref(),
                r.kind.as_deref(),
                r.name.as_deref()
            ),
            (Some("batch/v1"), Some("CronJob"), Some("nightly"))
        );
    }

    #[test]
    fn an_annotated_bare_pod_or_job_is_told_what_to_annotate_instead() {
        let meta = |v: serde_json::Value| serde_json::from_value::<ObjectMeta>(v).unwrap();
        let bare = meta(json!({"annotations": {"kotel.dev/inject": "true"}}));
        let msg = unpatchable("Pod", &bare).unwrap();
        assert!(
            msg.contains("does not patch a Pod") && msg.contains("Deployment, StatefulSet"),
            "{msg}"
        );
        let msg = unpatchable("Job", &bare).unwrap();
        assert!(
            msg.contains("does not patch a Job") && msg.contains("CronJob"),
            "{msg}"
        );
        let sidecar = meta(json!({"annotations": {"kotel.dev/sidecar": "true"}}));
        assert!(unpatchable("Pod", &sidecar).is_some());
        let owned = meta(json!({"annotations": {"kotel.dev/inject": "true"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "u", "controller": true}]}));
        assert_eq!(
            unpatchable("Pod", &owned),
            None,
            "its owner is the workload"
        );
        let off = meta(json!({"annotations": {"kotel.dev/inject": "false"}}));
        assert_eq!(unpatchable("Pod", &off), None);
        assert_eq!(unpatchable("Pod", &meta(json!({}))), None);
    }

    #[test]
    fn each_kind_names_its_group_template_and_attribute() {
        let rows: Vec<_> = Kind::ALL
            .iter()
            .map(|k| {
                (
                    k.api_version(),
                    k.as_str(),
                    k.name_attribute(),
                    k.template_pointer(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "apps/v1",
                    "Deployment",
                    "k8s.deployment.name",
                    "/f:spec/f:template".to_string()
                ),
                (
                    "apps/v1",
                    "StatefulSet",
                    "k8s.statefulset.name",
                    "/f:spec/f:template".to_string()
                ),
                (
                    "apps/v1",
                    "DaemonSet",
                    "k8s.daemonset.name",
                    "/f:spec/f:template".to_string()
                ),
                (
                    "batch/v1",
                    "CronJob",
                    "k8s.cronjob.name",
                    "/f:spec/f:jobTemplate/f:spec/f:template".to_string()
                ),
            ]
        );
    }
}

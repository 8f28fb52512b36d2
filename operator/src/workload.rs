//! The kinds of workload whose pod template kotel patches, and the only things that differ
//! between them: their API group, where the pod template sits, the resource attribute that
//! names them, and how their status tells a rollout's progress. Everything else (intent, hash,
//! apply, removal) is the same for all, and reads a workload through [`Templated`].

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetStatus, Deployment, DeploymentCondition, DeploymentStatus, StatefulSet,
    StatefulSetStatus,
};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ObjectReference, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::annotations;
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
    /// Its pod template.
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// Its rollout, as its status reports it; `None` for a kind without rollouts (a CronJob's
    /// template is used by its next Job).
    fn progress(&self) -> Option<Progress>;

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
        annotations::template_hash(self.template()?)
    }
    /// The pod template's labels.
    fn template_labels(&self) -> Option<&BTreeMap<String, String>> {
        self.template()?.metadata.as_ref()?.labels.as_ref()
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

/// A typed workload kind, for its watch and its apply.
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
    /// Its pod template, to trim what the cache keeps.
    fn template_mut(&mut self) -> Option<&mut PodTemplateSpec>;
    /// Drops the status fields that [`Templated::progress`] does not read.
    fn slim_status(&mut self);
}

/// The three `apps/v1` kinds keep their template at `spec.template`; what else differs is
/// their progress and the status it reads.
macro_rules! apps_kind {
    ($t:ty, $kind:expr, $progress:ident, $slim:ident) => {
        impl Object for $t {
            const KIND: Kind = $kind;
            fn template_mut(&mut self) -> Option<&mut PodTemplateSpec> {
                self.spec.as_mut().map(|s| &mut s.template)
            }
            fn slim_status(&mut self) {
                self.status = self.status.take().map($slim);
            }
        }
        impl Templated for $t {
            fn kind(&self) -> Kind {
                $kind
            }
            fn object_meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn template(&self) -> Option<&PodTemplateSpec> {
                self.spec.as_ref().map(|s| &s.template)
            }
            fn progress(&self) -> Option<Progress> {
                Some($progress(self))
            }
        }
    };
}
apps_kind!(
    Deployment,
    Kind::Deployment,
    deployment_progress,
    slim_deployment_status
);
apps_kind!(
    StatefulSet,
    Kind::StatefulSet,
    stateful_set_progress,
    slim_stateful_set_status
);
apps_kind!(
    DaemonSet,
    Kind::DaemonSet,
    daemon_set_progress,
    slim_daemon_set_status
);

impl Templated for CronJob {
    fn kind(&self) -> Kind {
        Kind::CronJob
    }
    fn object_meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        Some(&self.spec.as_ref()?.job_template.spec.as_ref()?.template)
    }
    fn progress(&self) -> Option<Progress> {
        None
    }
}

/// Whether the controller has seen the newest spec.
fn seen(meta: &ObjectMeta, observed: Option<i64>) -> bool {
    meta.generation.is_none() || observed >= meta.generation
}

fn deployment_progress(w: &Deployment) -> Progress {
    let Some(s) = &w.status else {
        return Progress::default();
    };
    Progress {
        caught_up: seen(&w.metadata, s.observed_generation),
        want: w.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        current: s.replicas.unwrap_or(0),
        updated: s.updated_replicas.unwrap_or(0),
        available: s.available_replicas.unwrap_or(0),
        deadline_exceeded: s.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        }),
    }
}

fn stateful_set_progress(w: &StatefulSet) -> Progress {
    let Some(s) = &w.status else {
        return Progress::default();
    };
    Progress {
        // A rolling update ends when the current revision becomes the update revision.
        caught_up: seen(&w.metadata, s.observed_generation)
            && (s.update_revision.is_none() || s.update_revision == s.current_revision),
        want: w.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        current: s.replicas,
        updated: s.updated_replicas.unwrap_or(0),
        available: s.available_replicas.unwrap_or(0),
        deadline_exceeded: false,
    }
}

fn daemon_set_progress(w: &DaemonSet) -> Progress {
    let Some(s) = &w.status else {
        return Progress::default();
    };
    Progress {
        caught_up: seen(&w.metadata, s.observed_generation),
        want: s.desired_number_scheduled,
        current: s.current_number_scheduled,
        updated: s.updated_number_scheduled.unwrap_or(0),
        available: s.number_available.unwrap_or(0),
        deadline_exceeded: false,
    }
}

/// Of a Deployment's status, what [`deployment_progress`] reads.
fn slim_deployment_status(s: DeploymentStatus) -> DeploymentStatus {
    DeploymentStatus {
        observed_generation: s.observed_generation,
        replicas: s.replicas,
        updated_replicas: s.updated_replicas,
        available_replicas: s.available_replicas,
        conditions: s.conditions.map(|c| {
            c.into_iter()
                .filter(|c| c.type_ == "Progressing")
                .map(|c| DeploymentCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    }
}

/// Of a StatefulSet's status, what [`stateful_set_progress`] reads.
fn slim_stateful_set_status(s: StatefulSetStatus) -> StatefulSetStatus {
    StatefulSetStatus {
        observed_generation: s.observed_generation,
        replicas: s.replicas,
        updated_replicas: s.updated_replicas,
        available_replicas: s.available_replicas,
        current_revision: s.current_revision,
        update_revision: s.update_revision,
        ..Default::default()
    }
}

/// Of a DaemonSet's status, what [`daemon_set_progress`] reads.
fn slim_daemon_set_status(s: DaemonSetStatus) -> DaemonSetStatus {
    DaemonSetStatus {
        observed_generation: s.observed_generation,
        desired_number_scheduled: s.desired_number_scheduled,
        current_number_scheduled: s.current_number_scheduled,
        updated_number_scheduled: s.updated_number_scheduled,
        number_available: s.number_available,
        ..Default::default()
    }
}

impl Object for CronJob {
    const KIND: Kind = Kind::CronJob;
    fn template_mut(&mut self) -> Option<&mut PodTemplateSpec> {
        Some(&mut self.spec.as_mut()?.job_template.spec.as_mut()?.template)
    }
    fn slim_status(&mut self) {
        self.status = None;
    }
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
            of::<Deployment>(json!({"metadata": {"generation": 3},
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
            of::<StatefulSet>(json!({"metadata": {"generation": 2},
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
            of::<DaemonSet>(json!({"metadata": {"generation": 4},
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
            of::<CronJob>(
                json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {}}}}})
            ),
            None,
            "a CronJob has no rollout"
        );
    }

    #[test]
    fn slim_statuses_keep_what_progress_reads() {
        let mut d: StatefulSet = serde_json::from_value(json!({"metadata": {"generation": 2},
            "spec": {"replicas": 1, "selector": {}, "template": {}, "serviceName": "s"},
            "status": {"observedGeneration": 2, "replicas": 1, "updatedReplicas": 1, "availableReplicas": 1,
                "readyReplicas": 1, "currentRevision": "s-1", "updateRevision": "s-2", "collisionCount": 3}}))
        .unwrap();
        let before = d.progress();
        d.slim_status();
        assert_eq!(d.progress(), before);
        assert_eq!(d.status.as_ref().unwrap().collision_count, None);
        let mut ds: DaemonSet = serde_json::from_value(json!({"metadata": {"generation": 4},
            "spec": {"selector": {}, "template": {}},
            "status": {"observedGeneration": 4, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                "updatedNumberScheduled": 1, "numberAvailable": 2, "numberMisscheduled": 0, "numberReady": 2}}))
        .unwrap();
        let before = ds.progress();
        ds.slim_status();
        assert_eq!(ds.progress(), before);
    }

    #[test]
    fn a_cron_jobs_template_is_its_job_templates() {
        let c: CronJob = serde_json::from_value(json!({"metadata": {"name": "nightly", "namespace": "n"},
            "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": {
                "metadata": {"labels": {"app": "x"}, "annotations": {"kotel.dev/config-hash": "h"}}}}}}}))
        .unwrap();
        assert_eq!(c.config_hash(), Some("h"));
        assert_eq!(c.template_labels().unwrap()["app"], "x");
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

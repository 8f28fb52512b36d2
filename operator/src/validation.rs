//! The Collector image's own check of a configuration: kotel's structural validation cannot
//! know which components an image was built with, or which it has dropped (the `logging`
//! exporter, say), so before a new configuration reaches any workload the image itself runs
//! `validate` on it in a short-lived, hardened Job. The result is kept in the Collector's
//! status under a key of configuration and image, so an unchanged configuration is validated
//! once.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::gateway::{self, Owner};
use crate::sidecar::{CONFIG_ENV, hardened_security_context, resources};

/// The label that marks a validation Job, with the Collector's name as its value.
pub const LABEL: &str = "kotel.dev/validates";

/// What the image said of a configuration, as kept in the Collector's status.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    /// Which configuration and image this is about (a hash of both).
    pub key: String,
    /// `Valid`, `Invalid`, or `Unavailable` (the image could not run `validate`: kotel's own
    /// structural check stands alone).
    pub result: String,
    /// What the image printed, for `Invalid` and `Unavailable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Where a validation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The Job has not finished.
    Pending,
    /// Known.
    Done(Validation),
}

/// The key of a configuration (as the collector reads it) and an image.
pub fn key(config_yaml: &str, image: &str) -> String {
    crate::inject::short_hash(format!("{image}\n{config_yaml}").as_bytes())
}

/// The previous result, when it is about this key: then nothing is run again.
pub fn cached<'a>(previous: Option<&'a Validation>, key: &str) -> Option<&'a Validation> {
    previous.filter(|v| v.key == key)
}

/// `<collector>-validate-<key>`, within the 63 characters of a label value (the Job's pods carry
/// it as `job-name`).
pub fn job_name(collector: &str, key: &str) -> String {
    let suffix = format!("-validate-{key}");
    let room = 63 - suffix.len();
    let head: String = collector.chars().take(room).collect();
    format!("{}{suffix}", head.trim_end_matches('-'))
}

/// The Job that runs `IMAGE validate` on the configuration: no retries, a minute at most, no
/// API token, hardened, gone five minutes after it ends (kotel deletes it as soon as it has
/// read the result).
pub fn job(owner: &Owner<'_>, image: &str, config_yaml: &str, key: &str) -> Job {
    let labels = BTreeMap::from([
        (LABEL.to_string(), owner.name.to_string()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            gateway::MANAGED_BY.to_string(),
        ),
    ]);
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(owner.name, key)),
            namespace: Some(owner.namespace.to_string()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![gateway::owner_reference(owner)]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(60),
            ttl_seconds_after_finished: Some(300),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: "validate".into(),
                        image: Some(image.to_string()),
                        args: Some(vec![
                            "validate".into(),
                            format!("--config=env:{CONFIG_ENV}"),
                        ]),
                        env: Some(vec![EnvVar {
                            name: CONFIG_ENV.into(),
                            value: Some(config_yaml.to_string()),
                            value_from: None,
                        }]),
                        resources: Some(resources(("50m", "64Mi"), ("500m", "256Mi"))),
                        security_context: Some(hardened_security_context()),
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Reasons a container waits with that mean it will never run here.
const CANNOT_RUN: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
];

/// What a validation Job and its pod say.
pub fn outcome(key: &str, job: &Job, pod: Option<&Pod>) -> Outcome {
    let done = |result: &str, message: Option<String>| {
        Outcome::Done(Validation {
            key: key.to_string(),
            result: result.to_string(),
            message,
        })
    };
    let status = pod
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first());
    if let Some(t) = status.and_then(|c| c.state.as_ref()?.terminated.as_ref()) {
        return if t.exit_code == 0 {
            done("Valid", None)
        } else {
            let printed = t.message.clone().unwrap_or_default();
            done("Invalid", Some(explain(printed.trim())))
        };
    }
    if let Some(w) = status.and_then(|c| c.state.as_ref()?.waiting.as_ref())
        && CANNOT_RUN.contains(&w.reason.as_deref().unwrap_or_default())
    {
        return done(
            "Unavailable",
            Some(format!(
                "{}: {}",
                w.reason.as_deref().unwrap_or_default(),
                w.message.as_deref().unwrap_or_default()
            )),
        );
    }
    let failed = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Failed" && c.status == "True"));
    match failed {
        Some(c) => done(
            "Unavailable",
            Some(format!(
                "the validate Job did not run: {} {}",
                c.reason.as_deref().unwrap_or_default(),
                c.message.as_deref().unwrap_or_default()
            )),
        ),
        None => Outcome::Pending,
    }
}

/// Components that collectors have removed, and what replaced them.
const REPLACED: [(&str, &str); 2] = [("logging", "debug"), ("loggingexporter", "debug")];

/// The collector's message, with the component it names and, for a removed one, its
/// replacement.
pub fn explain(printed: &str) -> String {
    // The collector prints `... unknown type: "fancy" for id: "fancy" ...` for a component it
    // lacks, and `'exporters' the logging exporter has been deprecated, ...` for one removed.
    let unknown = printed
        .split("unknown type: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .or_else(|| {
            let (head, _) = printed.split_once(" has been deprecated")?;
            let mut words = head.rsplit(' ');
            let _kind = words.next()?;
            words.next()
        });
    let last_line = printed.lines().last().unwrap_or(printed).trim();
    match unknown {
        Some(c) => {
            let hint = REPLACED
                .iter()
                .find(|(old, _)| *old == c)
                .map(|(old, new)| format!(": the {old} component was removed from current collectors; use {new} instead"))
                .unwrap_or_else(|| ": the image has no such component; use one it was built with, or another image".into());
            format!(
                "component \"{c}\" is not in this collector image{hint} (validate said: {last_line})"
            )
        }
        None => format!("the collector image's validate refused the configuration: {last_line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"status": {"containerStatuses": [status]}})).unwrap()
    }

    fn container_status(state: serde_json::Value) -> serde_json::Value {
        json!({"name": "validate", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": state})
    }

    #[test]
    fn the_job_is_hardened_bounded_and_owned_by_the_collector() {
        let owner = Owner {
            name: "side",
            namespace: "shop",
            uid: "u1",
        };
        let j = job(&owner, "otel/col:1", "receivers: {}\n", "abc");
        assert_eq!(j.metadata.name.as_deref(), Some("side-validate-abc"));
        assert_eq!(j.metadata.owner_references.as_ref().unwrap()[0].uid, "u1");
        let spec = j.spec.unwrap();
        assert_eq!(
            (spec.backoff_limit, spec.active_deadline_seconds),
            (Some(0), Some(60))
        );
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(c.args.as_ref().unwrap()[0], "validate");
        assert_eq!(
            c.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        assert_eq!(
            c.env.as_ref().unwrap()[0].value.as_deref(),
            Some("receivers: {}\n")
        );
        assert!(job_name(&"x".repeat(80), "0123456789").len() <= 63);
    }

    #[test]
    fn the_key_follows_config_and_image_and_a_cached_result_needs_no_job() {
        let k = key("a: 1\n", "img:1");
        assert_ne!(k, key("a: 2\n", "img:1"));
        assert_ne!(k, key("a: 1\n", "img:2"));
        let v = Validation {
            key: k.clone(),
            result: "Valid".into(),
            message: None,
        };
        assert_eq!(cached(Some(&v), &k), Some(&v));
        assert_eq!(cached(Some(&v), "other"), None);
        assert_eq!(cached(None, &k), None);
    }

    #[test]
    fn the_pod_tells_valid_invalid_unavailable_or_pending() {
        let job = Job::default();
        let ok = pod(container_status(json!({"terminated": {"exitCode": 0}})));
        assert!(matches!(outcome("k", &job, Some(&ok)), Outcome::Done(v) if v.result == "Valid"));
        let bad = pod(container_status(json!({"terminated": {"exitCode": 1,
            "message": "Error: failed to get config: cannot unmarshal the configuration: decoding failed due to the following error(s):\n\n'exporters' unknown type: \"logging\" for id: \"logging\" (valid values: [debug otlp otlphttp])\n"}})));
        match outcome("k", &job, Some(&bad)) {
            Outcome::Done(v) => {
                assert_eq!(v.result, "Invalid");
                let m = v.message.unwrap();
                assert!(
                    m.contains("\"logging\"") && m.contains("use debug instead"),
                    "{m}"
                );
            }
            other => panic!("{other:?}"),
        }
        let pull = pod(container_status(
            json!({"waiting": {"reason": "ErrImagePull", "message": "no route"}}),
        ));
        assert!(
            matches!(outcome("k", &job, Some(&pull)), Outcome::Done(v) if v.result == "Unavailable")
        );
        let creating = pod(container_status(
            json!({"waiting": {"reason": "ContainerCreating"}}),
        ));
        assert_eq!(outcome("k", &job, Some(&creating)), Outcome::Pending);
        assert_eq!(outcome("k", &job, None), Outcome::Pending);
        let deadline: Job = serde_json::from_value(json!({"status": {"conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]}})).unwrap();
        assert!(
            matches!(outcome("k", &deadline, None), Outcome::Done(v) if v.result == "Unavailable")
        );
    }

    #[test]
    fn an_unknown_component_is_named_with_its_replacement() {
        let m = explain("'exporters' unknown type: \"fancy\" for id: \"fancy\"");
        assert!(
            m.contains("\"fancy\"") && m.contains("no such component"),
            "{m}"
        );
        let m = explain("some other failure");
        assert!(
            m.contains("refused") && m.contains("some other failure"),
            "{m}"
        );
    }
}

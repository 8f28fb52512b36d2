//! The objects of a Collector in `deployment` or `daemonset` mode: a ServiceAccount, a ConfigMap
//! with the validated configuration, the Deployment or DaemonSet, and a Service with the derived
//! ports. All are owned by the Collector, so Kubernetes' garbage collector removes them with it,
//! and the pod template carries a hash of the configuration, so a change rolls the pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, PodSpec, PodTemplateSpec, Service, ServiceAccount,
    ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::annotations::CONFIG_HASH;
use crate::collector::{CollectorPort, CollectorSpec, Mode, ValidConfig};
use crate::inject::short_hash;
use crate::sidecar;

/// The label every gateway object carries; its value is the Collector's name.
pub const COLLECTOR_LABEL: &str = "kotel.dev/collector";
/// `app.kubernetes.io/managed-by` value, which the operator's watch of its own workloads selects.
pub const MANAGED_BY: &str = "kotel";
/// The collector container's name.
pub const CONTAINER_NAME: &str = "collector";
/// Where the ConfigMap is mounted, and the file the collector reads.
pub const CONFIG_DIR: &str = "/conf";
/// The ConfigMap key holding the configuration.
pub const CONFIG_KEY: &str = "collector.yaml";

/// The name of every object of the Collector `name`: `<name>-collector`.
pub fn object_name(collector: &str) -> String {
    format!("{collector}-collector")
}

/// Whether `meta` is a gateway workload kotel runs for a Collector. The injection controller
/// leaves those alone: they carry kotel's fields, and its own intent for them is empty.
pub fn is_gateway_workload(meta: &ObjectMeta) -> bool {
    meta.labels.as_ref().is_some_and(|l| {
        l.contains_key(COLLECTOR_LABEL)
            && l.get("app.kubernetes.io/managed-by").map(String::as_str) == Some(MANAGED_BY)
    })
}

/// The Collector these objects belong to.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its uid (the owner reference needs it).
    pub uid: &'a str,
}

/// The workload that runs the collector pods.
#[derive(Debug, Clone, PartialEq)]
pub enum Workload {
    /// `deployment` mode.
    Deployment(Deployment),
    /// `daemonset` mode.
    DaemonSet(DaemonSet),
}

/// Everything a gateway Collector consists of.
#[derive(Debug, Clone, PartialEq)]
pub struct Objects {
    /// The pods' identity (no permissions of its own; bind roles to it for processors such as
    /// k8sattributes).
    pub service_account: ServiceAccount,
    /// The validated configuration.
    pub config_map: ConfigMap,
    /// The Deployment or DaemonSet.
    pub workload: Workload,
    /// The Service in front of the pods, with the derived ports.
    pub service: Service,
    /// The hash on the pod template.
    pub hash: String,
}

fn labels(owner: &Owner<'_>, mode: Mode) -> BTreeMap<String, String> {
    BTreeMap::from([
        (COLLECTOR_LABEL.to_string(), owner.name.to_string()),
        (
            "app.kubernetes.io/name".to_string(),
            "opentelemetry-collector".to_string(),
        ),
        (
            "app.kubernetes.io/instance".to_string(),
            format!("{}.{}", owner.namespace, owner.name),
        ),
        (
            "app.kubernetes.io/component".to_string(),
            match mode {
                Mode::Daemonset => "agent",
                _ => "gateway",
            }
            .to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            MANAGED_BY.to_string(),
        ),
    ])
}

/// The reference that makes an object the Collector's (garbage-collected with it).
pub fn owner_reference(owner: &Owner<'_>) -> OwnerReference {
    OwnerReference {
        api_version: "kotel.dev/v1alpha1".to_string(),
        kind: "Collector".to_string(),
        name: owner.name.to_string(),
        uid: owner.uid.to_string(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

fn metadata(owner: &Owner<'_>, mode: Mode) -> ObjectMeta {
    ObjectMeta {
        name: Some(object_name(owner.name)),
        namespace: Some(owner.namespace.to_string()),
        labels: Some(labels(owner, mode)),
        owner_references: Some(vec![owner_reference(owner)]),
        ..Default::default()
    }
}

fn container(spec: &CollectorSpec, ports: &[CollectorPort]) -> Container {
    Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(spec.image().to_string()),
        args: Some(vec![format!("--config={CONFIG_DIR}/{CONFIG_KEY}")]),
        env: (!spec.env.is_empty()).then(|| spec.env.clone()),
        ports: sidecar::container_ports(ports),
        resources: spec.resources.clone(),
        security_context: Some(sidecar::security_context(spec)),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".to_string(),
            mount_path: CONFIG_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// The desired objects of a gateway Collector. `None` in `sidecar` mode, which has none.
pub fn desired(
    owner: &Owner<'_>,
    spec: &CollectorSpec,
    config: &ValidConfig,
    ports: &[CollectorPort],
) -> Option<Objects> {
    let mode = spec.mode;
    if mode == Mode::Sidecar {
        return None;
    }
    let yaml = config.to_yaml();
    let container = container(spec, ports);
    let hash =
        short_hash(&serde_json::to_vec(&(&yaml, &container)).expect("a container serialises"));
    let selector = BTreeMap::from([(COLLECTOR_LABEL.to_string(), owner.name.to_string())]);
    let name = object_name(owner.name);
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(owner, mode)),
            annotations: Some(BTreeMap::from([(CONFIG_HASH.to_string(), hash.clone())])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(name.clone()),
            containers: vec![container],
            volumes: Some(vec![Volume {
                name: "config".to_string(),
                config_map: Some(ConfigMapVolumeSource {
                    name: name.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    };
    let label_selector = LabelSelector {
        match_labels: Some(selector.clone()),
        ..Default::default()
    };
    let workload = match mode {
        Mode::Daemonset => Workload::DaemonSet(DaemonSet {
            metadata: metadata(owner, mode),
            spec: Some(DaemonSetSpec {
                selector: label_selector,
                template,
                ..Default::default()
            }),
            status: None,
        }),
        _ => Workload::Deployment(Deployment {
            metadata: metadata(owner, mode),
            spec: Some(DeploymentSpec {
                replicas: Some(spec.replicas.unwrap_or(1)),
                selector: label_selector,
                template,
                ..Default::default()
            }),
            status: None,
        }),
    };
    Some(Objects {
        service_account: ServiceAccount {
            metadata: metadata(owner, mode),
            ..Default::default()
        },
        config_map: ConfigMap {
            metadata: metadata(owner, mode),
            data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), yaml)])),
            ..Default::default()
        },
        workload,
        service: Service {
            metadata: metadata(owner, mode),
            spec: Some(ServiceSpec {
                selector: Some(selector),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .iter()
                        .map(|p| ServicePort {
                            name: Some(p.name.clone()),
                            port: p.port,
                            target_port: Some(IntOrString::Int(p.port)),
                            protocol: Some(p.protocol.clone()),
                            ..Default::default()
                        })
                        .collect()
                }),
                ..Default::default()
            }),
            status: None,
        },
        hash,
    })
}

/// A gateway's objects as they run now (from the operator's stores), `None` where missing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live<'a> {
    /// The ServiceAccount.
    pub service_account: Option<&'a ServiceAccount>,
    /// The ConfigMap.
    pub config_map: Option<&'a ConfigMap>,
    /// The Service.
    pub service: Option<&'a Service>,
    /// The Deployment (deployment mode).
    pub deployment: Option<&'a Deployment>,
    /// The DaemonSet (daemonset mode).
    pub daemon_set: Option<&'a DaemonSet>,
}

/// Which of a gateway's objects kotel must (re)apply: missing ones, and ones whose fields kotel
/// sets differ from what it wants (an edit or a deletion by someone else is repaired).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drift {
    /// The ServiceAccount.
    pub service_account: bool,
    /// The ConfigMap.
    pub config_map: bool,
    /// The Service.
    pub service: bool,
    /// The Deployment or DaemonSet.
    pub workload: bool,
}

impl Drift {
    /// Nothing to write.
    pub fn is_none(&self) -> bool {
        *self == Drift::default()
    }
}

/// The Service ports as kotel sets them: (name, port, target port, protocol).
fn port_keys(s: &Service) -> Vec<(Option<String>, i32, Option<IntOrString>, String)> {
    s.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| {
            (
                p.name.clone(),
                p.port,
                p.target_port.clone(),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            )
        })
        .collect()
}

/// Whether every entry of `want` is in `live` with the same value. Server-side apply merges
/// maps and keyed lists, so what another manager added stays and is not drift: comparing for
/// equality would re-apply forever.
fn has_all<K: Ord, V: PartialEq>(
    live: Option<&BTreeMap<K, V>>,
    want: Option<&BTreeMap<K, V>>,
) -> bool {
    want.into_iter()
        .flatten()
        .all(|(k, v)| live.and_then(|l| l.get(k)) == Some(v))
}

fn selector(s: &Service) -> Option<&BTreeMap<String, String>> {
    s.spec.as_ref().and_then(|s| s.selector.as_ref())
}

/// Compares what runs with what kotel wants, field by field of what kotel sets.
pub fn drift(want: &Objects, live: &Live<'_>) -> Drift {
    let labelled = |m: &ObjectMeta| is_gateway_workload(m);
    let workload = match &want.workload {
        Workload::Deployment(d) => live.deployment.is_none_or(|l| {
            let (Some(ls), Some(ws)) = (l.spec.as_ref(), d.spec.as_ref()) else {
                return true;
            };
            crate::annotations::template_hash(&ls.template) != Some(want.hash.as_str())
                || ls.replicas != ws.replicas
                || !labelled(&l.metadata)
        }),
        Workload::DaemonSet(_) => live.daemon_set.is_none_or(|l| {
            l.spec
                .as_ref()
                .and_then(|s| crate::annotations::template_hash(&s.template))
                != Some(want.hash.as_str())
                || !labelled(&l.metadata)
        }),
    };
    Drift {
        service_account: live.service_account.is_none_or(|l| !labelled(&l.metadata)),
        config_map: live.config_map.is_none_or(|l| {
            !labelled(&l.metadata) || !has_all(l.data.as_ref(), want.config_map.data.as_ref())
        }),
        service: live.service.is_none_or(|l| {
            let ports = port_keys(l);
            !labelled(&l.metadata)
                || !port_keys(&want.service).iter().all(|p| ports.contains(p))
                || !has_all(selector(l), selector(&want.service))
        }),
        workload,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::spec_for_tests as spec;
    use crate::collector::{ports_for, validate_config};
    use serde_json::json;

    const OWNER: Owner<'static> = Owner {
        name: "gw",
        namespace: "obs",
        uid: "1234",
    };

    fn render(s: &CollectorSpec) -> Option<Objects> {
        let c = validate_config(&s.config).unwrap();
        desired(&OWNER, s, &c, &ports_for(s, &c))
    }

    fn deployment(o: &Objects) -> &Deployment {
        match &o.workload {
            Workload::Deployment(d) => d,
            other => panic!("expected a Deployment, got {other:?}"),
        }
    }

    fn template_meta(o: &Objects) -> ObjectMeta {
        deployment(o)
            .spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .clone()
            .unwrap()
    }

    #[test]
    fn gateway_workloads_are_recognised_by_both_labels() {
        let o = render(&spec(json!({}))).unwrap();
        assert!(is_gateway_workload(&deployment(&o).metadata));
        let mut user = deployment(&o).metadata.clone();
        user.labels
            .as_mut()
            .unwrap()
            .insert("app.kubernetes.io/managed-by".into(), "Helm".into());
        assert!(!is_gateway_workload(&user));
        assert!(!is_gateway_workload(&ObjectMeta::default()));
    }

    #[test]
    fn sidecar_mode_has_no_gateway_objects() {
        assert!(render(&spec(json!({"mode": "sidecar"}))).is_none());
    }

    #[test]
    fn deployment_mode_is_the_default_and_owns_every_object() {
        let o = render(&spec(json!({}))).unwrap();
        let d = deployment(&o);
        for meta in [
            &o.service_account.metadata,
            &o.config_map.metadata,
            &d.metadata,
            &o.service.metadata,
        ] {
            assert_eq!(meta.name.as_deref(), Some("gw-collector"));
            assert_eq!(meta.namespace.as_deref(), Some("obs"));
            let r = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (r.kind.as_str(), r.name.as_str(), r.uid.as_str()),
                ("Collector", "gw", "1234")
            );
            assert_eq!(r.controller, Some(true));
            assert_eq!(
                meta.labels.as_ref().unwrap()["app.kubernetes.io/managed-by"],
                MANAGED_BY
            );
        }
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(1));
    }

    #[test]
    fn config_map_holds_the_validated_yaml_and_the_pod_mounts_it() {
        let s = spec(
            json!({"config": "receivers: {otlp: {protocols: {grpc: {}}}}\nexporters: {debug: {}}\nservice: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}\n"}),
        );
        let o = render(&s).unwrap();
        let yaml = &o.config_map.data.as_ref().unwrap()[CONFIG_KEY];
        let back: serde_json::Value = serde_norway::from_str(yaml).unwrap();
        assert_eq!(back["exporters"], json!({"debug": {}}));
        let pod = deployment(&o)
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .clone()
            .unwrap();
        let c = &pod.containers[0];
        assert_eq!(
            c.args.as_ref().unwrap(),
            &vec!["--config=/conf/collector.yaml".to_string()]
        );
        assert_eq!(c.volume_mounts.as_ref().unwrap()[0].mount_path, CONFIG_DIR);
        let v = &pod.volumes.as_ref().unwrap()[0];
        assert_eq!(v.config_map.as_ref().unwrap().name, "gw-collector");
        assert_eq!(pod.service_account_name.as_deref(), Some("gw-collector"));
        assert_eq!(
            c.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
    }

    #[test]
    fn service_ports_come_from_the_receivers_and_select_the_pods() {
        let o = render(&spec(json!({}))).unwrap();
        let svc = o.service.spec.as_ref().unwrap();
        let ports: Vec<(String, i32)> = svc
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.port))
            .collect();
        assert_eq!(
            ports,
            vec![
                ("otlp-grpc".to_string(), 4317),
                ("otlp-http".to_string(), 4318)
            ]
        );
        let template_labels = template_meta(&o).labels.unwrap();
        for (k, v) in svc.selector.as_ref().unwrap() {
            assert_eq!(template_labels.get(k), Some(v));
        }
    }

    #[test]
    fn replicas_and_daemonset_mode() {
        let o = render(&spec(json!({"replicas": 3}))).unwrap();
        assert_eq!(deployment(&o).spec.as_ref().unwrap().replicas, Some(3));
        let o = render(&spec(json!({"mode": "daemonset"}))).unwrap();
        let Workload::DaemonSet(ds) = &o.workload else {
            panic!("expected a DaemonSet")
        };
        assert_eq!(ds.metadata.name.as_deref(), Some("gw-collector"));
        assert_eq!(
            ds.metadata.labels.as_ref().unwrap()["app.kubernetes.io/component"],
            "agent"
        );
    }

    #[test]
    fn the_hash_follows_the_config_and_the_image_and_nothing_else() {
        let base = render(&spec(json!({}))).unwrap();
        assert_eq!(base.hash, render(&spec(json!({}))).unwrap().hash);
        assert_eq!(base.hash.len(), 10);
        let annotated = template_meta(&base).annotations.unwrap();
        assert_eq!(annotated[CONFIG_HASH], base.hash);
        let other_config = render(&spec(json!({"config": {
            "receivers": {"otlp": {"protocols": {"grpc": {}}}},
            "exporters": {"debug": {"verbosity": "detailed"}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}}
        }})))
        .unwrap();
        assert_ne!(base.hash, other_config.hash);
        let other_image = render(&spec(json!({"image": "example/otelcol:1"}))).unwrap();
        assert_ne!(base.hash, other_image.hash);
        // Replicas scale the Deployment without rolling its pods.
        assert_eq!(
            base.hash,
            render(&spec(json!({"replicas": 2}))).unwrap().hash
        );
    }

    #[test]
    fn drift_finds_missing_and_edited_objects_and_nothing_in_steady_state() {
        let want = render(&spec(json!({"mode": "deployment"}))).unwrap();
        let Workload::Deployment(d) = &want.workload else {
            panic!("deployment mode")
        };
        // What the API server returns: kotel's fields plus defaults.
        let mut svc = want.service.clone();
        svc.spec.as_mut().unwrap().cluster_ip = Some("198.19.0.7".into());
        svc.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        let live = Live {
            service_account: Some(&want.service_account),
            config_map: Some(&want.config_map),
            service: Some(&svc),
            deployment: Some(d),
            daemon_set: None,
        };
        assert!(drift(&want, &live).is_none(), "{:?}", drift(&want, &live));

        assert!(drift(&want, &Live::default()).service_account);
        assert_eq!(
            drift(&want, &Live::default()),
            Drift {
                service_account: true,
                config_map: true,
                service: true,
                workload: true
            }
        );
        let gone = Live {
            service: None,
            ..live
        };
        assert_eq!(
            drift(&want, &gone),
            Drift {
                service: true,
                ..Drift::default()
            }
        );

        let mut edited_cm = want.config_map.clone();
        edited_cm
            .data
            .as_mut()
            .unwrap()
            .insert(CONFIG_KEY.into(), "receivers: {}".into());
        assert!(
            drift(
                &want,
                &Live {
                    config_map: Some(&edited_cm),
                    ..live
                }
            )
            .config_map
        );

        let mut edited_svc = svc.clone();
        edited_svc.spec.as_mut().unwrap().ports.as_mut().unwrap()[0].port = 9999;
        assert!(
            drift(
                &want,
                &Live {
                    service: Some(&edited_svc),
                    ..live
                }
            )
            .service
        );
        let mut reselected = svc.clone();
        reselected.spec.as_mut().unwrap().selector =
            Some(BTreeMap::from([("app".into(), "x".into())]));
        assert!(
            drift(
                &want,
                &Live {
                    service: Some(&reselected),
                    ..live
                }
            )
            .service
        );

        let mut scaled = d.clone();
        scaled.spec.as_mut().unwrap().replicas = Some(5);
        assert!(
            drift(
                &want,
                &Live {
                    deployment: Some(&scaled),
                    ..live
                }
            )
            .workload
        );

        // A same-named object that is not kotel's is never taken as the gateway's.
        let mut foreign = want.service_account.clone();
        foreign.metadata.labels = None;
        assert!(
            drift(
                &want,
                &Live {
                    service_account: Some(&foreign),
                    ..live
                }
            )
            .service_account
        );
    }
}

//! The `Collector` custom resource, and the pure checks on its configuration: parsing (object or
//! YAML string), validation, and the ports its receivers listen on.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The upstream collector image used when `spec.image` is not set.
pub const DEFAULT_IMAGE: &str = "otel/opentelemetry-collector-contrib:0.140.0";

/// The desired collector: how it runs and its configuration.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
// kube-derive takes one `printcolumn(...)` per column, which clippy reads as duplicates.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "kotel.dev",
    version = "v1alpha1",
    kind = "Collector",
    doc = "An OpenTelemetry Collector that kotel runs: as a native sidecar in the pods of Deployments annotated kotel.dev/sidecar, or as a shared gateway.",
    namespaced,
    shortname = "kcol",
    category = "kotel",
    status = "CollectorStatus",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Image", type_ = "string", json_path = ".status.image"),
    printcolumn(name = "Workloads", type_ = "integer", json_path = ".status.workloads"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CollectorSpec {
    /// How the collector runs: `sidecar` (a native sidecar in each annotated pod), `deployment` (a shared gateway) or `daemonset` (one per node).
    #[serde(default)]
    pub mode: Mode,

    /// The collector image. Defaults to a pinned upstream collector-contrib image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Number of replicas in `deployment` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,

    /// Resource requests and limits of the collector container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra environment variables of the collector container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// The collector container's security context. Defaults to non-root, read-only root filesystem, all capabilities dropped and seccomp RuntimeDefault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,

    /// The collector configuration (receivers, processors, exporters, connectors, extensions, service), either as an object or as a YAML string. Invalid configuration never reaches a pod.
    #[schemars(schema_with = "any_config_schema")]
    pub config: Value,

    /// Ports the collector listens on. By default derived from the receivers in `config`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<CollectorPort>>,
}

/// How a collector runs.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A native sidecar in the pods of every Deployment annotated `kotel.dev/sidecar`.
    Sidecar,
    /// A Deployment with a Service: a shared gateway.
    #[default]
    Deployment,
    /// A DaemonSet: one collector per node.
    Daemonset,
}

/// A port the collector listens on.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectorPort {
    /// The port name (an IANA service name: lowercase letters, digits and '-', at most 15 characters).
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$"))]
    pub name: String,
    /// The port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// `TCP` (default) or `UDP`.
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "TCP".to_string()
}

/// What kotel observed of this Collector.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectorStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `ConfigValid` (the configuration parsed and every pipeline names defined components) and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Desired collector pods (deployment and daemonset modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready collector pods (deployment and daemonset modes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The image the collector runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Sidecar mode: how many workloads (of every kind) carry this collector.
    #[serde(default)]
    pub workloads: i32,
    /// The same count by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_kind: Option<crate::status::ByKind>,
    /// What the collector image's own `validate` said of the current configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<crate::validation::Validation>,
}

fn any_config_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "The collector configuration, as an object or as a YAML string.",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

impl CollectorSpec {
    /// The image the collector runs.
    pub fn image(&self) -> &str {
        self.image.as_deref().unwrap_or(DEFAULT_IMAGE)
    }
}

/// The largest configuration kotel carries: a sidecar's goes into every pod template of its
/// workloads (an object is at most 1.5 MiB in etcd), a gateway's into a ConfigMap.
pub const MAX_CONFIG_KIB: usize = 256;

/// Why a collector configuration is rejected. Each message names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The configuration is too large to carry in a pod template or a ConfigMap.
    #[error(
        "spec.config is {0} KiB; kotel carries it in the pod template (sidecar) or a ConfigMap (gateway), so it must stay under {MAX_CONFIG_KIB} KiB: move large parts (such as scrape target lists) into files the collector reads, or split the collector"
    )]
    TooLarge(usize),
    /// The YAML string does not parse.
    #[error("spec.config is not valid YAML: {0}")]
    Yaml(String),
    /// The configuration is not a mapping.
    #[error("spec.config must be a mapping (or a YAML string holding one), found {0}")]
    NotAMapping(&'static str),
    /// A section has the wrong shape.
    #[error("spec.config.{0} must be a mapping of component ids")]
    SectionNotAMapping(String),
    /// `service.pipelines` is missing or empty.
    #[error(
        "spec.config.service.pipelines is missing or empty: define at least one pipeline, e.g. traces: {{receivers: [otlp], exporters: [debug]}}"
    )]
    NoPipelines,
    /// A pipeline has a bad name or shape.
    #[error("spec.config.service.pipelines.{0}: {1}")]
    BadPipeline(String, String),
    /// Two receivers that pipelines use listen on the same port: the collector would fail to
    /// start with "address already in use".
    #[error(
        "spec.config.receivers: {first} and {second} both listen on {transport} port {port}, so the collector could not start; give one of them another endpoint (e.g. endpoint: 0.0.0.0:{alternative})"
    )]
    DuplicatePort {
        /// The first receiver protocol (`otlp` grpc, say, as `otlp.protocols.grpc`).
        first: String,
        /// The second one.
        second: String,
        /// TCP or UDP.
        transport: &'static str,
        /// The port.
        port: u16,
        /// A free port to suggest.
        alternative: u16,
    },
    /// A pipeline or the service names a component that is not defined.
    #[error(
        "spec.config.service.{at} names {kind} '{id}', which is not defined under spec.config.{section}; define it there or remove it from the list"
    )]
    Undefined {
        /// Where the reference is.
        at: String,
        /// receiver, processor, exporter or extension.
        kind: &'static str,
        /// The component id.
        id: String,
        /// The section that should define it.
        section: &'static str,
    },
}

/// A parsed, validated collector configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig {
    /// The configuration as a JSON object.
    pub value: Value,
}

impl ValidConfig {
    /// The configuration as YAML, the form the collector reads from `--config=env:...`.
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(&self.value).expect("a JSON value always serialises to YAML")
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Parses `spec.config` (an object, or a YAML string) and checks what the collector itself would
/// reject at start-up: no pipelines, a pipeline that names an undefined component, an unknown
/// signal, an extension in `service.extensions` that is not defined.
pub fn validate_config(config: &Value) -> Result<ValidConfig, ConfigError> {
    let size = match config {
        Value::String(s) => s.len(),
        other => serde_json::to_vec(other).map(|v| v.len()).unwrap_or(0),
    };
    if size > MAX_CONFIG_KIB * 1024 {
        return Err(ConfigError::TooLarge(size.div_ceil(1024)));
    }
    let value = match config {
        Value::String(s) => {
            serde_norway::from_str::<Value>(s).map_err(|e| ConfigError::Yaml(e.to_string()))?
        }
        other => other.clone(),
    };
    let root = value
        .as_object()
        .ok_or_else(|| ConfigError::NotAMapping(kind_of(&value)))?;

    let section = |name: &str| -> Result<BTreeSet<String>, ConfigError> {
        match root.get(name) {
            None | Some(Value::Null) => Ok(BTreeSet::new()),
            Some(Value::Object(m)) => Ok(m.keys().cloned().collect()),
            Some(_) => Err(ConfigError::SectionNotAMapping(name.to_string())),
        }
    };
    let receivers = section("receivers")?;
    let processors = section("processors")?;
    let exporters = section("exporters")?;
    let connectors = section("connectors")?;
    let extensions = section("extensions")?;

    let service = match root.get("service") {
        Some(Value::Object(s)) => s,
        Some(_) => return Err(ConfigError::SectionNotAMapping("service".into())),
        None => return Err(ConfigError::NoPipelines),
    };
    let pipelines = match service.get("pipelines") {
        Some(Value::Object(p)) if !p.is_empty() => p,
        _ => return Err(ConfigError::NoPipelines),
    };

    let mut used = BTreeSet::new();
    for (name, pipeline) in pipelines {
        let signal = name.split('/').next().unwrap_or_default();
        if !matches!(signal, "traces" | "metrics" | "logs" | "profiles") {
            return Err(ConfigError::BadPipeline(
                name.clone(),
                "a pipeline is named after its signal (traces, metrics, logs, profiles), optionally followed by /name".into(),
            ));
        }
        let p = pipeline.as_object().ok_or_else(|| {
            ConfigError::BadPipeline(name.clone(), "must be a mapping of component lists".into())
        })?;
        let list = |key: &str| -> Result<Vec<String>, ConfigError> {
            match p.get(key) {
                None | Some(Value::Null) => Ok(vec![]),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|i| {
                        i.as_str().map(str::to_string).ok_or_else(|| {
                            ConfigError::BadPipeline(
                                name.clone(),
                                format!("{key} must be a list of component ids"),
                            )
                        })
                    })
                    .collect(),
                Some(_) => Err(ConfigError::BadPipeline(
                    name.clone(),
                    format!("{key} must be a list of component ids"),
                )),
            }
        };
        let (recv, procs, exps) = (list("receivers")?, list("processors")?, list("exporters")?);
        if recv.is_empty() {
            return Err(ConfigError::BadPipeline(
                name.clone(),
                "needs at least one receiver".into(),
            ));
        }
        if exps.is_empty() {
            return Err(ConfigError::BadPipeline(
                name.clone(),
                "needs at least one exporter".into(),
            ));
        }
        let at = |key: &str| format!("pipelines.{name}.{key}");
        used.extend(recv.iter().cloned());
        for id in recv {
            if !receivers.contains(&id) && !connectors.contains(&id) {
                return Err(ConfigError::Undefined {
                    at: at("receivers"),
                    kind: "receiver",
                    id,
                    section: "receivers",
                });
            }
        }
        for id in procs {
            if !processors.contains(&id) {
                return Err(ConfigError::Undefined {
                    at: at("processors"),
                    kind: "processor",
                    id,
                    section: "processors",
                });
            }
        }
        for id in exps {
            if !exporters.contains(&id) && !connectors.contains(&id) {
                return Err(ConfigError::Undefined {
                    at: at("exporters"),
                    kind: "exporter",
                    id,
                    section: "exporters",
                });
            }
        }
    }
    match service.get("extensions") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for id in items {
                let id = id.as_str().unwrap_or_default().to_string();
                if !extensions.contains(&id) {
                    return Err(ConfigError::Undefined {
                        at: "extensions".into(),
                        kind: "extension",
                        id,
                        section: "extensions",
                    });
                }
            }
        }
        Some(_) => return Err(ConfigError::SectionNotAMapping("service.extensions".into())),
    }
    // Only the receivers that pipelines use are started, so only they can collide.
    let mut bound: BTreeMap<(u16, &'static str), String> = BTreeMap::new();
    for l in listeners(&value)
        .into_iter()
        .filter(|l| used.contains(&l.receiver))
    {
        let at = if l.protocol.is_empty() {
            l.receiver.clone()
        } else {
            format!("{}.protocols.{}", l.receiver, l.protocol)
        };
        if let Some(first) = bound.get(&(l.port, l.transport)) {
            let taken: BTreeSet<u16> = bound.keys().map(|(p, _)| *p).collect();
            let alternative = (l.port.saturating_add(1)..=u16::MAX)
                .find(|p| !taken.contains(p))
                .unwrap_or(l.port);
            return Err(ConfigError::DuplicatePort {
                first: first.clone(),
                second: at,
                transport: l.transport,
                port: l.port,
                alternative,
            });
        }
        bound.insert((l.port, l.transport), at);
    }
    Ok(ValidConfig { value })
}

/// One port a receiver protocol listens on.
struct Listener {
    receiver: String,
    /// The protocol key (`grpc`), empty for receivers without protocols.
    protocol: &'static str,
    /// The port name's suffix.
    suffix: &'static str,
    port: u16,
    transport: &'static str,
}

/// Every port the well-known receivers listen on, in receiver order: the default port of each
/// enabled protocol, or the port of its `endpoint`.
fn listeners(config: &Value) -> Vec<Listener> {
    let mut out = Vec::new();
    let Some(receivers) = config.get("receivers").and_then(Value::as_object) else {
        return out;
    };
    for (id, cfg) in receivers {
        let ty = id.split('/').next().unwrap_or_default();
        for &(rtype, protocol, suffix, default, transport) in KNOWN_RECEIVER_PORTS {
            if rtype != ty {
                continue;
            }
            let section = if protocol.is_empty() {
                Some(cfg)
            } else {
                // Without `protocols` the otlp receiver enables nothing; jaeger and zipkin
                // need their protocols listed too.
                cfg.get("protocols").and_then(|p| p.get(protocol))
            };
            let Some(section) = section else { continue };
            let port = section
                .get("endpoint")
                .and_then(Value::as_str)
                .and_then(endpoint_port)
                .unwrap_or(default);
            out.push(Listener {
                receiver: id.clone(),
                protocol,
                suffix,
                port,
                transport,
            });
        }
    }
    out
}

/// Well-known receiver ports: (receiver type, protocol key, port name suffix, port, transport).
const KNOWN_RECEIVER_PORTS: &[(&str, &str, &str, u16, &str)] = &[
    ("otlp", "grpc", "grpc", 4317, "TCP"),
    ("otlp", "http", "http", 4318, "TCP"),
    ("jaeger", "grpc", "grpc", 14250, "TCP"),
    ("jaeger", "thrift_http", "http", 14268, "TCP"),
    ("jaeger", "thrift_compact", "compact", 6831, "UDP"),
    ("jaeger", "thrift_binary", "binary", 6832, "UDP"),
    ("zipkin", "", "", 9411, "TCP"),
];

/// The ports the collector's receivers listen on, in receiver order: the well-known default
/// port of each enabled protocol, or the port of its `endpoint` when one is set.
pub fn derive_ports(config: &ValidConfig) -> Vec<CollectorPort> {
    let mut seen = BTreeSet::new();
    listeners(&config.value)
        .into_iter()
        // An unused receiver may share a used one's port (it is never started).
        .filter(|l| seen.insert((l.port, l.transport)))
        .map(|l| CollectorPort {
            name: port_name(&l.receiver, l.suffix),
            port: i32::from(l.port),
            protocol: l.transport.to_string(),
        })
        .collect()
}

fn endpoint_port(endpoint: &str) -> Option<u16> {
    endpoint.rsplit_once(':')?.1.parse().ok()
}

/// A valid IANA port name (≤ 15 chars, lowercase alphanumerics and '-') for a receiver protocol.
fn port_name(receiver_id: &str, suffix: &str) -> String {
    let base: String = receiver_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let full = if suffix.is_empty() {
        base
    } else {
        format!("{base}-{suffix}")
    };
    let mut name: String = full.chars().take(15).collect();
    while name.ends_with('-') {
        name.pop();
    }
    name
}

/// The receiver ports for the collector: `spec.ports` when given, else derived from `config`.
pub fn ports_for(spec: &CollectorSpec, config: &ValidConfig) -> Vec<CollectorPort> {
    spec.ports.clone().unwrap_or_else(|| derive_ports(config))
}

/// A Collector spec for other modules' tests: a minimal valid config (an OTLP receiver, a
/// debug exporter, one traces pipeline), with the fields of `extra` set over it.
#[cfg(test)]
pub(crate) fn spec_for_tests(extra: serde_json::Value) -> CollectorSpec {
    let mut v = serde_json::json!({
        "config": {
            "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {}}}},
            "exporters": {"debug": {}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}}
        }
    });
    for (k, val) in extra.as_object().expect("extra is an object") {
        v[k] = val.clone();
    }
    serde_json::from_value(v).expect("a valid CollectorSpec")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "receivers": {"otlp": {"protocols": {"grpc": {}, "http": {"endpoint": "0.0.0.0:14318"}}}},
            "processors": {"batch": {}},
            "exporters": {"debug": {}},
            "extensions": {"health_check": {}},
            "service": {"extensions": ["health_check"], "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["debug"]}}}
        })
    }

    #[test]
    fn object_and_yaml_string_are_the_same_config() {
        let obj = validate_config(&good()).unwrap();
        let yaml = serde_norway::to_string(&good()).unwrap();
        let from_string = validate_config(&Value::String(yaml)).unwrap();
        assert_eq!(obj, from_string);
    }

    #[test]
    fn rejects_unparseable_yaml() {
        let e = validate_config(&Value::String("receivers: [otlp\n".into())).unwrap_err();
        assert!(matches!(e, ConfigError::Yaml(_)), "{e}");
        assert!(e.to_string().starts_with("spec.config is not valid YAML"));
    }

    #[test]
    fn rejects_non_mapping() {
        let e = validate_config(&json!([1, 2])).unwrap_err();
        assert_eq!(e, ConfigError::NotAMapping("a list"));
    }

    #[test]
    fn rejects_missing_or_empty_pipelines() {
        let mut c = good();
        c["service"]["pipelines"] = json!({});
        assert_eq!(validate_config(&c).unwrap_err(), ConfigError::NoPipelines);
        c.as_object_mut().unwrap().remove("service");
        assert_eq!(validate_config(&c).unwrap_err(), ConfigError::NoPipelines);
    }

    #[test]
    fn rejects_undefined_exporter_naming_field_and_fix() {
        let mut c = good();
        c["service"]["pipelines"]["traces"]["exporters"] = json!(["otlp/missing"]);
        let e = validate_config(&c).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("spec.config.service.pipelines.traces.exporters"),
            "{msg}"
        );
        assert!(msg.contains("'otlp/missing'"), "{msg}");
        assert!(msg.contains("spec.config.exporters"), "{msg}");
    }

    #[test]
    fn rejects_undefined_receiver_processor_extension() {
        let mut c = good();
        c["service"]["pipelines"]["traces"]["receivers"] = json!(["zipkin"]);
        assert!(matches!(
            validate_config(&c).unwrap_err(),
            ConfigError::Undefined {
                kind: "receiver",
                ..
            }
        ));
        let mut c = good();
        c["service"]["pipelines"]["traces"]["processors"] = json!(["memory_limiter"]);
        assert!(matches!(
            validate_config(&c).unwrap_err(),
            ConfigError::Undefined {
                kind: "processor",
                ..
            }
        ));
        let mut c = good();
        c["service"]["extensions"] = json!(["pprof"]);
        assert!(matches!(
            validate_config(&c).unwrap_err(),
            ConfigError::Undefined {
                kind: "extension",
                ..
            }
        ));
    }

    #[test]
    fn connectors_count_as_receivers_and_exporters() {
        let mut c = good();
        c["connectors"] = json!({"spanmetrics": {}});
        c["service"]["pipelines"]["traces"]["exporters"] = json!(["debug", "spanmetrics"]);
        c["service"]["pipelines"]["metrics"] =
            json!({"receivers": ["spanmetrics"], "exporters": ["debug"]});
        validate_config(&c).unwrap();
    }

    #[test]
    fn rejects_bad_pipeline_names_and_empty_lists() {
        let mut c = good();
        c["service"]["pipelines"]["spans"] = json!({"receivers": ["otlp"], "exporters": ["debug"]});
        assert!(matches!(
            validate_config(&c).unwrap_err(),
            ConfigError::BadPipeline(..)
        ));
        let mut c = good();
        c["service"]["pipelines"]["traces"]["exporters"] = json!([]);
        assert!(matches!(
            validate_config(&c).unwrap_err(),
            ConfigError::BadPipeline(..)
        ));
    }

    #[test]
    fn ports_follow_receivers_and_endpoints() {
        let c = validate_config(&good()).unwrap();
        let ports = derive_ports(&c);
        assert_eq!(
            ports,
            vec![
                CollectorPort {
                    name: "otlp-grpc".into(),
                    port: 4317,
                    protocol: "TCP".into()
                },
                CollectorPort {
                    name: "otlp-http".into(),
                    port: 14318,
                    protocol: "TCP".into()
                },
            ]
        );
    }

    #[test]
    fn ports_for_jaeger_zipkin_and_named_receivers() {
        let c = validate_config(&json!({
            "receivers": {
                "jaeger": {"protocols": {"thrift_compact": {}, "grpc": {}}},
                "zipkin/very-long-receiver-name": {},
                "prometheus": {"config": {}},
                "otlp/only-http": {"protocols": {"http": {}}}
            },
            "exporters": {"debug": {}},
            "service": {"pipelines": {"traces": {"receivers": ["jaeger"], "exporters": ["debug"]}}}
        }))
        .unwrap();
        let ports = derive_ports(&c);
        let got: Vec<(String, i32, String)> = ports
            .into_iter()
            .map(|p| (p.name, p.port, p.protocol))
            .collect();
        assert_eq!(
            got,
            vec![
                ("jaeger-grpc".into(), 14250, "TCP".into()),
                ("jaeger-compact".into(), 6831, "UDP".into()),
                (
                    "otlp-only-http-".trim_end_matches('-').into(),
                    4318,
                    "TCP".into()
                ),
                ("zipkin-very-lon".into(), 9411, "TCP".into()),
            ]
        );
    }

    #[test]
    fn explicit_ports_win() {
        let mut spec: CollectorSpec =
            serde_json::from_value(json!({"mode": "sidecar", "config": good()})).unwrap();
        spec.ports = Some(vec![CollectorPort {
            name: "custom".into(),
            port: 9999,
            protocol: "TCP".into(),
        }]);
        let c = validate_config(&spec.config).unwrap();
        assert_eq!(ports_for(&spec, &c)[0].port, 9999);
        assert_eq!(spec.image(), DEFAULT_IMAGE);
    }

    proptest! {
        #[test]
        fn port_names_are_always_valid(id in "[a-zA-Z0-9_/.-]{1,40}", suffix in "(grpc|http|)") {
            let n = port_name(&id, &suffix);
            prop_assert!(n.len() <= 15);
            prop_assert!(n.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
            prop_assert!(!n.ends_with('-'));
        }

        #[test]
        fn validation_never_panics(s in ".{0,200}") {
            let _ = validate_config(&Value::String(s));
        }
    }

    #[test]
    fn two_used_receivers_on_one_port_are_refused_naming_both_and_a_free_port() {
        let config = |second_used: bool| {
            let receivers = if second_used {
                json!(["otlp", "otlp/two"])
            } else {
                json!(["otlp"])
            };
            json!({
                "receivers": {
                    "otlp": {"protocols": {"grpc": {}, "http": {}}},
                    "otlp/two": {"protocols": {"grpc": {"endpoint": "0.0.0.0:4317"}}},
                },
                "exporters": {"debug": {}},
                "service": {"pipelines": {"traces": {"receivers": receivers, "exporters": ["debug"]}}},
            })
        };
        let e = validate_config(&config(true)).unwrap_err();
        assert_eq!(
            e,
            ConfigError::DuplicatePort {
                first: "otlp.protocols.grpc".into(),
                second: "otlp/two.protocols.grpc".into(),
                transport: "TCP",
                port: 4317,
                alternative: 4319,
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("spec.config.receivers") && msg.contains("0.0.0.0:4319"),
            "{msg}"
        );
        // Unused, the second receiver is never started: accepted, and one port each.
        let ok = validate_config(&config(false)).unwrap();
        assert_eq!(
            derive_ports(&ok).iter().map(|p| p.port).collect::<Vec<_>>(),
            [4317, 4318]
        );
        // grpc and http of one receiver on one port collide too.
        let same = json!({
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": ":4318"}, "http": {}}}},
            "exporters": {"debug": {}},
            "service": {"pipelines": {"logs": {"receivers": ["otlp"], "exporters": ["debug"]}}},
        });
        assert!(matches!(
            validate_config(&same),
            Err(ConfigError::DuplicatePort { port: 4318, .. })
        ));
    }

    #[test]
    fn a_config_too_large_to_carry_is_refused_with_its_size() {
        let mut exporters = serde_json::Map::new();
        for i in 0..20_000 {
            exporters.insert(
                format!("otlp/{i}"),
                serde_json::json!({"endpoint": "backend:4317"}),
            );
        }
        let big = serde_json::json!({"exporters": exporters, "receivers": {"otlp": {}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["otlp/0"]}}}});
        let err = validate_config(&big).unwrap_err();
        assert!(
            matches!(err, ConfigError::TooLarge(kib) if kib > MAX_CONFIG_KIB),
            "{err}"
        );
        assert!(err.to_string().contains("spec.config is"), "{err}");
    }
}

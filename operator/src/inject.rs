//! What kotel injects into a workload: the `OTEL_*` env of each selected container, a
//! language agent, the sidecar, the config hash, and the server-side-apply body that carries
//! exactly that.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Volume, VolumeMount,
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::agent::{self, Language};
use crate::annotations::CONFIG_HASH;
use crate::instrumentation::{InstrumentationSpec, Protocol, parse_interval_ms};
use crate::ownership::Shape;
use crate::sidecar;
use crate::workload::Kind;

/// Downward-API variable holding the pod name.
pub const POD_NAME_VAR: &str = "OTEL_RESOURCE_ATTRIBUTES_POD_NAME";
/// Downward-API variable holding the node name.
pub const NODE_NAME_VAR: &str = "OTEL_RESOURCE_ATTRIBUTES_NODE_NAME";
/// Downward-API variable holding the pod's `app.kubernetes.io/version` label.
pub const VERSION_VAR: &str = "OTEL_RESOURCE_ATTRIBUTES_VERSION";
/// The variable that carries the exporter headers.
pub const HEADERS_VAR: &str = "OTEL_EXPORTER_OTLP_HEADERS";
/// The prefix of the variables that hold a Secret-backed header value (`..._0`, `..._1`), which
/// `OTEL_EXPORTER_OTLP_HEADERS` references as `$(...)`.
pub const HEADER_HOLDER_PREFIX: &str = "KOTEL_OTLP_HEADER_";
/// The label used for the service name when no annotation sets it.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label `service.version` follows. Read through the downward API, it changes in the same
/// user write as the image, so an image bump rolls the workload once, never twice.
pub const VERSION_LABEL: &str = "app.kubernetes.io/version";

/// The parts of a workload that decide what kotel injects.
#[derive(Debug, Clone, Copy)]
pub struct Workload<'a> {
    /// Its kind.
    pub kind: Kind,
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// The pod template's labels.
    pub template_labels: Option<&'a BTreeMap<String, String>>,
    /// The pod template's containers as they are now.
    pub containers: &'a [crate::workload::Container],
    /// The config hash on the pod template now.
    pub current_hash: Option<&'a str>,
    /// What kotel owns now.
    pub owned: &'a Shape,
}

/// A sidecar to add: the Collector's spec and its validated configuration.
#[derive(Debug, Clone, Copy)]
pub struct SidecarSource<'a> {
    /// The Collector's spec.
    pub spec: &'a crate::collector::CollectorSpec,
    /// Its validated configuration.
    pub config: &'a crate::collector::ValidConfig,
}

/// What the workload's annotations asked for, with the objects they name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    /// The Instrumentation to inject (name, spec).
    pub instrumentation: Option<(&'a str, &'a InstrumentationSpec)>,
    /// The sidecar to add.
    pub sidecar: Option<SidecarSource<'a>>,
    /// `kotel.dev/container-names`.
    pub container_names: Option<&'a [String]>,
    /// `kotel.dev/service-name`.
    pub service_name: Option<&'a str>,
    /// `kotel.dev/inject-<language>`: the agent to add.
    pub agent: Option<Language>,
}

/// The fields kotel wants on a workload's pod template.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Intent {
    /// Env vars per container name, in injection order.
    pub containers: Vec<(String, Vec<EnvVar>)>,
    /// The native sidecar.
    pub sidecar: Option<Container>,
    /// The language agent, when at least one container gets it.
    pub agent: Option<AgentIntent>,
    /// Short hash of the above; `None` when there is nothing to inject.
    pub hash: Option<String>,
}

/// What kotel adds to a pod for a language agent.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AgentIntent {
    /// The volume with the agent.
    pub volume: Volume,
    /// The init container that copies it in (copy delivery).
    pub init_container: Option<Container>,
    /// The mount of each container that gets the agent.
    pub mounts: Vec<(String, VolumeMount)>,
}

/// The intent plus what the user should be told about it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The fields to apply.
    pub intent: Intent,
    /// `(container, variable)` pairs the workload sets itself, which kotel leaves alone.
    pub kept_user_vars: Vec<(String, String)>,
    /// Names in `kotel.dev/container-names` that match no container.
    pub unknown_containers: Vec<String>,
    /// `(container, variable)`: containers that get no agent because they set its activation
    /// variable themselves.
    pub agent_skipped: Vec<(String, &'static str)>,
}

/// Why nothing can be planned for a workload until its inputs change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No endpoint and no sidecar to send to.
    #[error(
        "Instrumentation {0} has no spec.exporter.endpoint (nor OTEL_EXPORTER_OTLP_ENDPOINT in its env) and the workload has no kotel sidecar: set spec.exporter.endpoint or annotate kotel.dev/sidecar"
    )]
    MissingEndpoint(String),
    /// The Python agent images carry only the http/protobuf exporter.
    #[error(
        "Instrumentation {0} exports over grpc, but the Python agent exports over http/protobuf only: set spec.exporter.protocol to http/protobuf"
    )]
    AgentProtocol(String),
}

/// `kotel.dev/service-name`, else the template's `app.kubernetes.io/name` label, else the Deployment name.
pub fn service_name(
    annotation: Option<&str>,
    labels: Option<&BTreeMap<String, String>>,
    deployment: &str,
) -> String {
    annotation
        .filter(|s| !s.is_empty())
        .or_else(|| {
            labels
                .and_then(|l| l.get(NAME_LABEL))
                .map(String::as_str)
                .filter(|s| !s.is_empty())
        })
        .unwrap_or(deployment)
        .to_string()
}

/// Percent-encodes the characters that would break `key=value,key=value` lists.
pub fn encode_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b',' | b'=' | b'%' | b';' | b'"' | b'\\' => out.push_str(&format!("%{b:02X}")),
            b if b.is_ascii_whitespace() || b.is_ascii_control() || !b.is_ascii() => {
                out.push_str(&format!("%{b:02X}"))
            }
            b => out.push(b as char),
        }
    }
    out
}

fn var(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn field_ref(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_string(),
                api_version: None,
            }),
            ..Default::default()
        }),
    }
}

/// Where a container's SDK sends telemetry, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// OTEL_EXPORTER_OTLP_ENDPOINT.
    pub endpoint: String,
    /// OTEL_EXPORTER_OTLP_PROTOCOL.
    pub protocol: Protocol,
}

/// The destination: the sidecar on localhost when there is one, else `exporter.endpoint`, else
/// an `OTEL_EXPORTER_OTLP_ENDPOINT` the Instrumentation's `env` (or the agent's) sets, as an
/// Instrumentation written for the OpenTelemetry Operator does.
pub fn destination(
    name: &str,
    spec: &InstrumentationSpec,
    agent: Option<Language>,
    with_sidecar: bool,
) -> Result<Destination, PlanError> {
    let protocol = spec.exporter.protocol;
    let from_env = |env: &[EnvVar]| {
        env.iter()
            .rev()
            .find(|e| e.name == "OTEL_EXPORTER_OTLP_ENDPOINT")
            .and_then(|e| e.value.clone())
    };
    let endpoint = if with_sidecar {
        format!("http://localhost:{}", protocol.default_port())
    } else {
        spec.exporter
            .endpoint
            .clone()
            .or_else(|| agent.and_then(|l| from_env(&spec.agent(l).env)))
            .or_else(|| from_env(&spec.env))
            .filter(|e| !e.is_empty())
            .ok_or_else(|| PlanError::MissingEndpoint(name.to_string()))?
    };
    Ok(Destination { endpoint, protocol })
}

/// The full env kotel would give the container named `container` of `workload` (its kind and
/// name), in contract order, before user vars are removed. `version_label`: the pod template carries
/// [`VERSION_LABEL`].
pub fn container_env(
    spec: &InstrumentationSpec,
    namespace: &str,
    workload: (Kind, &str),
    service: &str,
    dest: &Destination,
    container: &str,
    version_label: bool,
) -> Vec<EnvVar> {
    let mut env = vec![
        field_ref(POD_NAME_VAR, "metadata.name"),
        field_ref(NODE_NAME_VAR, "spec.nodeName"),
    ];
    if version_label {
        env.push(field_ref(
            VERSION_VAR,
            &format!("metadata.labels['{VERSION_LABEL}']"),
        ));
    }
    env.extend([
        var("OTEL_SERVICE_NAME", service),
        var("OTEL_EXPORTER_OTLP_ENDPOINT", dest.endpoint.clone()),
        var("OTEL_EXPORTER_OTLP_PROTOCOL", dest.protocol.as_str()),
    ]);

    if !spec.exporter.headers.is_empty() {
        let mut pairs = Vec::new();
        for (i, (key, h)) in spec.exporter.headers.iter().enumerate() {
            if let Some(secret) = &h.secret_key_ref {
                let holder = format!("{HEADER_HOLDER_PREFIX}{i}");
                env.push(EnvVar {
                    name: holder.clone(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: Some(secret.clone()),
                        ..Default::default()
                    }),
                });
                pairs.push(format!("{key}=$({holder})"));
            } else {
                pairs.push(format!(
                    "{key}={}",
                    encode_value(h.value.as_deref().unwrap_or_default())
                ));
            }
        }
        env.push(var(HEADERS_VAR, pairs.join(",")));
    }

    let mut attrs: Vec<(String, String)> = vec![
        ("k8s.namespace.name".into(), encode_value(namespace)),
        (workload.0.name_attribute().into(), encode_value(workload.1)),
        ("k8s.pod.name".into(), format!("$({POD_NAME_VAR})")),
        ("k8s.node.name".into(), format!("$({NODE_NAME_VAR})")),
        ("k8s.container.name".into(), encode_value(container)),
        ("service.namespace".into(), encode_value(namespace)),
    ];
    if version_label {
        attrs.push(("service.version".into(), format!("$({VERSION_VAR})")));
    }
    attrs.push((
        "service.instance.id".into(),
        format!(
            "{}.$({POD_NAME_VAR}).{}",
            encode_value(namespace),
            encode_value(container)
        ),
    ));
    for (k, v) in &spec.resource_attributes {
        let v = encode_value(v);
        match attrs.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => attrs.push((k.clone(), v)),
        }
    }
    let attrs: Vec<String> = attrs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(var("OTEL_RESOURCE_ATTRIBUTES", attrs.join(",")));

    let propagators: Vec<&str> = spec.propagators.iter().map(|p| p.as_str()).collect();
    if !propagators.is_empty() {
        env.push(var("OTEL_PROPAGATORS", propagators.join(",")));
    }
    if let Some(sampler) = &spec.sampler {
        env.push(var("OTEL_TRACES_SAMPLER", sampler.type_.as_str()));
        if let Some(arg) = sampler.argument {
            env.push(var("OTEL_TRACES_SAMPLER_ARG", arg.to_string()));
        }
    }
    let exporter = |on: bool| if on { "otlp" } else { "none" };
    env.push(var("OTEL_TRACES_EXPORTER", exporter(spec.signals.traces)));
    env.push(var("OTEL_METRICS_EXPORTER", exporter(spec.signals.metrics)));
    env.push(var("OTEL_LOGS_EXPORTER", exporter(spec.signals.logs)));
    if let Some(ms) = spec
        .metric_export_interval
        .as_deref()
        .and_then(parse_interval_ms)
    {
        env.push(var("OTEL_METRIC_EXPORT_INTERVAL", ms.to_string()));
    }
    env.extend(spec.env.iter().cloned());
    dedupe(env)
}

/// The variables in `spec.env` that replace a value kotel derives from the spec's own fields
/// (its sampler, signals, exporter): allowed, as upstream's `env` is, and said in the
/// Instrumentation's `Ready` condition so that nobody wonders why `spec.sampler` has no effect.
pub fn env_overrides(spec: &InstrumentationSpec) -> Vec<String> {
    let own = InstrumentationSpec {
        env: Vec::new(),
        ..spec.clone()
    };
    let dest = Destination {
        endpoint: String::new(),
        protocol: spec.exporter.protocol,
    };
    let derived: BTreeSet<String> =
        container_env(&own, "", (Kind::Deployment, ""), "", &dest, "", true)
            .into_iter()
            .map(|e| e.name)
            .collect();
    let mut listed = BTreeSet::new();
    spec.env
        .iter()
        .map(|e| e.name.clone())
        .filter(|n| derived.contains(n))
        // Without `exporter.endpoint`, `env` is where the endpoint comes from (upstream's CRs).
        .filter(|n| n != "OTEL_EXPORTER_OTLP_ENDPOINT" || spec.exporter.endpoint.is_some())
        .filter(|n| listed.insert(n.clone()))
        .collect()
}

/// A name listed twice (kotel's own and `spec.env`) keeps its first position and the last value.
fn dedupe(env: Vec<EnvVar>) -> Vec<EnvVar> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<EnvVar> = Vec::with_capacity(env.len());
    for e in env {
        match seen.get(&e.name) {
            Some(&i) => out[i] = e,
            None => {
                seen.insert(e.name.clone(), out.len());
                out.push(e);
            }
        }
    }
    out
}

/// The variables a container that gets `language`'s agent gets besides the SDK's: the
/// activation variable, the agent's own, then `spec.<language>.env`.
pub fn agent_env(language: Language, spec: &agent::AgentSpec) -> Vec<EnvVar> {
    let mut env = vec![var(
        language.activation_var(),
        language.activation_value(&spec.agent_root(language)),
    )];
    env.extend(language.agent_env());
    env.extend(spec.env.iter().cloned());
    env
}

/// Computes what kotel should own on a workload.
pub fn plan(w: &Workload<'_>, r: &Request<'_>) -> Result<Plan, PlanError> {
    let mut out = Plan::default();
    let mut mounts = Vec::new();
    let agent = r
        .agent
        .zip(r.instrumentation)
        .map(|(l, (_, spec))| (l, spec.agent(l)));
    let delivered = agent.as_ref().map(|(l, a)| agent::deliver(*l, a));
    if let Some((inst_name, spec)) = r.instrumentation {
        let dest = destination(inst_name, spec, r.agent, r.sidecar.is_some())?;
        if r.agent == Some(Language::Python) && dest.protocol != Protocol::HttpProtobuf {
            return Err(PlanError::AgentProtocol(inst_name.to_string()));
        }
        let service = service_name(r.service_name, w.template_labels, w.name);
        if let Some(names) = r.container_names {
            out.unknown_containers = names
                .iter()
                .filter(|n| !w.containers.iter().any(|c| &c.name == *n))
                .cloned()
                .collect();
        }
        for c in w.containers {
            if c.name == sidecar::CONTAINER_NAME {
                continue;
            }
            if r.container_names
                .is_some_and(|names| !names.contains(&c.name))
            {
                continue;
            }
            let users = &c.user_env;
            let mut env = Vec::new();
            let version_label = w
                .template_labels
                .is_some_and(|l| l.contains_key(VERSION_LABEL));
            let mut wanted = container_env(
                spec,
                w.namespace,
                (w.kind, w.name),
                &service,
                &dest,
                &c.name,
                version_label,
            );
            if let (Some((language, agent_spec)), Some(d)) = (&agent, &delivered) {
                // A container that sets the activation variable itself keeps its value, so the
                // agent does not load there; the files are still mounted, so that adding
                // kotel's value to the user's (as the Event says) is all it takes.
                if users.contains(language.activation_var()) {
                    out.agent_skipped
                        .push((c.name.clone(), language.activation_var()));
                } else {
                    wanted.extend(agent_env(*language, agent_spec));
                    wanted = dedupe(wanted);
                }
                mounts.push((c.name.clone(), d.mount.clone()));
            }
            for e in wanted {
                if users.contains(&e.name) {
                    out.kept_user_vars.push((c.name.clone(), e.name));
                } else {
                    env.push(e);
                }
            }
            if !env.is_empty() {
                out.intent.containers.push((c.name.clone(), env));
            }
        }
    }
    if let Some(s) = r.sidecar {
        let ports = crate::collector::ports_for(s.spec, s.config);
        out.intent.sidecar = Some(sidecar::container(s.spec, s.config, &ports));
    }
    if let Some(d) = delivered.filter(|_| !mounts.is_empty()) {
        out.intent.agent = Some(AgentIntent {
            volume: d.volume,
            init_container: d.init_container,
            mounts,
        });
    }
    if !out.intent.containers.is_empty() || out.intent.sidecar.is_some() {
        out.intent.hash = Some(config_hash(&out.intent));
    }
    Ok(out)
}

/// A short, stable hash of everything kotel injects (the agent's image included, so a new
/// agent image rolls the workload).
pub fn config_hash(intent: &Intent) -> String {
    let mut body = json!({"containers": intent.containers, "sidecar": intent.sidecar});
    if let Some(a) = &intent.agent {
        body["agent"] = serde_json::to_value(a).expect("the agent serialises");
    }
    short_hash(&serde_json::to_vec(&body).expect("env and containers serialise"))
}

/// The value of `kotel.dev/config-hash`: the first 5 bytes of a SHA-256, in hex.
pub fn short_hash(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .take(5)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Intent {
    /// The fields this intent makes kotel own.
    pub fn shape(&self) -> Shape {
        Shape {
            hash_annotation: self.hash.is_some(),
            env: self
                .containers
                .iter()
                .map(|(c, env)| (c.clone(), env.iter().map(|e| e.name.clone()).collect()))
                .collect(),
            init_containers: self
                .sidecar
                .iter()
                .chain(self.agent.iter().flat_map(|a| &a.init_container))
                .map(|c| c.name.clone())
                .collect(),
            volumes: self.agent.iter().map(|a| a.volume.name.clone()).collect(),
            mounts: self
                .agent
                .iter()
                .flat_map(|a| &a.mounts)
                .map(|(c, m)| (c.clone(), [m.mount_path.clone()].into()))
                .collect(),
        }
    }

    /// Whether applying this intent would change nothing: kotel already owns exactly these
    /// fields and the hash of their content is the one on the pod template.
    pub fn is_applied(&self, owned: &Shape, current_hash: Option<&str>) -> bool {
        self.shape() == *owned && (self.hash.is_none() || self.hash.as_deref() == current_hash)
    }

    /// The server-side-apply body for a workload of `kind`: only kotel's fields, so a smaller
    /// intent removes exactly what kotel added before.
    pub fn apply_body(&self, kind: Kind, namespace: &str, name: &str) -> Value {
        let mut body = json!({
            "apiVersion": kind.api_version(),
            "kind": kind.as_str(),
            "metadata": {"name": name, "namespace": namespace},
        });
        let Some(hash) = &self.hash else {
            return body;
        };
        let mut pod_spec = serde_json::Map::new();
        if !self.containers.is_empty() {
            let mounts = |c: &str| -> Vec<&VolumeMount> {
                self.agent
                    .iter()
                    .flat_map(|a| &a.mounts)
                    .filter(|(name, _)| name == c)
                    .map(|(_, m)| m)
                    .collect()
            };
            let containers: Vec<Value> = self
                .containers
                .iter()
                .map(|(c, env)| {
                    let mut v = json!({"name": c, "env": env});
                    let m = mounts(c);
                    if !m.is_empty() {
                        v["volumeMounts"] = json!(m);
                    }
                    v
                })
                .collect();
            pod_spec.insert("containers".into(), Value::Array(containers));
        }
        // The agent's copy runs before the application containers, the sidecar alongside them.
        let inits: Vec<Value> = self
            .sidecar
            .iter()
            .chain(self.agent.iter().flat_map(|a| &a.init_container))
            .map(|c| serde_json::to_value(c).expect("container serialises"))
            .collect();
        if !inits.is_empty() {
            pod_spec.insert("initContainers".into(), Value::Array(inits));
        }
        if let Some(a) = &self.agent {
            pod_spec.insert("volumes".into(), json!([a.volume]));
        }
        let mut at = &mut body;
        for key in kind.template_path() {
            at = &mut at[*key];
        }
        *at = json!({
            "metadata": {"annotations": {CONFIG_HASH: hash}},
            "spec": Value::Object(pod_spec),
        });
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::{CollectorSpec, validate_config};
    use crate::instrumentation::{HeaderValue, Sampler, SamplerType};
    use k8s_openapi::api::core::v1::SecretKeySelector;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn inst(v: Value) -> InstrumentationSpec {
        serde_json::from_value(v).unwrap()
    }

    fn basic() -> InstrumentationSpec {
        inst(json!({"exporter": {"endpoint": "http://gw.obs:4318"}}))
    }

    /// A container as the cache keeps it, with the user's env vars `env` (their values do not
    /// count).
    fn container(name: &str, env: &[(&str, &str)]) -> crate::workload::Container {
        crate::workload::Container {
            name: name.into(),
            user_env: env.iter().map(|(k, _)| k.to_string()).collect(),
        }
    }

    /// Full containers, as a simulated API server holds them, as the cache keeps them.
    fn cached(containers: &[Container], owned: &Shape) -> Vec<crate::workload::Container> {
        containers
            .iter()
            .map(|c| {
                crate::workload::Container::new(
                    c.name.clone(),
                    c.env.iter().flatten().map(|e| e.name.clone()),
                    owned,
                )
            })
            .collect()
    }

    fn field_path(e: &EnvVar) -> &str {
        &e.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path
    }

    fn names(env: &[EnvVar]) -> Vec<&str> {
        env.iter().map(|e| e.name.as_str()).collect()
    }

    fn value<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a str> {
        env.iter().find(|e| e.name == name)?.value.as_deref()
    }

    /// The env of container `c` in namespace `n`, workload `d`, service `s`, no version label.
    fn plain_env(spec: &InstrumentationSpec) -> Vec<EnvVar> {
        container_env(spec, "n", (Kind::Deployment, "d"), "s", &dest(), "c", false)
    }

    fn dest() -> Destination {
        Destination {
            endpoint: "http://gw.obs:4318".into(),
            protocol: Protocol::HttpProtobuf,
        }
    }

    #[test]
    fn env_in_contract_order() {
        let spec = inst(json!({
            "exporter": {"endpoint": "http://gw:4318"},
            "sampler": {"type": "parentbased_traceidratio", "argument": 0.5},
            "metricExportInterval": "15s",
            "env": [{"name": "EXTRA", "value": "1"}]
        }));
        let env = container_env(
            &spec,
            "shop",
            (Kind::Deployment, "cart"),
            "cart-svc",
            &dest(),
            "app",
            true,
        );
        assert_eq!(
            names(&env),
            vec![
                POD_NAME_VAR,
                NODE_NAME_VAR,
                VERSION_VAR,
                "OTEL_SERVICE_NAME",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTEL_RESOURCE_ATTRIBUTES",
                "OTEL_PROPAGATORS",
                "OTEL_TRACES_SAMPLER",
                "OTEL_TRACES_SAMPLER_ARG",
                "OTEL_TRACES_EXPORTER",
                "OTEL_METRICS_EXPORTER",
                "OTEL_LOGS_EXPORTER",
                "OTEL_METRIC_EXPORT_INTERVAL",
                "EXTRA"
            ]
        );
        assert_eq!(field_path(&env[0]), "metadata.name");
        assert_eq!(field_path(&env[1]), "spec.nodeName");
        assert_eq!(
            field_path(&env[2]),
            "metadata.labels['app.kubernetes.io/version']"
        );
        assert_eq!(value(&env, "OTEL_SERVICE_NAME"), Some("cart-svc"));
        assert_eq!(
            value(&env, "OTEL_PROPAGATORS"),
            Some("tracecontext,baggage")
        );
        assert_eq!(value(&env, "OTEL_TRACES_SAMPLER_ARG"), Some("0.5"));
        assert_eq!(value(&env, "OTEL_METRIC_EXPORT_INTERVAL"), Some("15000"));
        assert_eq!(
            value(&env, "OTEL_EXPORTER_OTLP_PROTOCOL"),
            Some("http/protobuf")
        );
        assert_eq!(
            value(&env, "OTEL_RESOURCE_ATTRIBUTES"),
            Some(
                "k8s.namespace.name=shop,k8s.deployment.name=cart,k8s.pod.name=$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME),k8s.node.name=$(OTEL_RESOURCE_ATTRIBUTES_NODE_NAME),k8s.container.name=app,service.namespace=shop,service.version=$(OTEL_RESOURCE_ATTRIBUTES_VERSION),service.instance.id=shop.$(OTEL_RESOURCE_ATTRIBUTES_POD_NAME).app"
            )
        );
    }

    #[test]
    fn resource_attributes_win_and_are_encoded() {
        let spec = inst(json!({
            "exporter": {"endpoint": "http://gw:4318"},
            "resourceAttributes": {"service.namespace": "team a", "deployment.environment": "prod,eu"}
        }));
        let env = container_env(
            &spec,
            "shop",
            (Kind::CronJob, "cart"),
            "s",
            &dest(),
            "app",
            false,
        );
        let attrs = value(&env, "OTEL_RESOURCE_ATTRIBUTES").unwrap();
        assert!(
            attrs.contains("k8s.cronjob.name=cart") && !attrs.contains("k8s.deployment.name"),
            "the name attribute follows the kind: {attrs}"
        );
        assert!(attrs.contains("service.namespace=team%20a"), "{attrs}");
        assert!(!attrs.contains("service.namespace=shop"), "{attrs}");
        assert!(
            attrs.ends_with("deployment.environment=prod%2Ceu"),
            "{attrs}"
        );
        assert!(
            !attrs.contains("service.version"),
            "no version label, no version (never the image tag): {attrs}"
        );
        assert!(!names(&env).contains(&VERSION_VAR));
    }

    #[test]
    fn env_that_replaces_a_derived_value_is_named() {
        let spec = inst(json!({
            "exporter": {"endpoint": "http://gw:4318"},
            "sampler": {"type": "parentbased_traceidratio", "argument": 0.25},
            "env": [{"name": "OTEL_TRACES_SAMPLER", "value": "always_on"},
                    {"name": "OTEL_SERVICE_NAME", "value": "one-for-all"},
                    {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://other:4318"},
                    {"name": "EXTRA", "value": "1"}]
        }));
        assert_eq!(
            env_overrides(&spec),
            [
                "OTEL_TRACES_SAMPLER",
                "OTEL_SERVICE_NAME",
                "OTEL_EXPORTER_OTLP_ENDPOINT"
            ]
        );
        let upstream = inst(json!({
            "env": [{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector:4318"},
                    {"name": "OTEL_TRACES_SAMPLER", "value": "always_on"}]
        }));
        assert!(
            env_overrides(&upstream).is_empty(),
            "without exporter.endpoint, env is where the endpoint comes from; without spec.sampler, the sampler"
        );
        assert!(env_overrides(&basic()).is_empty());
    }

    #[test]
    fn signals_sampler_and_protocol() {
        let mut spec = inst(json!({
            "exporter": {"endpoint": "http://gw:4317", "protocol": "grpc"},
            "signals": {"metrics": false, "logs": false},
            "propagators": ["b3"]
        }));
        spec.sampler = Some(Sampler {
            type_: SamplerType::AlwaysOff,
            argument: None,
        });
        let d = destination("i", &spec, None, false).unwrap();
        let env = container_env(&spec, "n", (Kind::Deployment, "d"), "s", &d, "c", false);
        assert_eq!(value(&env, "OTEL_EXPORTER_OTLP_PROTOCOL"), Some("grpc"));
        assert_eq!(value(&env, "OTEL_TRACES_EXPORTER"), Some("otlp"));
        assert_eq!(value(&env, "OTEL_METRICS_EXPORTER"), Some("none"));
        assert_eq!(value(&env, "OTEL_LOGS_EXPORTER"), Some("none"));
        assert_eq!(value(&env, "OTEL_TRACES_SAMPLER"), Some("always_off"));
        assert_eq!(value(&env, "OTEL_TRACES_SAMPLER_ARG"), None);
        assert_eq!(value(&env, "OTEL_PROPAGATORS"), Some("b3"));
    }

    #[test]
    fn headers_reference_secrets_without_copying_them() {
        let mut spec = basic();
        spec.exporter.headers.insert(
            "api-key".into(),
            HeaderValue {
                value: None,
                secret_key_ref: Some(SecretKeySelector {
                    name: "otlp-auth".into(),
                    key: "token".into(),
                    optional: None,
                }),
            },
        );
        spec.exporter.headers.insert(
            "x-tenant".into(),
            HeaderValue {
                value: Some("a=b".into()),
                secret_key_ref: None,
            },
        );
        let env = plain_env(&spec);
        let holder = env
            .iter()
            .find(|e| e.name == "KOTEL_OTLP_HEADER_0")
            .unwrap();
        assert_eq!(
            holder
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap()
                .name,
            "otlp-auth"
        );
        assert_eq!(
            value(&env, "OTEL_EXPORTER_OTLP_HEADERS"),
            Some("api-key=$(KOTEL_OTLP_HEADER_0),x-tenant=a%3Db")
        );
        let pos = |n: &str| env.iter().position(|e| e.name == n).unwrap();
        assert!(pos("KOTEL_OTLP_HEADER_0") < pos("OTEL_EXPORTER_OTLP_HEADERS"));
    }

    #[test]
    fn spec_env_overrides_value_in_place() {
        let spec = inst(json!({
            "exporter": {"endpoint": "http://gw:4318"},
            "env": [{"name": "OTEL_LOGS_EXPORTER", "value": "console"}]
        }));
        let env = plain_env(&spec);
        assert_eq!(value(&env, "OTEL_LOGS_EXPORTER"), Some("console"));
        assert_eq!(
            env.iter()
                .filter(|e| e.name == "OTEL_LOGS_EXPORTER")
                .count(),
            1
        );
    }

    #[test]
    fn service_name_rules() {
        let labels = BTreeMap::from([(NAME_LABEL.to_string(), "from-label".to_string())]);
        assert_eq!(service_name(Some("ann"), Some(&labels), "d"), "ann");
        assert_eq!(service_name(None, Some(&labels), "d"), "from-label");
        assert_eq!(service_name(Some(""), None, "d"), "d");
    }

    #[test]
    fn sidecar_switches_endpoint_to_localhost() {
        let spec = inst(json!({"exporter": {"protocol": "grpc"}}));
        assert_eq!(
            destination("i", &spec, None, true).unwrap().endpoint,
            "http://localhost:4317"
        );
        assert_eq!(
            destination("i", &basic(), None, true).unwrap().endpoint,
            "http://localhost:4318"
        );
        assert_eq!(
            destination("i", &spec, None, false).unwrap_err(),
            PlanError::MissingEndpoint("i".into())
        );
    }

    fn collector() -> (CollectorSpec, crate::collector::ValidConfig) {
        let spec: CollectorSpec = serde_json::from_value(json!({
            "mode": "sidecar",
            "config": {
                "receivers": {"otlp": {"protocols": {"http": {}}}},
                "exporters": {"debug": {}},
                "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}}
            }
        }))
        .unwrap();
        let cfg = validate_config(&spec.config).unwrap();
        (spec, cfg)
    }

    #[test]
    fn plan_selects_containers_and_keeps_user_vars() {
        let containers = vec![
            container("app", &[("OTEL_SERVICE_NAME", "mine")]),
            container("proxy", &[]),
        ];
        let owned = Shape::default();
        let w = Workload {
            kind: Kind::Deployment,
            namespace: "n",
            name: "d",
            template_labels: None,
            containers: &containers,
            current_hash: None,
            owned: &owned,
        };
        let spec = basic();
        let only = vec!["app".to_string(), "ghost".to_string()];
        let p = plan(
            &w,
            &Request {
                instrumentation: Some(("i", &spec)),
                container_names: Some(&only),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(p.intent.containers.len(), 1);
        assert_eq!(p.intent.containers[0].0, "app");
        assert!(!names(&p.intent.containers[0].1).contains(&"OTEL_SERVICE_NAME"));
        assert_eq!(
            p.kept_user_vars,
            vec![("app".to_string(), "OTEL_SERVICE_NAME".to_string())]
        );
        assert_eq!(p.unknown_containers, vec!["ghost".to_string()]);
        assert!(p.intent.hash.is_some());
    }

    #[test]
    fn plan_with_sidecar_only() {
        let containers = vec![container("app", &[])];
        let owned = Shape::default();
        let w = Workload {
            kind: Kind::Deployment,
            namespace: "n",
            name: "d",
            template_labels: None,
            containers: &containers,
            current_hash: None,
            owned: &owned,
        };
        let (cs, cfg) = collector();
        let p = plan(
            &w,
            &Request {
                sidecar: Some(SidecarSource {
                    spec: &cs,
                    config: &cfg,
                }),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(p.intent.containers.is_empty());
        let body = p.intent.apply_body(Kind::Deployment, "n", "d");
        assert_eq!(
            body["spec"]["template"]["spec"]["initContainers"][0]["restartPolicy"],
            "Always"
        );
        assert!(body["spec"]["template"]["spec"].get("containers").is_none());
    }

    #[test]
    fn hash_changes_with_content() {
        let of = |v: &str| Intent {
            containers: vec![("app".to_string(), vec![var("A", v)])],
            ..Default::default()
        };
        assert_ne!(config_hash(&of("1")), config_hash(&of("2")));
        assert_eq!(config_hash(&of("1")), config_hash(&of("1")));
        assert_eq!(config_hash(&of("1")).len(), 10);
    }

    fn agent_plan(
        containers: &[crate::workload::Container],
        spec: &InstrumentationSpec,
        only: Option<&[String]>,
    ) -> Result<Plan, PlanError> {
        let owned = Shape::default();
        let w = Workload {
            kind: Kind::Deployment,
            namespace: "n",
            name: "shop",
            template_labels: None,
            containers,
            current_hash: None,
            owned: &owned,
        };
        plan(
            &w,
            &Request {
                instrumentation: Some(("i", spec)),
                container_names: only,
                agent: Some(Language::Python),
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_python_agent_is_copied_mounted_and_activated_in_the_selected_containers() {
        let containers = vec![container("app", &[]), container("proxy", &[])];
        let only = vec!["app".to_string()];
        let p = agent_plan(&containers, &basic(), Some(&only)).unwrap();
        let env = &p.intent.containers[0].1;
        assert_eq!(
            value(env, "PYTHONPATH"),
            Some(
                "/otel-auto-instrumentation-python/opentelemetry/instrumentation/auto_instrumentation:/otel-auto-instrumentation-python"
            )
        );
        assert_eq!(
            value(env, "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED"),
            Some("true")
        );
        assert_eq!(
            value(env, "OTEL_EXPORTER_OTLP_PROTOCOL"),
            Some("http/protobuf")
        );
        let a = p.intent.agent.as_ref().unwrap();
        assert_eq!(a.mounts.len(), 1, "only the selected container");
        assert_eq!(a.mounts[0].0, "app");
        let body = p.intent.apply_body(Kind::Deployment, "n", "shop");
        let pod = &body["spec"]["template"]["spec"];
        assert_eq!(pod["volumes"][0]["name"], "kotel-agent-python");
        assert_eq!(pod["initContainers"][0]["name"], "kotel-agent-python");
        assert_eq!(
            pod["containers"][0]["volumeMounts"],
            json!([{"name": "kotel-agent-python", "mountPath": "/otel-auto-instrumentation-python"}])
        );
        let shape = p.intent.shape();
        assert_eq!(
            shape.volumes,
            BTreeSet::from(["kotel-agent-python".to_string()])
        );
        assert!(shape.init_containers.contains("kotel-agent-python"));
        assert!(shape.mounts["app"].contains("/otel-auto-instrumentation-python"));

        // The agent image is part of the hash: a new image rolls the workload.
        let mut newer = basic();
        newer.python = Some(agent::AgentSpec {
            image: Some("example.com/python-agent:2".into()),
            ..Default::default()
        });
        let q = agent_plan(&containers, &newer, Some(&only)).unwrap();
        assert_ne!(q.intent.hash, p.intent.hash);
        assert_eq!(q.intent.containers, p.intent.containers);
    }

    #[test]
    fn a_container_that_sets_pythonpath_keeps_it_and_is_told_what_to_add() {
        let containers = vec![container("app", &[("PYTHONPATH", "/srv/lib")])];
        let p = agent_plan(&containers, &basic(), None).unwrap();
        assert_eq!(p.agent_skipped, vec![("app".to_string(), "PYTHONPATH")]);
        assert!(!names(&p.intent.containers[0].1).contains(&"PYTHONPATH"));
        assert!(
            p.kept_user_vars.is_empty(),
            "reported once, as AgentNotInjected"
        );
        assert!(value(&p.intent.containers[0].1, "OTEL_SERVICE_NAME").is_some());
    }

    #[test]
    fn an_upstream_instrumentation_sets_its_endpoint_in_the_agents_env() {
        // As written for the OpenTelemetry Operator: no exporter, the endpoint in python.env.
        let spec = inst(json!({
            "python": {"env": [
                {"name": "OTEL_METRICS_EXPORTER", "value": "otlp_proto_http"},
                {"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://otel-collector:4318"}]},
            "sampler": {"type": "parentbased_traceidratio", "argument": "0.25"}
        }));
        let p = agent_plan(&[container("app", &[])], &spec, None).unwrap();
        let env = &p.intent.containers[0].1;
        assert_eq!(
            value(env, "OTEL_EXPORTER_OTLP_ENDPOINT"),
            Some("http://otel-collector:4318")
        );
        assert_eq!(value(env, "OTEL_METRICS_EXPORTER"), Some("otlp_proto_http"));
        assert_eq!(value(env, "OTEL_TRACES_SAMPLER_ARG"), Some("0.25"));
        assert!(value(env, "PYTHONPATH").is_some());
        assert_eq!(
            destination("i", &spec, None, false).unwrap_err(),
            PlanError::MissingEndpoint("i".into()),
            "without the agent, python.env does not apply"
        );
    }

    #[test]
    fn the_python_agent_refuses_grpc_with_a_fix() {
        let mut spec = basic();
        spec.exporter.protocol = Protocol::Grpc;
        let err = agent_plan(&[container("app", &[])], &spec, None).unwrap_err();
        assert!(err.to_string().contains("http/protobuf"), "{err}");
    }

    #[test]
    fn apply_body_carries_only_kotels_fields() {
        let intent = Intent {
            containers: vec![("app".into(), vec![var("OTEL_SERVICE_NAME", "x")])],
            sidecar: None,
            agent: None,
            hash: Some("abc".into()),
        };
        let body = intent.apply_body(Kind::Deployment, "n", "d");
        assert_eq!(
            body,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "d", "namespace": "n"},
                "spec": {"template": {
                    "metadata": {"annotations": {"kotel.dev/config-hash": "abc"}},
                    "spec": {"containers": [{"name": "app", "env": [{"name": "OTEL_SERVICE_NAME", "value": "x"}]}]}
                }}
            })
        );
        // A CronJob's pod template is its jobTemplate's, so that its next Jobs carry it.
        let cron = intent.apply_body(Kind::CronJob, "n", "nightly");
        assert_eq!(
            (cron["apiVersion"].as_str(), cron["kind"].as_str()),
            (Some("batch/v1"), Some("CronJob"))
        );
        assert_eq!(
            cron["spec"]["jobTemplate"]["spec"]["template"],
            body["spec"]["template"]
        );
        assert!(cron["spec"].get("template").is_none());
        assert_eq!(
            Intent::default().apply_body(Kind::Deployment, "n", "d"),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"}})
        );
    }

    /// What the API server does with kotel's apply, for the fields this crate cares about:
    /// kotel's env replaces what kotel owned, the user's stays, and ownership follows.
    fn simulate_apply(
        containers: &mut [Container],
        owned: &mut Shape,
        hash: &mut Option<String>,
        intent: &Intent,
    ) {
        for c in containers.iter_mut() {
            let mine = owned.env.get(&c.name).cloned().unwrap_or_default();
            let mut env: Vec<EnvVar> = c
                .env
                .take()
                .unwrap_or_default()
                .into_iter()
                .filter(|e| !mine.contains(&e.name))
                .collect();
            if let Some((_, add)) = intent.containers.iter().find(|(n, _)| n == &c.name) {
                env.extend(add.iter().cloned());
            }
            c.env = (!env.is_empty()).then_some(env);
        }
        *owned = intent.shape();
        *hash = intent.hash.clone();
    }

    fn arb_user_env() -> impl Strategy<Value = Vec<(String, String)>> {
        let names = prop::sample::select(vec![
            "OTEL_SERVICE_NAME",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_RESOURCE_ATTRIBUTES",
            "OTEL_PROPAGATORS",
            "OTEL_TRACES_EXPORTER",
            "OTEL_RESOURCE_ATTRIBUTES_POD_NAME",
            "EXTRA",
            "PATH",
            "JAVA_OPTS",
        ]);
        prop::collection::vec((names.prop_map(str::to_string), "[a-z0-9]{0,6}"), 0..5)
    }

    fn arb_spec() -> impl Strategy<Value = InstrumentationSpec> {
        (any::<bool>(), any::<bool>(), any::<bool>(), prop::option::of(0.0f64..=1.0), "[a-z]{1,5}")
            .prop_map(|(grpc, traces, logs, ratio, attr)| {
                let mut s = inst(json!({"exporter": {"endpoint": "http://gw:4318"}, "env": [{"name": "EXTRA", "value": "k"}]}));
                if grpc { s.exporter.protocol = Protocol::Grpc; }
                s.signals.traces = traces;
                s.signals.logs = logs;
                s.sampler = ratio.map(|r| Sampler { type_: SamplerType::Traceidratio, argument: Some(r) });
                s.resource_attributes.insert("team".into(), attr);
                s
            })
    }

    proptest! {
        #[test]
        fn user_vars_never_in_intent_and_applying_twice_converges(
            user in arb_user_env(), spec in arb_spec(), with_sidecar in any::<bool>()
        ) {
            let mut containers = vec![Container {
                name: "app".into(),
                image: Some("app:2".into()),
                env: (!user.is_empty()).then(|| user.iter().map(|(k, v)| var(k, v.clone())).collect()),
                ..Default::default()
            }];
            let user_names: BTreeSet<String> = user.iter().map(|(k, _)| k.clone()).collect();
            let (cs, cfg) = collector();
            let req = Request {
                instrumentation: Some(("i", &spec)),
                sidecar: with_sidecar.then_some(SidecarSource { spec: &cs, config: &cfg }),
                ..Default::default()
            };
            let mut owned = Shape::default();
            let mut hash = None;

            let first = {
                let w = Workload { kind: Kind::Deployment, namespace: "n", name: "d", template_labels: None, containers: &cached(&containers, &owned), current_hash: hash.as_deref(), owned: &owned };
                plan(&w, &req).unwrap()
            };
            for (_, env) in &first.intent.containers {
                for e in env {
                    prop_assert!(!user_names.contains(&e.name), "user var {} in intent", e.name);
                }
            }
            simulate_apply(&mut containers, &mut owned, &mut hash, &first.intent);
            let w = Workload { kind: Kind::Deployment, namespace: "n", name: "d", template_labels: None, containers: &cached(&containers, &owned), current_hash: hash.as_deref(), owned: &owned };
            let second = plan(&w, &req).unwrap();
            prop_assert_eq!(&second.intent, &first.intent);
            prop_assert!(second.intent.is_applied(w.owned, w.current_hash));
            // the user's values are untouched
            for (k, v) in &user {
                let live = containers[0].env.iter().flatten().rfind(|e| &e.name == k).unwrap();
                let last_user = user.iter().rev().find(|(n, _)| n == k).unwrap();
                prop_assert_eq!(live.value.as_deref(), Some(last_user.1.as_str()), "{} {}", k, v);
            }
        }

        #[test]
        fn removing_the_annotation_leaves_no_kotel_field(user in arb_user_env(), spec in arb_spec()) {
            let mut containers = vec![Container {
                name: "app".into(),
                env: (!user.is_empty()).then(|| user.iter().map(|(k, v)| var(k, v.clone())).collect()),
                ..Default::default()
            }];
            let mut owned = Shape::default();
            let mut hash = None;
            let req = Request { instrumentation: Some(("i", &spec)), ..Default::default() };
            let w = Workload { kind: Kind::Deployment, namespace: "n", name: "d", template_labels: None, containers: &cached(&containers, &owned), current_hash: None, owned: &owned };
            let p = plan(&w, &req).unwrap();
            simulate_apply(&mut containers, &mut owned, &mut hash, &p.intent);

            let w = Workload { kind: Kind::Deployment, namespace: "n", name: "d", template_labels: None, containers: &cached(&containers, &owned), current_hash: hash.as_deref(), owned: &owned };
            let removed = plan(&w, &Request::default()).unwrap();
            prop_assert!(removed.intent.shape().is_empty());
            let body = removed.intent.apply_body(Kind::Deployment, "n", "d");
            prop_assert_eq!(body.get("spec"), None);
            prop_assert!(!removed.intent.is_applied(w.owned, w.current_hash) || owned.is_empty());
            simulate_apply(&mut containers, &mut owned, &mut hash, &removed.intent);
            let left: Vec<(String, String)> = containers[0].env.iter().flatten().map(|e| (e.name.clone(), e.value.clone().unwrap_or_default())).collect();
            prop_assert_eq!(left, user);
        }
    }
}

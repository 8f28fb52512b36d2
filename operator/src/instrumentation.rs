//! The `Instrumentation` custom resource: what kotel injects into application containers.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, SecretKeySelector};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;

use crate::agent::{AgentSpec, Language};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The desired SDK configuration, injected as the standard `OTEL_*` environment variables.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
// kube-derive takes one `printcolumn(...)` per column, which clippy reads as duplicates.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "kotel.dev",
    version = "v1alpha1",
    kind = "Instrumentation",
    doc = "What kotel injects into the application containers of Deployments annotated kotel.dev/inject: the OpenTelemetry SDK environment (exporter, propagators, sampler, resource attributes, signals).",
    namespaced,
    shortname = "kinst",
    category = "kotel",
    status = "InstrumentationStatus",
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".spec.exporter.endpoint"
    ),
    printcolumn(name = "Sampler", type_ = "string", json_path = ".spec.sampler.type"),
    printcolumn(name = "Workloads", type_ = "integer", json_path = ".status.workloads"),
    printcolumn(
        name = "Rolling",
        type_ = "integer",
        json_path = ".status.rollouts.pending"
    ),
    printcolumn(
        name = "Stuck",
        type_ = "integer",
        json_path = ".status.rollouts.failed"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct InstrumentationSpec {
    /// Where and how the SDKs export telemetry.
    #[serde(default)]
    pub exporter: Exporter,

    /// Context propagators, in order (OTEL_PROPAGATORS). Defaults to [tracecontext, baggage].
    #[serde(default = "default_propagators")]
    pub propagators: Vec<Propagator>,

    /// The trace sampler (OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG). Unset leaves the SDK default (parentbased_always_on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<Sampler>,

    /// Extra resource attributes added to OTEL_RESOURCE_ATTRIBUTES. They win over the keys kotel sets itself. Values are percent-encoded; keys cannot contain `=`, `,` or spaces, which would break the list.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(k, k.matches('^[^=, ]+$'))",
        "message": "spec.resourceAttributes keys cannot contain '=', ',' or spaces (OTEL_RESOURCE_ATTRIBUTES is a key=value,key=value list): rename the key"
    }]))]
    pub resource_attributes: BTreeMap<String, String>,

    /// Extra environment variables for every injected container, added after kotel's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Which signals are exported over OTLP; a disabled signal gets the exporter `none`.
    #[serde(default)]
    pub signals: Signals,

    /// Interval between metric exports (OTEL_METRIC_EXPORT_INTERVAL), as a duration such as `30s`, `1m` or `500ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub metric_export_interval: Option<String>,

    /// The Python agent, for workloads annotated `kotel.dev/inject-python` (loaded through PYTHONPATH; exports over http/protobuf).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<AgentSpec>,

    /// The Java agent, for workloads annotated `kotel.dev/inject-java` (loaded through JAVA_TOOL_OPTIONS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub java: Option<AgentSpec>,

    /// The Node.js agent, for workloads annotated `kotel.dev/inject-nodejs` (loaded through NODE_OPTIONS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodejs: Option<AgentSpec>,
}

impl InstrumentationSpec {
    /// The agent settings of `language` (its defaults when unset).
    pub fn agent(&self, language: Language) -> AgentSpec {
        match language {
            Language::Python => &self.python,
            Language::Java => &self.java,
            Language::Nodejs => &self.nodejs,
        }
        .clone()
        .unwrap_or_default()
    }
}

/// The OTLP exporter settings.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Exporter {
    /// The OTLP endpoint URL, for example `http://otel-gateway.observability:4318`. Required unless every workload that uses this Instrumentation also gets a kotel sidecar collector (then the sidecar's localhost endpoint is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s/?#]+(:[0-9]{1,5})?(/\S*)?$"))]
    pub endpoint: Option<String>,

    /// The OTLP transport: `http/protobuf` (default, what the OpenTelemetry specification recommends) or `grpc`.
    #[serde(default)]
    pub protocol: Protocol,

    /// Headers sent with every export (OTEL_EXPORTER_OTLP_HEADERS). Give each either a literal `value` or a `secretKeyRef`; secret values are referenced from the pod, never copied into this resource.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderValue>,
}

/// One exporter header value: a literal, or a reference to a key of a Secret in the workload's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeaderValue {
    /// A literal header value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A key of a Secret in the workload's namespace that holds the header value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeySelector>,
}

/// OTLP transport protocol.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Protocol {
    /// OTLP over HTTP with protobuf payloads (port 4318).
    #[default]
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// OTLP over gRPC (port 4317).
    #[serde(rename = "grpc")]
    Grpc,
}

impl Protocol {
    /// The value of OTEL_EXPORTER_OTLP_PROTOCOL.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        }
    }

    /// The OTLP port a collector listens on for this protocol.
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::HttpProtobuf => 4318,
            Protocol::Grpc => 4317,
        }
    }
}

/// A context propagator name as the OpenTelemetry SDKs know it.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Propagator {
    /// W3C Trace Context.
    Tracecontext,
    /// W3C Baggage.
    Baggage,
    /// B3 single header.
    B3,
    /// B3 multi header.
    B3multi,
    /// Jaeger (uber-trace-id).
    Jaeger,
    /// AWS X-Ray.
    Xray,
    /// OpenTracing.
    Ottrace,
    /// No propagation.
    None,
}

impl Propagator {
    /// The name used in OTEL_PROPAGATORS.
    pub fn as_str(self) -> &'static str {
        match self {
            Propagator::Tracecontext => "tracecontext",
            Propagator::Baggage => "baggage",
            Propagator::B3 => "b3",
            Propagator::B3multi => "b3multi",
            Propagator::Jaeger => "jaeger",
            Propagator::Xray => "xray",
            Propagator::Ottrace => "ottrace",
            Propagator::None => "none",
        }
    }
}

fn default_propagators() -> Vec<Propagator> {
    vec![Propagator::Tracecontext, Propagator::Baggage]
}

/// The trace sampler.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sampler {
    /// The sampler, by its OpenTelemetry name.
    #[serde(rename = "type")]
    pub type_: SamplerType,
    /// The sampling ratio between 0 and 1, for `traceidratio` and `parentbased_traceidratio`: a number, or the same number as a string (`"0.25"`, as the OpenTelemetry Operator's Instrumentation writes it).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "ratio"
    )]
    #[schemars(schema_with = "ratio_schema")]
    pub argument: Option<f64>,
}

/// A number or a numeric string, within [0, 1].
fn ratio<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(f64),
        String(String),
    }
    let bad = |v: &dyn std::fmt::Display| {
        serde::de::Error::custom(format!(
            "spec.sampler.argument {v} is not a number between 0 and 1: write it as 0.25 or \"0.25\""
        ))
    };
    let n = match Option::<NumberOrString>::deserialize(d)? {
        None => return Ok(None),
        Some(NumberOrString::Number(n)) => n,
        Some(NumberOrString::String(s)) => s.trim().parse().map_err(|_| bad(&format!("{s:?}")))?,
    };
    if (0.0..=1.0).contains(&n) {
        Ok(Some(n))
    } else {
        Err(bad(&n))
    }
}

fn ratio_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "The sampling ratio between 0 and 1: a number, or the same number as a string.",
        // Number-or-string cannot be typed in a structural schema, and CEL cannot see an
        // untyped field: kotel checks the range itself and reports it in status.
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Sampler names from the OpenTelemetry SDK environment specification.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SamplerType {
    /// Sample every trace.
    AlwaysOn,
    /// Sample no trace.
    AlwaysOff,
    /// Sample a ratio of traces by trace id.
    Traceidratio,
    /// Follow the parent's decision; sample root spans.
    ParentbasedAlwaysOn,
    /// Follow the parent's decision; drop root spans.
    ParentbasedAlwaysOff,
    /// Follow the parent's decision; sample a ratio of root spans.
    ParentbasedTraceidratio,
}

impl SamplerType {
    /// The value of OTEL_TRACES_SAMPLER.
    pub fn as_str(self) -> &'static str {
        match self {
            SamplerType::AlwaysOn => "always_on",
            SamplerType::AlwaysOff => "always_off",
            SamplerType::Traceidratio => "traceidratio",
            SamplerType::ParentbasedAlwaysOn => "parentbased_always_on",
            SamplerType::ParentbasedAlwaysOff => "parentbased_always_off",
            SamplerType::ParentbasedTraceidratio => "parentbased_traceidratio",
        }
    }

    /// Whether the sampler reads OTEL_TRACES_SAMPLER_ARG.
    pub fn takes_ratio(self) -> bool {
        matches!(
            self,
            SamplerType::Traceidratio | SamplerType::ParentbasedTraceidratio
        )
    }
}

/// Which signals are exported.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Signals {
    /// Export traces (OTEL_TRACES_EXPORTER=otlp, else none).
    #[serde(default = "enabled")]
    pub traces: bool,
    /// Export metrics (OTEL_METRICS_EXPORTER=otlp, else none).
    #[serde(default = "enabled")]
    pub metrics: bool,
    /// Export logs (OTEL_LOGS_EXPORTER=otlp, else none).
    #[serde(default = "enabled")]
    pub logs: bool,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            traces: true,
            metrics: true,
            logs: true,
        }
    }
}

fn enabled() -> bool {
    true
}

/// What kotel observed of this Instrumentation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstrumentationStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the Instrumentation is valid and kotel is applying it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many workloads (of every kind) currently carry the env of this Instrumentation.
    #[serde(default)]
    pub workloads: i32,
    /// The same count by kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_kind: Option<crate::status::ByKind>,
    /// Where the rollouts of those workloads stand (CronJobs have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollouts: Option<crate::status::Rollouts>,
}

/// Parses `metricExportInterval` (`30s`, `1m`, `500ms`) into milliseconds.
pub fn parse_interval_ms(s: &str) -> Option<u64> {
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_specification() {
        let spec: InstrumentationSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(spec.exporter.protocol, Protocol::HttpProtobuf);
        assert_eq!(
            spec.propagators,
            vec![Propagator::Tracecontext, Propagator::Baggage]
        );
        assert_eq!(spec.signals, Signals::default());
        assert!(spec.sampler.is_none());
    }

    #[test]
    fn names_round_trip_through_serde() {
        let spec: InstrumentationSpec = serde_json::from_value(serde_json::json!({
            "exporter": {"endpoint": "http://gw:4317", "protocol": "grpc"},
            "propagators": ["b3multi", "tracecontext"],
            "sampler": {"type": "parentbased_traceidratio", "argument": 0.25},
            "signals": {"logs": false}
        }))
        .unwrap();
        assert_eq!(spec.exporter.protocol.as_str(), "grpc");
        assert_eq!(spec.propagators[0].as_str(), "b3multi");
        let s = spec.sampler.unwrap();
        assert_eq!(s.type_.as_str(), "parentbased_traceidratio");
        assert!(s.type_.takes_ratio());
        assert!(spec.signals.traces && spec.signals.metrics && !spec.signals.logs);
    }

    #[test]
    fn a_ratio_may_be_a_string_as_upstream_writes_it_and_stays_in_range() {
        let arg = |v: serde_json::Value| {
            serde_json::from_value::<Sampler>(
                serde_json::json!({"type": "parentbased_traceidratio", "argument": v}),
            )
            .map(|s| s.argument)
            .map_err(|e| e.to_string())
        };
        assert_eq!(arg(serde_json::json!("0.25")), Ok(Some(0.25)));
        assert_eq!(arg(serde_json::json!(0.25)), Ok(Some(0.25)));
        assert_eq!(arg(serde_json::json!(1)), Ok(Some(1.0)));
        let e = arg(serde_json::json!("1.5")).unwrap_err();
        assert!(e.contains("spec.sampler.argument 1.5"), "{e}");
        let e = arg(serde_json::json!("half")).unwrap_err();
        assert!(
            e.contains("\"half\"") && e.contains("between 0 and 1"),
            "{e}"
        );
        assert!(arg(serde_json::json!(-0.1)).is_err());
    }

    #[test]
    fn unknown_sampler_is_rejected() {
        let r: Result<Sampler, _> =
            serde_json::from_value(serde_json::json!({"type": "sometimes"}));
        assert!(r.is_err());
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval_ms("500ms"), Some(500));
        assert_eq!(parse_interval_ms("30s"), Some(30_000));
        assert_eq!(parse_interval_ms("2m"), Some(120_000));
        assert_eq!(parse_interval_ms("2h"), None);
        assert_eq!(parse_interval_ms("s"), None);
        assert_eq!(parse_interval_ms("10"), None);
    }
}

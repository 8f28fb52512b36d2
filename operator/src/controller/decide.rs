//! Stage 2, decide (pure): the plan for a workload from its dereferenced inputs, or the
//! problem that stops it.

use super::*;

/// Decides the plan for a Deployment from its resolved inputs (pure).
pub(super) fn decide(
    d: &Deployment,
    inputs: &Inputs,
    owned: &ownership::Shape,
) -> Result<Plan, Problem> {
    let inst = match &inputs.instrumentation {
        Some((name, guard)) => match &guard.0 {
            Ok(i) => Some((name.as_str(), &i.spec)),
            Err(e) => {
                return Err(Problem {
                    reason: "InvalidInstrumentation",
                    message: format!(
                        "Instrumentation {name} is invalid, keeping what was injected before: {}",
                        e.error
                    ),
                });
            }
        },
        None => None,
    };
    let collector = match &inputs.collector {
        Some((name, guard)) => match &guard.0 {
            Ok(c) => {
                let config = validate_config(&c.spec.config).map_err(|e| Problem {
                    reason: "InvalidCollectorConfig",
                    message: format!("Collector {name}: {e}; the running sidecar keeps its last good configuration"),
                })?;
                Some((c, config))
            }
            Err(e) => {
                return Err(Problem {
                    reason: "InvalidCollector",
                    message: format!(
                        "Collector {name} is invalid, keeping the running sidecar: {}",
                        e.error
                    ),
                });
            }
        },
        None => None,
    };
    let spec = d.spec.as_ref();
    let template = spec.map(|s| &s.template);
    let containers = template
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let meta = template.and_then(|t| t.metadata.as_ref());
    let w = Workload {
        kind: crate::workload::Kind::Deployment,
        namespace: d.metadata.namespace.as_deref().unwrap_or_default(),
        name: d.metadata.name.as_deref().unwrap_or_default(),
        template_labels: meta.and_then(|m| m.labels.as_ref()),
        containers,
        current_hash: current_hash(d),
        owned,
    };
    let req = Request {
        instrumentation: inst,
        sidecar: collector.as_ref().map(|(c, config)| SidecarSource {
            spec: &c.spec,
            config,
        }),
        container_names: inputs.resolved.container_names.as_deref(),
        service_name: inputs.resolved.service_name.as_deref(),
    };
    inject::plan(&w, &req).map_err(|e| Problem {
        reason: "MissingEndpoint",
        message: e.to_string(),
    })
}

/// A Warning when a rollout of kotel's injection has stalled; kotel does not roll back.
pub(super) fn stuck_rollout(d: &Deployment) -> Option<Problem> {
    let hash = current_hash(d)?;
    (rollout::of_deployment(d) == rollout::State::Failed).then(|| Problem {
        reason: "RolloutStuck",
        message: format!(
            "the rollout of this Deployment (kotel config-hash {hash}) exceeded its progress deadline; kotel does not roll back: fix the pods, or run kubectl rollout undo"
        ),
    })
}

pub(super) fn current_hash(d: &Deployment) -> Option<&str> {
    annotations::template_hash(&d.spec.as_ref()?.template)
}

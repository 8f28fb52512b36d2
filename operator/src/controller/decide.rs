//! Stage 2, decide (pure): the plan for a workload from its dereferenced inputs, or the
//! problem that stops it.

use super::*;

/// Decides the plan for a workload from its resolved inputs (pure); `None` while the sidecar
/// Collector's configuration awaits its image's verdict (the Collector's status change wakes
/// the workload again).
pub(super) fn decide(
    w: &dyn Templated,
    inputs: &Inputs,
    owned: &ownership::Shape,
) -> Result<Option<Plan>, Problem> {
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
                let key = validation::key(&config.to_yaml(), c.spec.image());
                let verdict = c.status.as_ref().and_then(|s| s.validation.as_ref());
                match validation::cached(verdict, &key) {
                    None => return Ok(None),
                    Some(v) if v.result == "Invalid" => {
                        return Err(Problem {
                            reason: "InvalidCollectorConfig",
                            message: format!(
                                "Collector {name}: {}; the running sidecar keeps its last good configuration",
                                v.message
                                    .as_deref()
                                    .unwrap_or("refused by the collector image")
                            ),
                        });
                    }
                    Some(_) => {}
                }
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
    let workload = Workload {
        kind: w.kind(),
        namespace: w.namespace(),
        name: w.name(),
        template_labels: Some(&w.template().labels),
        containers: &w.template().containers,
        current_hash: w.config_hash(),
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
        agent: inputs.resolved.agent,
    };
    inject::plan(&workload, &req)
        .map(Some)
        .map_err(|e| Problem {
            reason: match e {
                inject::PlanError::MissingEndpoint(_) => "MissingEndpoint",
                inject::PlanError::AgentProtocol(_) => "AgentProtocol",
            },
            message: e.to_string(),
        })
}

/// The rollout state of a workload kotel injected (not a gateway's), if its kind has rollouts.
pub(super) fn injected_rollout(w: &dyn Templated) -> Option<rollout::State> {
    w.config_hash()?;
    if gateway::is_gateway_workload(w.object_meta()) {
        return None;
    }
    w.progress().map(|p| rollout::state(&p))
}

/// A Warning when a rollout of kotel's injection has stalled; kotel does not roll back.
pub(super) fn stuck_rollout(w: &dyn Templated) -> Option<Problem> {
    let hash = w.config_hash()?;
    (injected_rollout(w) == Some(rollout::State::Failed)).then(|| Problem {
        reason: "RolloutStuck",
        message: format!(
            "the rollout of this {} (kotel config-hash {hash}) exceeded its progress deadline; kotel does not roll back: fix the pods, or run kubectl rollout undo",
            w.kind().as_str()
        ),
    })
}

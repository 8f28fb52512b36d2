//! Stage 1, dereference: a workload's annotations resolved into the Instrumentation and
//! Collector they name, read from the stores. No request to the API server.

use super::*;

/// A standing problem with a workload: reported as a Warning Event, nothing written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub(super) reason: &'static str,
    pub(super) message: String,
}

/// The resolved inputs of one workload's reconcile.
pub(super) struct Inputs {
    pub(super) instrumentation: Option<(String, Arc<DeserializeGuard<Instrumentation>>)>,
    pub(super) collector: Option<(String, Arc<DeserializeGuard<Collector>>)>,
    pub(super) resolved: Resolved,
    /// Warnings that do not stop the reconcile (a named object that is gone).
    pub(super) notes: Vec<Problem>,
}

pub(super) fn namespace_annotations(stores: &Stores, ns: &str) -> Option<Arc<Namespace>> {
    stores.namespaces.get(&ObjectRef::new(ns))
}

pub(super) fn resolve_workload(
    w: &dyn Templated,
    ns_obj: Option<&Namespace>,
) -> Result<Resolved, annotations::AnnotationError> {
    let sources = Sources {
        workload: w.object_meta().annotations.as_ref(),
        template: Some(&w.template().annotations),
        namespace: ns_obj.and_then(|n| n.metadata.annotations.as_ref()),
    };
    annotations::resolve(&sources, w.namespace())
}

pub(super) fn names_of<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    keep: impl Fn(&K) -> bool,
) -> Vec<(String, String)> {
    store
        .state()
        .iter()
        .filter(|o| keep(o))
        .map(|o| {
            (
                o.meta().namespace.clone().unwrap_or_default(),
                o.meta().name.clone().unwrap_or_default(),
            )
        })
        .collect()
}

pub(super) fn is_sidecar_collector(c: &DeserializeGuard<Collector>) -> bool {
    // A malformed Collector still counts when picking, so that `true` is not silently re-pointed.
    c.0.as_ref()
        .map(|c| c.spec.mode == Mode::Sidecar)
        .unwrap_or(true)
}

/// Dereferences a workload's annotations into the objects they name.
pub(super) fn dereference(w: &dyn Templated, stores: &Stores) -> Result<Inputs, Problem> {
    let ns = w.namespace().to_string();
    let ns_obj = namespace_annotations(stores, &ns);
    let resolved = resolve_workload(w, ns_obj.as_deref()).map_err(|e| Problem {
        reason: "InvalidAnnotation",
        message: e.to_string(),
    })?;
    let mut notes = Vec::new();
    let pick_problem = |e: PickError| -> Result<(), Problem> {
        match e {
            PickError::Ambiguous { annotation, .. } => Err(Problem {
                reason: if annotation == annotations::INJECT {
                    "AmbiguousInstrumentation"
                } else {
                    "AmbiguousCollector"
                },
                message: e.to_string(),
            }),
            other => Err(Problem {
                reason: "NotFound",
                message: other.to_string(),
            }),
        }
    };

    let instrumentation = if resolved.inject == InjectRef::Off {
        None
    } else {
        let existing = names_of(&stores.instrumentations, |_| true);
        match annotations::pick_instrumentation(&resolved.inject, &ns, &existing) {
            Ok(Some((ins, name))) => stores
                .instrumentations
                .get(&ObjectRef::new(&name).within(&ins))
                .map(|o| (format!("{ins}/{name}"), o)),
            Ok(None) => None,
            Err(e @ PickError::Ambiguous { .. }) => return pick_problem(e).map(|_| unreachable!()),
            Err(e) => {
                // The Instrumentation is gone: kotel removes what it injected from it.
                notes.push(Problem {
                    reason: "InstrumentationNotFound",
                    message: e.to_string(),
                });
                None
            }
        }
    };
    let collector = if resolved.sidecar == SidecarRef::Off {
        None
    } else {
        let existing = names_of(&stores.collectors, is_sidecar_collector);
        match annotations::pick_sidecar(&resolved.sidecar, &ns, &existing) {
            Ok(Some((cns, name))) => stores
                .collectors
                .get(&ObjectRef::new(&name).within(&cns))
                .map(|o| (name, o)),
            Ok(None) => None,
            Err(e @ PickError::Ambiguous { .. }) => return pick_problem(e).map(|_| unreachable!()),
            Err(e) => {
                notes.push(Problem {
                    reason: "CollectorNotFound",
                    message: e.to_string(),
                });
                None
            }
        }
    };
    Ok(Inputs {
        instrumentation,
        collector,
        resolved,
        notes,
    })
}

/// Which of the `existing` Instrumentations a workload is injected from now, if any
/// (`names_of` the store, taken once by a caller that asks for every workload).
pub(super) fn injected_from(
    w: &dyn Templated,
    stores: &Stores,
    existing: &[(String, String)],
) -> Option<(String, String)> {
    picked(w, stores, |r, ns| {
        annotations::pick_instrumentation(&r.inject, ns, existing)
    })
}

/// Which of the `existing` sidecar Collectors a workload carries now, if any.
pub(super) fn sidecar_from(
    w: &dyn Templated,
    stores: &Stores,
    existing: &[(String, String)],
) -> Option<(String, String)> {
    picked(w, stores, |r, ns| {
        annotations::pick_sidecar(&r.sidecar, ns, existing)
    })
}

/// What `pick` chooses from an injected workload's annotations; nothing for a workload kotel
/// has not injected or whose annotations do not resolve.
fn picked(
    w: &dyn Templated,
    stores: &Stores,
    pick: impl FnOnce(&Resolved, &str) -> Result<Option<(String, String)>, annotations::PickError>,
) -> Option<(String, String)> {
    w.config_hash()?;
    let ns = w.namespace();
    let nso = namespace_annotations(stores, ns);
    let r = resolve_workload(w, nso.as_deref()).ok()?;
    pick(&r, ns).ok().flatten()
}

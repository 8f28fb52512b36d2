//! The Instrumentation controller: reports `Ready`, how many workloads of each kind use it,
//! and where their rollouts stand.

use super::*;

pub(super) async fn reconcile_instrumentation(
    obj: Arc<DeserializeGuard<Instrumentation>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let res = instrumentation_status(&obj, &ctx).await;
    if res.is_ok() {
        ctx.backoff.reset(&backoff::key(obj.as_ref()));
    }
    res
}

pub(super) async fn instrumentation_status(
    obj: &DeserializeGuard<Instrumentation>,
    ctx: &Context,
) -> Result<Action, Error> {
    let inst = match &obj.0 {
        Ok(inst) => inst,
        Err(invalid) => return invalid_status(invalid, ctx).await,
    };
    ctx.stores.wait_until_ready().await;
    let ns = inst.namespace().unwrap_or_default();
    let name = inst.name_any();
    let all = ctx.stores.workloads.all();
    let existing = names_of(&ctx.stores.instrumentations, |_| true);
    let (mut by_kind, mut rollouts) = (status::ByKind::default(), status::Rollouts::default());
    for w in all.iter().filter(|w| {
        injected_from(w.as_ref(), &ctx.stores, &existing) == Some((ns.clone(), name.clone()))
    }) {
        by_kind.add(w.kind());
        if let Some(s) = injected_rollout(w.as_ref()) {
            rollouts.add(s);
        }
    }
    let workloads = by_kind.total();
    ctx.metrics.injected.set(
        all.iter()
            .filter(|w| w.config_hash().is_some() && !gateway::is_gateway_workload(w.object_meta()))
            .count() as i64,
    );
    let previous = inst.status.clone().unwrap_or_default();
    let generation = inst.metadata.generation;
    let mut message = format!(
        "injected into {workloads} workload(s): {} Deployment(s), {} StatefulSet(s), {} DaemonSet(s), {} CronJob(s)",
        by_kind.deployments, by_kind.stateful_sets, by_kind.daemon_sets, by_kind.cron_jobs
    );
    let overrides = inject::env_overrides(&inst.spec);
    if !overrides.is_empty() {
        message.push_str(&format!(
            "; spec.env sets {}, which kotel otherwise derives from the other fields of the spec: spec.env's values are used",
            overrides.join(", ")
        ));
    }
    let want = Want {
        type_: "Ready",
        ok: true,
        reason: "Accepted",
        message,
    };
    let conditions = vec![status::condition(
        &want,
        generation,
        &previous.conditions,
        now(),
    )];
    if previous.observed_generation == generation
        && previous.workloads == workloads
        && previous.by_kind == Some(by_kind)
        && previous.rollouts == Some(rollouts)
        && status::same_conditions(&previous.conditions, &conditions)
    {
        return Ok(Action::await_change());
    }
    let body = json!({
        "apiVersion": "kotel.dev/v1alpha1",
        "kind": "Instrumentation",
        "status": {"observedGeneration": generation, "conditions": conditions, "workloads": workloads,
                   "byKind": by_kind, "rollouts": rollouts}
    });
    apply_status::<Instrumentation>(ctx, &ns, &name, &body).await?;
    Ok(Action::await_change())
}

/// A spec kotel cannot read (one the schema cannot check, such as a sampler ratio out of
/// range): `Ready=False` with the error, which names the field, and one Warning Event when it
/// turns invalid. Workloads keep what was injected before.
async fn invalid_status(
    invalid: &kube::core::error_boundary::InvalidObject,
    ctx: &Context,
) -> Result<Action, Error> {
    let meta = &invalid.metadata;
    let (ns, name) = (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    let want = Want {
        type_: "Ready",
        ok: false,
        reason: "InvalidSpec",
        message: format!("{}; workloads keep what was injected before", invalid.error),
    };
    let condition = status::condition(&want, meta.generation, &[], now());
    // The previous status cannot be read either; the condition itself says whether it changed.
    let key = format!("{ns}/{name}/{:?}/{}", meta.generation, invalid.error);
    if !ctx.invalid_reported.lock().expect("lock").insert(key) {
        return Ok(Action::await_change());
    }
    ctx.publish(
        ObjectReference {
            api_version: Some("kotel.dev/v1alpha1".into()),
            kind: Some("Instrumentation".into()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            ..Default::default()
        },
        EventType::Warning,
        "InvalidSpec",
        "Validate",
        want.message.clone(),
    )
    .await;
    let body = json!({
        "apiVersion": "kotel.dev/v1alpha1",
        "kind": "Instrumentation",
        "status": {"observedGeneration": meta.generation, "conditions": [condition]}
    });
    apply_status::<Instrumentation>(ctx, &ns, &name, &body).await?;
    Ok(Action::await_change())
}

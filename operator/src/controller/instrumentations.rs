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
    let Ok(inst) = &obj.0 else {
        return Ok(Action::await_change());
    };
    ctx.stores.wait_until_ready().await;
    let ns = inst.namespace().unwrap_or_default();
    let name = inst.name_any();
    let all = ctx.stores.workloads.all();
    let (mut by_kind, mut rollouts) = (status::ByKind::default(), status::Rollouts::default());
    for w in all
        .iter()
        .filter(|w| injected_from(w.as_ref(), &ctx.stores) == Some((ns.clone(), name.clone())))
    {
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
    let want = Want {
        type_: "Ready",
        ok: true,
        reason: "Accepted",
        message: format!(
            "injected into {workloads} workload(s): {} Deployment(s), {} StatefulSet(s), {} DaemonSet(s), {} CronJob(s)",
            by_kind.deployments, by_kind.stateful_sets, by_kind.daemon_sets, by_kind.cron_jobs
        ),
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

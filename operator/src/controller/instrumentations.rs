//! The Instrumentation controller: reports `Ready` and how many workloads use it.

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
    let deployments = ctx.stores.deployments.state();
    let workloads = deployments
        .iter()
        .filter(|d| injected_from(d, &ctx.stores) == Some((ns.clone(), name.clone())))
        .count() as i32;
    ctx.metrics.injected.set(
        deployments
            .iter()
            .filter(|d| current_hash(d).is_some())
            .count() as i64,
    );
    let previous = inst.status.clone().unwrap_or_default();
    let generation = inst.metadata.generation;
    let want = Want {
        type_: "Ready",
        ok: true,
        reason: "Accepted",
        message: format!("injected into {workloads} Deployment(s)"),
    };
    let conditions = vec![status::condition(
        &want,
        generation,
        &previous.conditions,
        now(),
    )];
    if previous.observed_generation == generation
        && previous.workloads == workloads
        && status::same_conditions(&previous.conditions, &conditions)
    {
        return Ok(Action::await_change());
    }
    let body = json!({
        "apiVersion": "kotel.dev/v1alpha1",
        "kind": "Instrumentation",
        "status": {"observedGeneration": generation, "conditions": conditions, "workloads": workloads}
    });
    apply_status::<Instrumentation>(ctx, &ns, &name, &body).await?;
    Ok(Action::await_change())
}

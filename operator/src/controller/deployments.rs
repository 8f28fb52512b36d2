//! The Deployment controller: a thin shell that runs the stages in order
//! (dereference → decide → apply → report) and returns an `Action`.

use super::*;

/// Reconciles one Deployment.
pub(super) async fn reconcile_deployment(
    d: Arc<Deployment>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", deployment = %d.name_any(), namespace = field::Empty, trace_id = field::Empty);
    span.record("namespace", d.namespace().unwrap_or_default());
    crate::telemetry::record_trace_id(&span);
    let start = Instant::now();
    let res = reconcile_inner(&d, &ctx).instrument(span.clone()).await;
    ctx.metrics.observe(start.elapsed());
    // One line per reconcile at debug level, so that one can see that kotel looked at a
    // workload even when there was nothing to write.
    span.in_scope(|| tracing::debug!(ok = res.is_ok(), "reconciled"));
    if res.is_ok() {
        ctx.backoff.reset(&backoff::key(d.as_ref()));
    }
    res
}

pub(super) async fn reconcile_inner(d: &Deployment, ctx: &Context) -> Result<Action, Error> {
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Deciding from a half-filled store would remove injections that are still wanted.
    ctx.stores.wait_until_ready().await;
    let ns = d.namespace().unwrap_or_default();
    if namespace_annotations(&ctx.stores, &ns)
        .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
    {
        // Nothing can be written into a terminating namespace, and nothing needs to be.
        return Ok(Action::await_change());
    }
    if gateway::is_gateway_workload(&d.metadata) {
        return Ok(Action::await_change());
    }
    let owned = ownership::owned_shape(&d.metadata);
    ctx.metrics.set_rollouts(
        ctx.stores
            .deployments
            .state()
            .iter()
            .filter(|d| current_hash(d).is_some() && !gateway::is_gateway_workload(&d.metadata))
            .map(|d| rollout::of_deployment(d)),
    );

    let inputs = match dereference(d, &ctx.stores) {
        Ok(mut i) => {
            if let Some(p) = stuck_rollout(d) {
                i.notes.push(p);
            }
            i
        }
        Err(p) => {
            ctx.report(d, std::slice::from_ref(&p)).await;
            return Ok(Action::await_change());
        }
    };
    if !inputs.resolved.wants_anything() && owned.is_empty() {
        ctx.clear_report(d);
        return Ok(Action::await_change());
    }
    let plan = match decide(d, &inputs, &owned) {
        Ok(p) => p,
        Err(p) => {
            ctx.report(d, std::slice::from_ref(&p)).await;
            return Ok(Action::await_change());
        }
    };
    if inputs.notes.is_empty() {
        ctx.clear_report(d);
    } else {
        ctx.report(d, &inputs.notes).await;
    }

    if plan.intent.is_applied(&owned, current_hash(d)) {
        return Ok(Action::await_change());
    }

    apply_intent(ctx, d, &plan).await?;
    report_applied(ctx, d, &plan, &inputs).await;
    Ok(Action::await_change())
}

pub(super) fn error_policy(d: Arc<Deployment>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(deployment = %d.name_any(), namespace = %d.namespace().unwrap_or_default(), error = %err, "reconcile failed");
    ctx.metrics.error("kube");
    backoff(d.as_ref(), &ctx)
}

//! The workload controller, one instance per kind: a thin shell that runs the stages in order
//! (dereference → decide → apply → report) and returns an `Action`. Everything but the apply
//! reads the workload as `&dyn Templated`, so no stage has a copy per kind.

use super::*;

/// Reconciles one workload.
pub(super) async fn reconcile_workload<W: Object>(
    w: Arc<W>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let span = tracing::info_span!(
        "reconcile",
        kind = W::KIND.as_str(),
        workload = %Templated::name(w.as_ref()),
        namespace = %Templated::namespace(w.as_ref()),
        trace_id = field::Empty
    );
    crate::telemetry::record_trace_id(&span);
    let start = Instant::now();
    let res = reconcile_inner(w.as_ref(), &ctx)
        .instrument(span.clone())
        .await;
    ctx.metrics.observe(start.elapsed());
    // One line per reconcile at debug level, so that one can see that kotel looked at a
    // workload even when there was nothing to write.
    span.in_scope(|| tracing::debug!(ok = res.is_ok(), "reconciled"));
    if res.is_ok() {
        ctx.backoff.reset(&backoff::key(w.as_ref()));
    }
    res
}

pub(super) async fn reconcile_inner<W: Object>(w: &W, ctx: &Context) -> Result<Action, Error> {
    if w.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Deciding from a half-filled store would remove injections that are still wanted.
    ctx.stores.wait_until_ready().await;
    if namespace_annotations(&ctx.stores, Templated::namespace(w))
        .is_some_and(|n| n.metadata.deletion_timestamp.is_some())
    {
        // Nothing can be written into a terminating namespace, and nothing needs to be.
        return Ok(Action::await_change());
    }
    if gateway::is_gateway_workload(w.meta()) {
        return Ok(Action::await_change());
    }
    let owned = w.owned();
    ctx.observe_rollout(w);

    let inputs = match dereference(w, &ctx.stores) {
        Ok(mut i) => {
            if let Some(p) = stuck_rollout(w) {
                i.notes.push(p);
            }
            i
        }
        Err(p) => {
            ctx.report(w, std::slice::from_ref(&p)).await;
            return Ok(Action::await_change());
        }
    };
    if !inputs.resolved.wants_anything() && owned.is_empty() {
        ctx.clear_report(w);
        return Ok(Action::await_change());
    }
    let plan = match decide(w, &inputs, owned) {
        Ok(Some(p)) => p,
        // The Collector's image has not judged its configuration yet.
        Ok(None) => return Ok(Action::await_change()),
        Err(p) => {
            ctx.report(w, std::slice::from_ref(&p)).await;
            return Ok(Action::await_change());
        }
    };
    let mut notes = inputs.notes.clone();
    let secret_refs = pod_check::worth_checking(w, &inputs);
    let check_pods = !secret_refs.is_empty();
    if check_pods {
        let inst = inputs
            .instrumentation
            .as_ref()
            .map_or("", |(n, _)| n.as_str());
        notes.extend(pod_check::missing_secret(ctx, w, &secret_refs, inst).await?);
    }
    if !plan.unknown_containers.is_empty() {
        // A standing problem, reported once, whether or not anything else changes.
        notes.push(Problem {
            reason: "UnknownContainer",
            message: format!(
                "{} lists containers that the pod template does not have: {}",
                annotations::CONTAINER_NAMES,
                plan.unknown_containers.join(", ")
            ),
        });
    }
    if notes.is_empty() {
        ctx.clear_report(w);
    } else {
        ctx.report(w, &notes).await;
    }

    let next = if check_pods {
        Action::requeue(pod_check::RECHECK)
    } else {
        Action::await_change()
    };
    if plan.intent.is_applied(owned, w.config_hash()) {
        return Ok(next);
    }

    apply_intent(ctx, w, &plan).await?;
    report_applied(ctx, w, &plan, &inputs).await;
    Ok(next)
}

pub(super) fn error_policy<W: Object>(w: Arc<W>, err: &Error, ctx: Arc<Context>) -> Action {
    warn!(kind = W::KIND.as_str(), workload = %Templated::name(w.as_ref()), namespace = %Templated::namespace(w.as_ref()), error = %err, "reconcile failed");
    ctx.metrics.error("kube");
    backoff(w.as_ref(), &ctx)
}

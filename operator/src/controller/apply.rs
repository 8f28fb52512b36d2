//! Stage 3, apply: server-side apply of what kotel owns, only where it differs from what runs.

use super::*;

/// Applies kotel's intent to a workload: only kotel's fields, so a smaller intent removes
/// exactly what kotel added before. Wakes the status controllers.
pub(super) async fn apply_intent<W: Object>(
    ctx: &Context,
    w: &W,
    plan: &Plan,
) -> Result<(), Error> {
    let (ns, name) = (Templated::namespace(w), Templated::name(w));
    let api: Api<W> = Api::namespaced(ctx.client.clone(), ns);
    let body = plan.intent.apply_body(W::KIND, ns, name);
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    ctx.metrics.write(&W::KIND.as_str().to_lowercase());
    let _ = ctx.status_trigger.unbounded_send(());
    Ok(())
}

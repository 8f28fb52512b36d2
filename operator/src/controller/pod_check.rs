//! Stage 1b for an injected workload whose rollout has not completed and whose Instrumentation
//! has an exporter header from a Secret: its pods, listed by the template's labels, say whether
//! that Secret is missing (see `blocked`). The only read of pods a workload reconcile makes.

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

use super::*;

/// The Secret-backed headers to look for when `w`'s pods are worth a look: kotel's rollout is
/// not complete and the Instrumentation reads a header from a Secret. While there are some,
/// the workload is checked again after `RECHECK`, as a pod's failure to start changes nothing
/// in the workload's own status.
pub(super) fn worth_checking(w: &dyn Templated, inputs: &Inputs) -> Vec<crate::blocked::HeaderRef> {
    let pending = matches!(
        injected_rollout(w),
        Some(rollout::State::Pending | rollout::State::Failed)
    );
    match (&inputs.instrumentation, pending) {
        (Some((_, inst)), true) => inst
            .0
            .as_ref()
            .map(|i| crate::blocked::header_refs(&i.spec.exporter.headers))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// How soon a workload whose pods are worth a look is looked at again.
pub(super) const RECHECK: Duration = Duration::from_secs(15);

/// A `SecretMissing` problem when the pods cannot start for want of a header's Secret.
pub(super) async fn missing_secret(
    ctx: &Context,
    w: &dyn Templated,
    refs: &[crate::blocked::HeaderRef],
    instrumentation: &str,
) -> Result<Option<Problem>, Error> {
    let labels = w
        .template()
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if labels.is_empty() {
        return Ok(None);
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), w.namespace());
    let list = pods.list(&ListParams::default().labels(&labels)).await?;
    Ok(
        crate::blocked::missing_secret(refs, &list.items, w.namespace(), instrumentation).map(
            |message| Problem {
                reason: "SecretMissing",
                message,
            },
        ),
    )
}

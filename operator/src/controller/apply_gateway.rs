//! Stage 3 for a gateway Collector: server-side apply of its objects where they are missing or
//! drifted (read from the label-selected stores), and their removal.

use super::*;

/// Applies those of a gateway's objects that are missing or differ from what kotel wants (read
/// from the stores, so a deleted or edited object is repaired and a steady gateway costs no
/// request), removes the workload of the other mode, and returns (desired, ready) pods.
pub(super) async fn apply_gateway(
    ctx: &Context,
    ns: &str,
    name: &str,
    objects: gateway::Objects,
) -> Result<(i32, i32), Error> {
    let live = ctx.stores.gateway.live(ns, name);
    let drift = gateway::drift(&objects, &live.view());
    match &objects.workload {
        gateway::Workload::Deployment(_) if live.daemon_set.is_some() => {
            remove_gateway(ctx, ns, name, Some("DaemonSet")).await?
        }
        gateway::Workload::DaemonSet(_) if live.deployment.is_some() => {
            remove_gateway(ctx, ns, name, Some("Deployment")).await?
        }
        _ => {}
    }
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    if drift.service_account {
        let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), ns);
        api.patch(name, &pp, &Patch::Apply(&objects.service_account))
            .await?;
        ctx.metrics.write("gateway");
    }
    if drift.config_map {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        api.patch(name, &pp, &Patch::Apply(&objects.config_map))
            .await?;
        ctx.metrics.write("gateway");
    }
    if drift.service {
        let api: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
        api.patch(name, &pp, &Patch::Apply(&objects.service))
            .await?;
        ctx.metrics.write("gateway");
    }
    let deployment_pods = |d: &Deployment| {
        let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let ready = d
            .status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
        (want, ready)
    };
    let daemon_set_pods = |d: &DaemonSet| {
        let st = d.status.clone().unwrap_or_default();
        (st.desired_number_scheduled, st.number_ready)
    };
    let pods = match (&objects.workload, drift.workload) {
        (gateway::Workload::Deployment(d), true) => {
            let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), ns);
            let mut applied = api.patch(name, &pp, &Patch::Apply(d)).await?;
            ctx.metrics.write("gateway");
            applied.spec = d.spec.clone();
            deployment_pods(&applied)
        }
        (gateway::Workload::DaemonSet(ds), true) => {
            let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), ns);
            let applied = api.patch(name, &pp, &Patch::Apply(ds)).await?;
            ctx.metrics.write("gateway");
            daemon_set_pods(&applied)
        }
        (gateway::Workload::Deployment(_), false) => live
            .deployment
            .as_deref()
            .map(deployment_pods)
            .unwrap_or_default(),
        (gateway::Workload::DaemonSet(_), false) => live
            .daemon_set
            .as_deref()
            .map(daemon_set_pods)
            .unwrap_or_default(),
    };
    if !drift.is_none() {
        info!(collector = %name, namespace = %ns, hash = %objects.hash, ?drift, "applied the collector gateway");
    }
    Ok(pods)
}

/// Deletes a gateway's objects: only the workload of `kind` when given, else all of them.
/// Only objects labelled as kotel's are touched.
pub(super) async fn remove_gateway(
    ctx: &Context,
    ns: &str,
    name: &str,
    kind: Option<&str>,
) -> Result<(), Error> {
    async fn delete<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
    where
        K: Namespaced,
    {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
        match api.get_metadata_opt(name).await? {
            Some(o) if gateway::is_gateway_workload(&o.metadata) => {
                api.delete(name, &Default::default()).await?;
                ctx.metrics.write("gateway");
                Ok(())
            }
            _ => Ok(()),
        }
    }
    match kind {
        Some("Deployment") => delete::<Deployment>(ctx, ns, name).await,
        Some(_) => delete::<DaemonSet>(ctx, ns, name).await,
        None => {
            delete::<Deployment>(ctx, ns, name).await?;
            delete::<DaemonSet>(ctx, ns, name).await?;
            delete::<Service>(ctx, ns, name).await?;
            delete::<ConfigMap>(ctx, ns, name).await?;
            delete::<ServiceAccount>(ctx, ns, name).await
        }
    }
}

//! Annotated bare Pods and Jobs: their pod template cannot change after creation, so kotel
//! patches nothing and says so once per object in a Warning Event that names what to annotate
//! instead. Metadata-only watches without a store, so the cost does not grow with the pods.

use std::collections::HashSet;

use kube::core::PartialObjectMeta;

use super::*;

/// Watches Pods and Jobs until the watches end; reports each annotated uncontrolled one once.
pub(super) async fn run(client: Client, ctx: Arc<Context>) {
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::core::v1::Pod;
    let config = watcher::Config::default().page_size(500);
    let pods = watcher(
        Api::<PartialObjectMeta<Pod>>::all(client.clone()),
        config.clone(),
    )
    .default_backoff()
    .map(|e| ("Pod", "v1", e.map(erase)))
    .boxed();
    let jobs = watcher(Api::<PartialObjectMeta<Job>>::all(client), config)
        .default_backoff()
        .map(|e| ("Job", "batch/v1", e.map(erase)))
        .boxed();
    let mut reported: HashSet<String> = HashSet::new();
    let mut events = futures::stream::select(pods, jobs);
    ctx.stores.wait_until_ready().await;
    while let Some((kind, api_version, ev)) = events.next().await {
        let meta = match ev {
            Ok(watcher::Event::Apply(m) | watcher::Event::InitApply(m)) => m,
            Ok(watcher::Event::Delete(m)) => {
                reported.remove(m.uid.as_deref().unwrap_or_default());
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                warn!(error = %e, kind, "watch error");
                continue;
            }
        };
        let uid = meta.uid.clone().unwrap_or_default();
        if meta.deletion_timestamp.is_some() || reported.contains(&uid) {
            continue;
        }
        if let Some(note) = crate::workload::unpatchable(kind, &meta) {
            reported.insert(uid);
            let regarding = ObjectReference {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
                name: meta.name.clone(),
                namespace: meta.namespace.clone(),
                uid: meta.uid.clone(),
                ..Default::default()
            };
            ctx.publish(
                regarding,
                EventType::Warning,
                "NotPatchable",
                "Reconcile",
                note,
            )
            .await;
        }
    }
}

/// The object's metadata, whatever its kind.
fn erase<K>(e: watcher::Event<PartialObjectMeta<K>>) -> watcher::Event<ObjectMeta> {
    match e {
        watcher::Event::Apply(o) => watcher::Event::Apply(o.metadata),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.metadata),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.metadata),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

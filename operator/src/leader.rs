//! Leader election on a `coordination.k8s.io` Lease, so that only one replica reconciles.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Lease kotel's replicas compete for.
pub const LEASE_NAME: &str = "kotel-operator";

/// Starts competing for the Lease. The receiver says whether this replica holds it; the task
/// keeps renewing until the receiver is dropped, then releases it.
pub async fn elect(
    client: Client,
    namespace: &str,
    identity: &str,
) -> anyhow::Result<(watch::Receiver<bool>, JoinHandle<()>)> {
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(namespace)
        .with_identity(identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (rx, task) = manager.watch().await;
    let task = tokio::spawn(async move {
        match task.await {
            Ok(Ok(manager)) => {
                let _ = manager.release().await;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "leader election stopped"),
            Err(e) => tracing::warn!(error = %e, "leader election task failed"),
        }
    });
    Ok((rx, task))
}

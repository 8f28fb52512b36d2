//! Whether a workload's rollout finished, read from its own status as the controller-manager
//! reports it. kotel never rolls anything back; it reports a stuck rollout and leaves the
//! decision to the user.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// New pods are still being brought up (or the controller has not seen the change yet).
    Pending,
    /// Every replica runs the newest template and is available, and no old one is left.
    Complete,
    /// The controller gave up: `Progressing=False` with `ProgressDeadlineExceeded`.
    Failed,
}

impl State {
    /// The `state` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Complete => "complete",
            State::Failed => "failed",
        }
    }
}

/// The rollout state of a Deployment from its generation, wanted replicas and status.
pub fn state(
    generation: Option<i64>,
    replicas: Option<i32>,
    status: Option<&DeploymentStatus>,
) -> State {
    let Some(s) = status else {
        return State::Pending;
    };
    let failed = s.conditions.iter().flatten().any(|c| {
        c.type_ == "Progressing"
            && c.status == "False"
            && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    });
    if failed {
        return State::Failed;
    }
    let want = replicas.unwrap_or(1);
    let seen = generation.is_none() || s.observed_generation >= generation;
    let all = |n: Option<i32>| n.unwrap_or(0) == want;
    if seen && all(s.updated_replicas) && all(s.available_replicas) && all(s.replicas) {
        State::Complete
    } else {
        State::Pending
    }
}

/// [`state`] of a Deployment.
pub fn of_deployment(d: &Deployment) -> State {
    state(
        d.metadata.generation,
        d.spec.as_ref().and_then(|s| s.replicas),
        d.status.as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(v: serde_json::Value) -> DeploymentStatus {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn complete_needs_the_newest_generation_and_every_replica_updated_and_available() {
        let done = status(
            json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(state(Some(3), Some(2), Some(&done)), State::Complete);
        assert_eq!(
            state(Some(4), Some(2), Some(&done)),
            State::Pending,
            "not seen yet"
        );
        assert_eq!(
            state(Some(3), Some(3), Some(&done)),
            State::Pending,
            "scaling up"
        );
        let old_left = status(
            json!({"observedGeneration": 3, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 2}),
        );
        assert_eq!(state(Some(3), Some(2), Some(&old_left)), State::Pending);
        let unavailable = status(
            json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1}),
        );
        assert_eq!(state(Some(3), Some(2), Some(&unavailable)), State::Pending);
        assert_eq!(state(Some(1), Some(1), None), State::Pending);
        let zero = status(json!({"observedGeneration": 1}));
        assert_eq!(state(Some(1), Some(0), Some(&zero)), State::Complete);
    }

    #[test]
    fn a_progress_deadline_exceeded_is_failed_whatever_else() {
        let stuck = status(
            json!({"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1,
            "availableReplicas": 1, "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}),
        );
        assert_eq!(state(Some(3), Some(2), Some(&stuck)), State::Failed);
        let progressing = status(json!({"observedGeneration": 3, "conditions": [
                {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}));
        assert_eq!(state(Some(3), Some(2), Some(&progressing)), State::Pending);
    }
}

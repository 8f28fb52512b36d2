//! Status conditions, computed as plain values so that an unchanged status is never written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rollout::State;
use crate::workload::Kind;

/// How many workloads of each kind carry an Instrumentation or a Collector.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByKind {
    /// Deployments.
    #[serde(default)]
    pub deployments: i32,
    /// StatefulSets.
    #[serde(default)]
    pub stateful_sets: i32,
    /// DaemonSets.
    #[serde(default)]
    pub daemon_sets: i32,
    /// CronJobs (their next Jobs carry it).
    #[serde(default)]
    pub cron_jobs: i32,
}

impl ByKind {
    /// Counts one workload of `kind`.
    pub fn add(&mut self, kind: Kind) {
        *match kind {
            Kind::Deployment => &mut self.deployments,
            Kind::StatefulSet => &mut self.stateful_sets,
            Kind::DaemonSet => &mut self.daemon_sets,
            Kind::CronJob => &mut self.cron_jobs,
        } += 1;
    }

    /// Every kind together.
    pub fn total(&self) -> i32 {
        self.deployments + self.stateful_sets + self.daemon_sets + self.cron_jobs
    }
}

/// Where the rollouts of kotel's last change to the workloads stand, as their own status
/// reports them. kotel does not roll back a failed one.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollouts {
    /// New pods are still coming up.
    #[serde(default)]
    pub pending: i32,
    /// Every pod runs the newest template.
    #[serde(default)]
    pub complete: i32,
    /// The workload reports `ProgressDeadlineExceeded`; see its `RolloutStuck` Event.
    #[serde(default)]
    pub failed: i32,
}

impl Rollouts {
    /// Counts one rollout in `state`.
    pub fn add(&mut self, state: State) {
        *match state {
            State::Pending => &mut self.pending,
            State::Complete => &mut self.complete,
            State::Failed => &mut self.failed,
        } += 1;
    }
}

/// A condition as kotel wants it, before timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want<'a> {
    /// Condition type, e.g. `Ready`.
    pub type_: &'a str,
    /// `True` or `False`.
    pub ok: bool,
    /// CamelCase reason.
    pub reason: &'a str,
    /// Human-readable message.
    pub message: String,
}

/// The condition to write: the transition time is kept while the status does not flip.
pub fn condition(
    want: &Want<'_>,
    generation: Option<i64>,
    previous: &[Condition],
    now: Time,
) -> Condition {
    let status = if want.ok { "True" } else { "False" };
    let last = previous
        .iter()
        .find(|c| c.type_ == want.type_ && c.status == status)
        .map(|c| c.last_transition_time.clone());
    Condition {
        type_: want.type_.to_string(),
        status: status.to_string(),
        reason: want.reason.to_string(),
        message: want.message.clone(),
        observed_generation: generation,
        last_transition_time: last.unwrap_or(now),
    }
}

/// Whether two condition lists say the same thing, timestamps aside.
pub fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut x: Vec<_> = a.iter().map(key).collect();
    let mut y: Vec<_> = b.iter().map(key).collect();
    x.sort();
    y.sort();
    x == y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_by_kind_and_state() {
        let mut k = ByKind::default();
        for kind in Kind::ALL.into_iter().chain([Kind::CronJob]) {
            k.add(kind);
        }
        assert_eq!((k.deployments, k.cron_jobs, k.total()), (1, 2, 5));
        let mut r = Rollouts::default();
        for s in State::ALL.into_iter().chain([State::Failed]) {
            r.add(s);
        }
        assert_eq!((r.pending, r.complete, r.failed), (1, 1, 2));
        assert_eq!(
            serde_json::to_value(k).unwrap(),
            serde_json::json!({"deployments": 1, "statefulSets": 1, "daemonSets": 1, "cronJobs": 2})
        );
    }

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn transition_time_survives_unchanged_status() {
        let w = Want {
            type_: "Ready",
            ok: true,
            reason: "Applied",
            message: "1 workload".into(),
        };
        let first = condition(&w, Some(1), &[], t(100));
        assert_eq!(first.last_transition_time, t(100));
        let again = condition(
            &Want {
                message: "2 workloads".into(),
                ..w.clone()
            },
            Some(2),
            std::slice::from_ref(&first),
            t(200),
        );
        assert_eq!(again.last_transition_time, t(100));
        let flipped = condition(
            &Want { ok: false, ..w },
            Some(2),
            std::slice::from_ref(&first),
            t(300),
        );
        assert_eq!(flipped.last_transition_time, t(300));
        assert!(!same_conditions(std::slice::from_ref(&first), &[flipped]));
        let mut later = first.clone();
        later.last_transition_time = t(999);
        assert!(same_conditions(&[first], &[later]));
    }
}

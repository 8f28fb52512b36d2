//! Whether a workload's rollout finished, read from its own status as the controller-manager
//! reports it. kotel never rolls anything back; it reports a stuck rollout and leaves the
//! decision to the user.

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// New pods are still being brought up (or the controller has not seen the change yet).
    Pending,
    /// Every replica runs the newest template and is available, and no old one is left.
    Complete,
    /// The controller gave up: a Deployment's `Progressing=False` with
    /// `ProgressDeadlineExceeded` (StatefulSets and DaemonSets have no deadline).
    Failed,
}

impl State {
    /// Every state, in the order of the `state` label's values.
    pub const ALL: [State; 3] = [State::Pending, State::Complete, State::Failed];

    /// The `state` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Complete => "complete",
            State::Failed => "failed",
        }
    }
}

/// A workload's rollout as its status reports it, in the same terms for every kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// The controller has seen the newest spec (and, for a StatefulSet, finished switching
    /// revisions).
    pub caught_up: bool,
    /// Pods wanted.
    pub want: i32,
    /// Pods there are, old and new.
    pub current: i32,
    /// Pods on the newest template.
    pub updated: i32,
    /// Pods available.
    pub available: i32,
    /// The controller gave up on the rollout.
    pub deadline_exceeded: bool,
}

/// The rollout state of a workload from its progress.
pub fn state(p: &Progress) -> State {
    if p.deadline_exceeded {
        return State::Failed;
    }
    let all = |n: i32| n == p.want;
    if p.caught_up && all(p.current) && all(p.updated) && all(p.available) {
        State::Complete
    } else {
        State::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(caught_up: bool, want: i32, current: i32, updated: i32, available: i32) -> Progress {
        Progress {
            caught_up,
            want,
            current,
            updated,
            available,
            deadline_exceeded: false,
        }
    }

    #[test]
    fn complete_needs_the_newest_spec_and_every_pod_updated_and_available() {
        assert_eq!(state(&p(true, 2, 2, 2, 2)), State::Complete);
        assert_eq!(state(&p(false, 2, 2, 2, 2)), State::Pending, "not seen yet");
        assert_eq!(state(&p(true, 3, 2, 2, 2)), State::Pending, "scaling up");
        assert_eq!(
            state(&p(true, 2, 3, 2, 2)),
            State::Pending,
            "an old pod is left"
        );
        assert_eq!(state(&p(true, 2, 2, 2, 1)), State::Pending, "unavailable");
        assert_eq!(state(&p(true, 2, 2, 1, 2)), State::Pending, "not updated");
        assert_eq!(
            state(&p(true, 0, 0, 0, 0)),
            State::Complete,
            "scaled to zero"
        );
        assert_eq!(state(&Progress::default()), State::Pending, "no status yet");
    }

    #[test]
    fn a_deadline_exceeded_is_failed_whatever_else() {
        let stuck = Progress {
            deadline_exceeded: true,
            ..p(true, 2, 2, 2, 2)
        };
        assert_eq!(state(&stuck), State::Failed);
    }
}

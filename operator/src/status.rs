//! Status conditions, computed as plain values so that an unchanged status is never written.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

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

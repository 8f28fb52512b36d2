//! The kinds of workload whose pod template kotel patches, and the only things that differ
//! between them: their API group, where the pod template sits, and the resource attribute
//! that names them. Everything else (intent, hash, apply, removal) is the same for all.

/// A kind with a pod template kotel can patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
    /// `batch/v1` CronJob: its `jobTemplate`'s pod template, so that its next Jobs carry it.
    CronJob,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [
        Kind::Deployment,
        Kind::StatefulSet,
        Kind::DaemonSet,
        Kind::CronJob,
    ];

    /// `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Kind::CronJob => "batch/v1",
            _ => "apps/v1",
        }
    }

    /// `kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::CronJob => "CronJob",
        }
    }

    /// The resource attribute that names the workload, as the semantic conventions spell it.
    pub fn name_attribute(self) -> &'static str {
        match self {
            Kind::Deployment => "k8s.deployment.name",
            Kind::StatefulSet => "k8s.statefulset.name",
            Kind::DaemonSet => "k8s.daemonset.name",
            Kind::CronJob => "k8s.cronjob.name",
        }
    }

    /// Where the pod template sits in the object, as the keys leading to it.
    pub fn template_path(self) -> &'static [&'static str] {
        match self {
            Kind::CronJob => &["spec", "jobTemplate", "spec", "template"],
            _ => &["spec", "template"],
        }
    }

    /// The same path in a managedFields entry's `fieldsV1`, as a JSON pointer.
    pub fn template_pointer(self) -> String {
        self.template_path()
            .iter()
            .map(|k| format!("/f:{k}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_names_its_group_template_and_attribute() {
        let rows: Vec<_> = Kind::ALL
            .iter()
            .map(|k| {
                (
                    k.api_version(),
                    k.as_str(),
                    k.name_attribute(),
                    k.template_pointer(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "apps/v1",
                    "Deployment",
                    "k8s.deployment.name",
                    "/f:spec/f:template".to_string()
                ),
                (
                    "apps/v1",
                    "StatefulSet",
                    "k8s.statefulset.name",
                    "/f:spec/f:template".to_string()
                ),
                (
                    "apps/v1",
                    "DaemonSet",
                    "k8s.daemonset.name",
                    "/f:spec/f:template".to_string()
                ),
                (
                    "batch/v1",
                    "CronJob",
                    "k8s.cronjob.name",
                    "/f:spec/f:jobTemplate/f:spec/f:template".to_string()
                ),
            ]
        );
    }
}

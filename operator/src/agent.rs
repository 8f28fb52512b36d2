//! Language agents for applications with no OpenTelemetry code: what kotel adds to a pod
//! template so that the Python, Java or Node.js agent loads, delivered from an agent image laid
//! out as the OpenTelemetry Operator's `autoinstrumentation-*` images are (the agent under
//! `/autoinstrumentation`, `cp` on the PATH), so users' existing agent images work unchanged.

use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, ImageVolumeSource, ResourceRequirements, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::sidecar::{hardened_security_context, resources};

/// Where the agent sits in an agent image.
pub const IMAGE_AGENT_DIR: &str = "/autoinstrumentation";

/// A language whose agent kotel can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Language {
    /// CPython: `opentelemetry-distro` and the instrumentations, loaded through `PYTHONPATH`.
    Python,
    /// The JVM: `opentelemetry-javaagent.jar`, loaded through `JAVA_TOOL_OPTIONS`.
    Java,
    /// Node.js: `@opentelemetry/auto-instrumentations-node`, loaded through `NODE_OPTIONS`.
    Nodejs,
}

impl Language {
    /// Every language.
    pub const ALL: [Language; 3] = [Language::Python, Language::Java, Language::Nodejs];

    /// The name in annotations, container and volume names.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Java => "java",
            Language::Nodejs => "nodejs",
        }
    }

    /// `kotel.dev/inject-<language>`.
    pub fn annotation(self) -> &'static str {
        match self {
            Language::Python => "kotel.dev/inject-python",
            Language::Java => "kotel.dev/inject-java",
            Language::Nodejs => "kotel.dev/inject-nodejs",
        }
    }

    /// The upstream agent image used when `spec.<language>.image` is unset (the OpenTelemetry
    /// Operator's release 0.158.0 pins these).
    pub fn default_image(self) -> &'static str {
        match self {
            Language::Python => {
                "ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-python:0.64b0"
            }
            Language::Java => {
                "ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-java:2.30.0"
            }
            Language::Nodejs => {
                "ghcr.io/open-telemetry/opentelemetry-operator/autoinstrumentation-nodejs:0.78.0"
            }
        }
    }

    /// The variable that makes the runtime load the agent.
    pub fn activation_var(self) -> &'static str {
        match self {
            Language::Python => "PYTHONPATH",
            Language::Java => "JAVA_TOOL_OPTIONS",
            Language::Nodejs => "NODE_OPTIONS",
        }
    }

    /// The activation variable's value for an agent at `root`.
    pub fn activation_value(self, root: &str) -> String {
        match self {
            // `sitecustomize` in the first directory starts the agent; the second holds its
            // packages.
            Language::Python => {
                format!("{root}/opentelemetry/instrumentation/auto_instrumentation:{root}")
            }
            Language::Java => format!("-javaagent:{root}/javaagent.jar"),
            Language::Nodejs => format!("--require {root}/autoinstrumentation.js"),
        }
    }

    /// Variables the agent needs besides the SDK's, before `spec.<language>.env`.
    pub fn agent_env(self) -> Vec<EnvVar> {
        match self {
            // Without it the Python agent sends no log records.
            Language::Python => vec![EnvVar {
                name: "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED".into(),
                value: Some("true".into()),
                value_from: None,
            }],
            Language::Java | Language::Nodejs => vec![],
        }
    }

    /// Where the agent's volume is mounted in the application containers.
    pub fn mount_path(self) -> String {
        format!("/otel-auto-instrumentation-{}", self.as_str())
    }

    /// The name of the agent's init container and volume.
    pub fn object_name(self) -> String {
        format!("kotel-agent-{}", self.as_str())
    }
}

/// How the agent reaches the pod.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    /// An init container copies the agent into an `emptyDir` (works on every supported
    /// Kubernetes version).
    #[default]
    Copy,
    /// The agent image is mounted read-only as an image volume: no copy, no init container.
    /// Needs the ImageVolume feature (on by default from Kubernetes 1.35).
    ImageVolume,
}

/// One language's agent settings in an Instrumentation.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// The agent image: the agent under `/autoinstrumentation`, with `cp` available (the
    /// OpenTelemetry Operator's `autoinstrumentation-*` images qualify). Defaults to the pinned
    /// upstream image of the language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Extra environment variables for the containers that get this agent, after kotel's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Resources of the init container that copies the agent. Defaults to requests of 50m CPU
    /// and 64Mi memory and limits of 500m CPU and 128Mi memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// `copy` (default) or `imageVolume`.
    #[serde(default)]
    pub delivery: Delivery,
}

impl AgentSpec {
    /// The image to deliver.
    pub fn image(&self, language: Language) -> &str {
        self.image
            .as_deref()
            .filter(|i| !i.is_empty())
            .unwrap_or(language.default_image())
    }

    /// Where the agent's files are in the application containers.
    pub fn agent_root(&self, language: Language) -> String {
        match self.delivery {
            Delivery::Copy => language.mount_path(),
            // The whole image is mounted: the agent is in its own directory.
            Delivery::ImageVolume => format!("{}{IMAGE_AGENT_DIR}", language.mount_path()),
        }
    }
}

/// What kotel adds to a pod for one agent, besides each container's env.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    /// The volume with the agent.
    pub volume: Volume,
    /// The init container that copies it (copy delivery only).
    pub init_container: Option<Container>,
    /// The mount each selected container gets.
    pub mount: VolumeMount,
}

/// The volume, init container and mount that deliver `language`'s agent.
pub fn deliver(language: Language, spec: &AgentSpec) -> Delivered {
    let name = language.object_name();
    let image = spec.image(language).to_string();
    let mount_path = language.mount_path();
    match spec.delivery {
        Delivery::Copy => Delivered {
            volume: Volume {
                name: name.clone(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity("512Mi".into())),
                    ..Default::default()
                }),
                ..Default::default()
            },
            init_container: Some(Container {
                name: name.clone(),
                image: Some(image),
                command: Some(vec![
                    "cp".into(),
                    "-r".into(),
                    format!("{IMAGE_AGENT_DIR}/."),
                    mount_path.clone(),
                ]),
                resources: Some(
                    spec.resources
                        .clone()
                        .unwrap_or_else(|| resources(("50m", "64Mi"), ("500m", "128Mi"))),
                ),
                security_context: Some(hardened_security_context()),
                volume_mounts: Some(vec![VolumeMount {
                    name: name.clone(),
                    mount_path: mount_path.clone(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            mount: VolumeMount {
                name,
                mount_path,
                ..Default::default()
            },
        },
        Delivery::ImageVolume => Delivered {
            volume: Volume {
                name: name.clone(),
                image: Some(ImageVolumeSource {
                    reference: Some(image),
                    pull_policy: Some("IfNotPresent".into()),
                }),
                ..Default::default()
            },
            init_container: None,
            mount: VolumeMount {
                name,
                mount_path,
                read_only: Some(true),
                ..Default::default()
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_language_loads_its_agent_from_the_mount() {
        let spec = AgentSpec::default();
        let rows: Vec<(&str, String)> = Language::ALL
            .iter()
            .map(|l| (l.activation_var(), l.activation_value(&spec.agent_root(*l))))
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "PYTHONPATH",
                    "/otel-auto-instrumentation-python/opentelemetry/instrumentation/auto_instrumentation:/otel-auto-instrumentation-python".to_string()
                ),
                (
                    "JAVA_TOOL_OPTIONS",
                    "-javaagent:/otel-auto-instrumentation-java/javaagent.jar".to_string()
                ),
                (
                    "NODE_OPTIONS",
                    "--require /otel-auto-instrumentation-nodejs/autoinstrumentation.js"
                        .to_string()
                ),
            ]
        );
    }

    #[test]
    fn copy_delivery_is_a_hardened_init_container_into_an_empty_dir() {
        let d = deliver(Language::Python, &AgentSpec::default());
        assert!(d.volume.empty_dir.is_some());
        let init = d.init_container.unwrap();
        assert_eq!(init.name, "kotel-agent-python");
        assert_eq!(
            init.image.as_deref(),
            Some(Language::Python.default_image())
        );
        assert_eq!(
            init.command.unwrap(),
            [
                "cp",
                "-r",
                "/autoinstrumentation/.",
                "/otel-auto-instrumentation-python"
            ]
        );
        let sc = init.security_context.unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert!(
            init.resources
                .unwrap()
                .limits
                .unwrap()
                .contains_key("memory")
        );
        assert_eq!(d.mount.mount_path, "/otel-auto-instrumentation-python");
        assert_eq!(d.mount.read_only, None);
    }

    #[test]
    fn image_volume_delivery_mounts_the_image_read_only_without_a_copy() {
        let spec = AgentSpec {
            image: Some("example.com/agents/java:2".into()),
            delivery: Delivery::ImageVolume,
            ..Default::default()
        };
        let d = deliver(Language::Java, &spec);
        assert!(d.init_container.is_none());
        assert_eq!(
            d.volume.image.unwrap().reference.as_deref(),
            Some("example.com/agents/java:2")
        );
        assert_eq!(d.mount.read_only, Some(true));
        assert_eq!(
            Language::Java.activation_value(&spec.agent_root(Language::Java)),
            "-javaagent:/otel-auto-instrumentation-java/autoinstrumentation/javaagent.jar"
        );
    }
}

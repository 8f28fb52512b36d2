//! The `kotel-collector` native sidecar container rendered from a sidecar-mode Collector.

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, ResourceRequirements, SeccompProfile,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::collector::{CollectorPort, CollectorSpec, ValidConfig};

/// The name of the container kotel adds.
pub const CONTAINER_NAME: &str = "kotel-collector";
/// The env var that carries the collector configuration inline.
pub const CONFIG_ENV: &str = "KOTEL_COLLECTOR_CONFIG";

/// The hardened default: non-root, read-only root filesystem, no capabilities, RuntimeDefault seccomp.
pub fn hardened_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(10001),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_string()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

/// Requests and limits of CPU and memory, for the short-lived containers kotel adds (an agent's
/// copy, a configuration's validation).
pub fn resources(requests: (&str, &str), limits: (&str, &str)) -> ResourceRequirements {
    let q = |(cpu, mem): (&str, &str)| {
        [
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(mem.into())),
        ]
        .into()
    };
    ResourceRequirements {
        requests: Some(q(requests)),
        limits: Some(q(limits)),
        ..Default::default()
    }
}

/// The collector container's ports, shared by the sidecar and the gateway workloads.
pub fn container_ports(ports: &[CollectorPort]) -> Option<Vec<ContainerPort>> {
    (!ports.is_empty()).then(|| {
        ports
            .iter()
            .map(|p| ContainerPort {
                name: Some(p.name.clone()),
                container_port: p.port,
                protocol: Some(p.protocol.clone()),
                ..Default::default()
            })
            .collect()
    })
}

/// The Collector's own security context, else the hardened default.
pub fn security_context(spec: &CollectorSpec) -> SecurityContext {
    spec.security_context
        .clone()
        .unwrap_or_else(hardened_security_context)
}

/// The sidecar container: an `initContainers` entry with `restartPolicy: Always` (a native
/// sidecar), so it starts before the application, stops after it, and never keeps a Job alive.
pub fn container(spec: &CollectorSpec, config: &ValidConfig, ports: &[CollectorPort]) -> Container {
    let mut env = vec![EnvVar {
        name: CONFIG_ENV.to_string(),
        value: Some(config.to_yaml()),
        value_from: None,
    }];
    env.extend(spec.env.iter().filter(|e| e.name != CONFIG_ENV).cloned());
    Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(spec.image().to_string()),
        args: Some(vec![format!("--config=env:{CONFIG_ENV}")]),
        env: Some(env),
        ports: container_ports(ports),
        resources: spec.resources.clone(),
        security_context: Some(security_context(spec)),
        restart_policy: Some("Always".to_string()),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::spec_for_tests as spec;
    use crate::collector::{derive_ports, validate_config};
    use serde_json::json;

    fn render(s: &CollectorSpec) -> Container {
        let c = validate_config(&s.config).unwrap();
        container(s, &c, &derive_ports(&c))
    }

    #[test]
    fn native_sidecar_hardened_with_inline_config() {
        let s = spec(json!({}));
        let c = render(&s);
        assert_eq!(c.name, CONTAINER_NAME);
        assert_eq!(c.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            c.args.unwrap(),
            vec!["--config=env:KOTEL_COLLECTOR_CONFIG".to_string()]
        );
        let sc = c.security_context.unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.capabilities.unwrap().drop.unwrap(), vec!["ALL"]);
        assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let env = c.env.unwrap();
        assert_eq!(env[0].name, CONFIG_ENV);
        let parsed: serde_json::Value =
            serde_norway::from_str(env[0].value.as_deref().unwrap()).unwrap();
        assert_eq!(parsed, s.config);
        let ports: Vec<i32> = c.ports.unwrap().iter().map(|p| p.container_port).collect();
        assert_eq!(ports, vec![4317, 4318]);
        assert_eq!(c.image.as_deref(), Some(crate::collector::DEFAULT_IMAGE));
    }

    #[test]
    fn collector_settings_are_carried() {
        let s = spec(json!({
            "image": "example/otelcol:1",
            "env": [{"name": "GOMEMLIMIT", "value": "100MiB"}, {"name": CONFIG_ENV, "value": "sneaky"}],
            "resources": {"limits": {"memory": "128Mi"}, "requests": {"cpu": "50m"}},
            "securityContext": {"runAsUser": 1234, "runAsNonRoot": true}
        }));
        let c = render(&s);
        assert_eq!(c.image.as_deref(), Some("example/otelcol:1"));
        let env = c.env.unwrap();
        assert_eq!(
            env.len(),
            2,
            "the collector's own config env cannot be overridden"
        );
        assert_eq!(env[1].name, "GOMEMLIMIT");
        assert!(c.resources.unwrap().limits.unwrap().contains_key("memory"));
        assert_eq!(c.security_context.unwrap().run_as_user, Some(1234));
    }
}

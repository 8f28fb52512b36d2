//! Why pods that kotel injected cannot start, told from their container statuses. kotel reads no
//! Secrets, so a header Secret that is missing shows only when the kubelet refuses to create
//! the container (`CreateContainerConfigError`); this names the header, the Secret and the fix.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::instrumentation::HeaderValue;

/// An exporter header whose value a pod reads from a Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRef {
    /// The header's name in `spec.exporter.headers`.
    pub header: String,
    /// The Secret's name.
    pub secret: String,
    /// Its key.
    pub key: String,
}

/// The exporter headers whose values pods read from a Secret.
pub fn header_refs(headers: &BTreeMap<String, HeaderValue>) -> Vec<HeaderRef> {
    headers
        .iter()
        .filter_map(|(header, v)| {
            let s = v.secret_key_ref.as_ref()?;
            Some(HeaderRef {
                header: header.clone(),
                secret: s.name.clone(),
                key: s.key.clone(),
            })
        })
        .collect()
}

/// What to tell the user when a pod cannot start because a Secret of `refs` (or its key) is
/// missing: the kubelet's words, where the reference comes from, and the fix.
pub fn missing_secret(
    refs: &[HeaderRef],
    pods: &[Pod],
    namespace: &str,
    instrumentation: &str,
) -> Option<String> {
    let waiting = pods
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref())
        .filter(|w| w.reason.as_deref() == Some("CreateContainerConfigError"))
        .filter_map(|w| w.message.as_deref());
    for message in waiting {
        for r in refs {
            let no_secret = message.to_lowercase().contains("secret")
                && message.contains(&format!("\"{}\"", r.secret))
                && message.contains("not found");
            let no_key =
                message.contains(&format!("key {} in Secret {namespace}/{}", r.key, r.secret));
            if no_secret || no_key {
                return Some(format!(
                    "pods cannot start: {message}. The Secret is referenced by the OTLP header `{}` (spec.exporter.headers of Instrumentation {instrumentation}); kotel reads no Secrets: create Secret {} with key `{}` in namespace {namespace}, or change the header",
                    r.header, r.secret, r.key
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers() -> BTreeMap<String, HeaderValue> {
        serde_json::from_value(json!({
            "authorization": {"secretKeyRef": {"name": "otlp-auth", "key": "token"}},
            "x-team": {"value": "shop"}
        }))
        .unwrap()
    }

    fn pod(reason: &str, message: &str) -> Pod {
        serde_json::from_value(
            json!({"status": {"containerStatuses": [{"name": "app", "image": "x",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": reason, "message": message}}}]}}),
        )
        .unwrap()
    }

    #[test]
    fn header_refs_name_the_header_the_secret_and_the_key() {
        assert_eq!(
            header_refs(&headers()),
            vec![HeaderRef {
                header: "authorization".into(),
                secret: "otlp-auth".into(),
                key: "token".into()
            }]
        );
        assert!(header_refs(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_missing_secret_or_key_is_named_with_its_header_and_the_fix() {
        let refs = header_refs(&headers());
        let m = missing_secret(
            &refs,
            &[pod(
                "CreateContainerConfigError",
                "secret \"otlp-auth\" not found",
            )],
            "shop",
            "shop/otel",
        )
        .unwrap();
        assert!(
            m.contains("`authorization`") && m.contains("Instrumentation shop/otel"),
            "{m}"
        );
        assert!(
            m.contains("create Secret otlp-auth with key `token` in namespace shop"),
            "{m}"
        );
        let m = missing_secret(
            &refs,
            &[pod(
                "CreateContainerConfigError",
                "couldn't find key token in Secret shop/otlp-auth",
            )],
            "shop",
            "shop/otel",
        );
        assert!(m.is_some());
    }

    #[test]
    fn other_failures_are_not_blamed_on_the_secret() {
        let refs = header_refs(&headers());
        for (reason, message) in [
            ("CreateContainerConfigError", "secret \"other\" not found"),
            ("ImagePullBackOff", "secret \"otlp-auth\" not found"),
            (
                "CreateContainerConfigError",
                "configmap \"otlp-auth\" has no key",
            ),
        ] {
            assert_eq!(
                missing_secret(&refs, &[pod(reason, message)], "shop", "shop/otel"),
                None,
                "{reason}: {message}"
            );
        }
        assert_eq!(
            missing_secret(
                &[],
                &[pod(
                    "CreateContainerConfigError",
                    "secret \"otlp-auth\" not found"
                )],
                "shop",
                "x"
            ),
            None
        );
    }
}

//! The `kotel.dev/*` annotations and how they resolve: the workload's own metadata first, then
//! its pod template, then (for `inject`, its language forms and `sidecar` only) its Namespace.

use std::collections::BTreeMap;

use crate::agent::Language;

/// Opt in to SDK env injection: `true`, `false`, `NAME` or `NAMESPACE/NAME`.
pub const INJECT: &str = "kotel.dev/inject";
/// Opt in to a sidecar collector: `true`, `false` or `NAME`.
pub const SIDECAR: &str = "kotel.dev/sidecar";
/// Comma-separated container names that get the env (default: all).
pub const CONTAINER_NAMES: &str = "kotel.dev/container-names";
/// Overrides OTEL_SERVICE_NAME.
pub const SERVICE_NAME: &str = "kotel.dev/service-name";
/// Written by kotel on the pod template: a short hash of everything it injected.
pub const CONFIG_HASH: &str = "kotel.dev/config-hash";

/// The `kotel.dev/config-hash` on a pod template, if kotel has written one.
pub fn template_hash(t: &k8s_openapi::api::core::v1::PodTemplateSpec) -> Option<&str> {
    t.metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(CONFIG_HASH)
        .map(String::as_str)
}

/// Which Instrumentation a workload asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InjectRef {
    /// No injection (no annotation, or `false`).
    Off,
    /// `true`: the only Instrumentation in the workload's namespace.
    Only,
    /// A named Instrumentation.
    Named {
        /// Its namespace (the workload's own unless `NAMESPACE/NAME` was given).
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// Which Collector a workload asks for as its sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SidecarRef {
    /// No sidecar.
    Off,
    /// `true`: the only sidecar-mode Collector in the workload's namespace.
    Only,
    /// A named Collector in the workload's namespace.
    Named(String),
}

/// The annotations of one Deployment, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The Instrumentation asked for.
    pub inject: InjectRef,
    /// The sidecar Collector asked for.
    pub sidecar: SidecarRef,
    /// Containers to inject, when restricted.
    pub container_names: Option<Vec<String>>,
    /// The service name override.
    pub service_name: Option<String>,
    /// The language agent asked for by `kotel.dev/inject-<language>`.
    pub agent: Option<Language>,
}

impl Resolved {
    /// Whether the workload asks kotel for anything at all.
    pub fn wants_anything(&self) -> bool {
        self.inject != InjectRef::Off || self.sidecar != SidecarRef::Off
    }
}

/// A malformed annotation value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("annotation {key}={value:?} is invalid: {fix}")]
pub struct AnnotationError {
    /// The annotation.
    pub key: &'static str,
    /// Its value.
    pub value: String,
    /// What would be accepted.
    pub fix: &'static str,
}

/// The annotation maps a value is looked up in, most specific first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sources<'a> {
    /// The workload's own annotations.
    pub workload: Option<&'a BTreeMap<String, String>>,
    /// The pod template's annotations.
    pub template: Option<&'a BTreeMap<String, String>>,
    /// The Namespace's annotations.
    pub namespace: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Sources<'a> {
    /// The most specific value of `key`; the Namespace only counts when `namespace_too`.
    pub fn lookup(&self, key: &str, namespace_too: bool) -> Option<&'a str> {
        let levels = [
            self.workload,
            self.template,
            if namespace_too { self.namespace } else { None },
        ];
        levels
            .into_iter()
            .flatten()
            .find_map(|m| m.get(key))
            .map(|v| v.trim())
    }
}

/// Whether `s` is a valid Kubernetes object name (RFC 1123 subdomain).
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn boolean(v: &str) -> Option<bool> {
    if v.eq_ignore_ascii_case("true") {
        Some(true)
    } else if v.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Parses a `kotel.dev/inject` value.
pub fn parse_inject(value: &str, own_namespace: &str) -> Result<InjectRef, AnnotationError> {
    parse_inject_of(INJECT, value, own_namespace)
}

/// Parses the value of `key`, `kotel.dev/inject` or one of its language forms.
fn parse_inject_of(
    key: &'static str,
    value: &str,
    own_namespace: &str,
) -> Result<InjectRef, AnnotationError> {
    let err = || AnnotationError {
        key,
        value: value.to_string(),
        fix: "use true, false, NAME or NAMESPACE/NAME of an Instrumentation",
    };
    match boolean(value) {
        Some(true) => return Ok(InjectRef::Only),
        Some(false) => return Ok(InjectRef::Off),
        None => {}
    }
    let (namespace, name) = match value.split_once('/') {
        Some((ns, n)) => (ns, n),
        None => (own_namespace, value),
    };
    if !is_valid_name(namespace) || !is_valid_name(name) {
        return Err(err());
    }
    Ok(InjectRef::Named {
        namespace: namespace.to_string(),
        name: name.to_string(),
    })
}

/// Parses a `kotel.dev/sidecar` value.
pub fn parse_sidecar(value: &str) -> Result<SidecarRef, AnnotationError> {
    match boolean(value) {
        Some(true) => Ok(SidecarRef::Only),
        Some(false) => Ok(SidecarRef::Off),
        None if is_valid_name(value) => Ok(SidecarRef::Named(value.to_string())),
        None => Err(AnnotationError {
            key: SIDECAR,
            value: value.to_string(),
            fix: "use true, false or the NAME of a sidecar-mode Collector in this namespace",
        }),
    }
}

/// Resolves every kotel annotation of a workload.
pub fn resolve(sources: &Sources<'_>, own_namespace: &str) -> Result<Resolved, AnnotationError> {
    let mut inject = match sources.lookup(INJECT, true) {
        Some(v) => parse_inject(v, own_namespace)?,
        None => InjectRef::Off,
    };
    // `kotel.dev/inject-<language>` takes the same values and means `kotel.dev/inject` plus
    // that language's agent.
    let mut agent = None;
    for language in Language::ALL {
        let key = language.annotation();
        let Some(v) = sources.lookup(key, true) else {
            continue;
        };
        let r = parse_inject_of(key, v, own_namespace)?;
        if r == InjectRef::Off {
            continue;
        }
        if agent.replace(language).is_some() {
            return Err(AnnotationError {
                key,
                value: v.to_string(),
                fix: "one agent language per workload: keep one kotel.dev/inject-<language> annotation and set the others to false",
            });
        }
        if inject != InjectRef::Off && inject != r {
            return Err(AnnotationError {
                key,
                value: v.to_string(),
                fix: "it names another Instrumentation than kotel.dev/inject: remove kotel.dev/inject or make both name the same one",
            });
        }
        inject = r;
    }
    let sidecar = match sources.lookup(SIDECAR, true) {
        Some(v) => parse_sidecar(v)?,
        None => SidecarRef::Off,
    };
    let container_names = match sources.lookup(CONTAINER_NAMES, false) {
        Some(v) => {
            let names: Vec<String> = v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if names.is_empty() {
                return Err(AnnotationError {
                    key: CONTAINER_NAMES,
                    value: v.to_string(),
                    fix: "list container names separated by commas, e.g. app,worker",
                });
            }
            Some(names)
        }
        None => None,
    };
    let service_name = sources
        .lookup(SERVICE_NAME, false)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok(Resolved {
        inject,
        sidecar,
        container_names,
        service_name,
        agent,
    })
}

/// Why a reference could not be turned into one object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// `true` but there is none.
    #[error(
        "{annotation}=true but there is no {kind} in namespace {namespace}; create one or name it in the annotation"
    )]
    NoneFound {
        /// The annotation.
        annotation: &'static str,
        /// Instrumentation or Collector.
        kind: &'static str,
        /// Where we looked.
        namespace: String,
    },
    /// `true` but there are several.
    #[error(
        "{annotation}=true is ambiguous: namespace {namespace} has {count} {kind}s ({names}); name one in the annotation"
    )]
    Ambiguous {
        /// The annotation.
        annotation: &'static str,
        /// Instrumentation or Collector.
        kind: &'static str,
        /// Where we looked.
        namespace: String,
        /// How many.
        count: usize,
        /// Their names.
        names: String,
    },
    /// A named object does not exist.
    #[error("{annotation} names {kind} {namespace}/{name}, which does not exist")]
    NotFound {
        /// The annotation.
        annotation: &'static str,
        /// Instrumentation or Collector.
        kind: &'static str,
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
}

/// Picks the `(namespace, name)` an `InjectRef` denotes among the existing Instrumentations.
pub fn pick_instrumentation(
    r: &InjectRef,
    own_namespace: &str,
    existing: &[(String, String)],
) -> Result<Option<(String, String)>, PickError> {
    match r {
        InjectRef::Off => Ok(None),
        InjectRef::Named { namespace, name } => existing
            .iter()
            .find(|(ns, n)| ns == namespace && n == name)
            .cloned()
            .map(Some)
            .ok_or_else(|| PickError::NotFound {
                annotation: INJECT,
                kind: "Instrumentation",
                namespace: namespace.clone(),
                name: name.clone(),
            }),
        InjectRef::Only => only_one(INJECT, "Instrumentation", own_namespace, existing).map(Some),
    }
}

/// Picks the Collector name a `SidecarRef` denotes among the sidecar-mode Collectors of the
/// workload's namespace.
pub fn pick_sidecar(
    r: &SidecarRef,
    own_namespace: &str,
    sidecar_collectors: &[(String, String)],
) -> Result<Option<(String, String)>, PickError> {
    match r {
        SidecarRef::Off => Ok(None),
        SidecarRef::Named(name) => sidecar_collectors
            .iter()
            .find(|(ns, n)| ns == own_namespace && n == name)
            .cloned()
            .map(Some)
            .ok_or_else(|| PickError::NotFound {
                annotation: SIDECAR,
                kind: "sidecar-mode Collector",
                namespace: own_namespace.to_string(),
                name: name.clone(),
            }),
        SidecarRef::Only => only_one(
            SIDECAR,
            "sidecar-mode Collector",
            own_namespace,
            sidecar_collectors,
        )
        .map(Some),
    }
}

fn only_one(
    annotation: &'static str,
    kind: &'static str,
    namespace: &str,
    existing: &[(String, String)],
) -> Result<(String, String), PickError> {
    let here: Vec<&(String, String)> = existing.iter().filter(|(ns, _)| ns == namespace).collect();
    match here.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(PickError::NoneFound {
            annotation,
            kind,
            namespace: namespace.to_string(),
        }),
        many => {
            let mut names: Vec<&str> = many.iter().map(|(_, n)| n.as_str()).collect();
            names.sort_unstable();
            Err(PickError::Ambiguous {
                annotation,
                kind,
                namespace: namespace.to_string(),
                count: many.len(),
                names: names.join(", "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nothing_means_off() {
        let r = resolve(&Sources::default(), "ns").unwrap();
        assert_eq!(r.inject, InjectRef::Off);
        assert_eq!(r.sidecar, SidecarRef::Off);
        assert!(!r.wants_anything());
    }

    #[test]
    fn a_language_annotation_injects_its_instrumentation_plus_the_agent() {
        let only = |pairs: &[(&str, &str)], ns: &[(&str, &str)]| {
            let (w, n) = (map(pairs), map(ns));
            resolve(
                &Sources {
                    workload: Some(&w),
                    template: None,
                    namespace: Some(&n),
                },
                "app",
            )
        };
        let r = only(&[("kotel.dev/inject-python", "true")], &[]).unwrap();
        assert_eq!(
            (r.inject, r.agent),
            (InjectRef::Only, Some(Language::Python))
        );
        let r = only(&[("kotel.dev/inject-java", "obs/otel")], &[]).unwrap();
        assert_eq!(
            (r.inject, r.agent),
            (
                InjectRef::Named {
                    namespace: "obs".into(),
                    name: "otel".into()
                },
                Some(Language::Java)
            )
        );
        let r = only(&[], &[("kotel.dev/inject-nodejs", "true")]).unwrap();
        assert_eq!(r.agent, Some(Language::Nodejs), "a namespace default too");
        let r = only(
            &[("kotel.dev/inject-nodejs", "false")],
            &[("kotel.dev/inject-nodejs", "true")],
        )
        .unwrap();
        assert_eq!((r.inject, r.agent), (InjectRef::Off, None), "opted out");
        let r = only(
            &[(INJECT, "otel"), ("kotel.dev/inject-python", "otel")],
            &[],
        )
        .unwrap();
        assert_eq!(r.agent, Some(Language::Python));

        let two = only(
            &[
                ("kotel.dev/inject-python", "true"),
                ("kotel.dev/inject-java", "true"),
            ],
            &[],
        )
        .unwrap_err();
        assert!(two.fix.contains("one agent language"), "{two}");
        let conflict = only(&[(INJECT, "a"), ("kotel.dev/inject-python", "b")], &[]).unwrap_err();
        assert_eq!(conflict.key, "kotel.dev/inject-python");
        assert!(
            conflict.fix.contains("another Instrumentation"),
            "{conflict}"
        );
        let bad = only(&[("kotel.dev/inject-python", "yes please")], &[]).unwrap_err();
        assert_eq!(bad.key, "kotel.dev/inject-python");
    }

    #[test]
    fn workload_beats_template_beats_namespace() {
        let d = map(&[(INJECT, "from-deploy")]);
        let t = map(&[(INJECT, "from-template"), (SIDECAR, "tpl")]);
        let n = map(&[(INJECT, "from-ns"), (SIDECAR, "true")]);
        let s = Sources {
            workload: Some(&d),
            template: Some(&t),
            namespace: Some(&n),
        };
        let r = resolve(&s, "app").unwrap();
        assert_eq!(
            r.inject,
            InjectRef::Named {
                namespace: "app".into(),
                name: "from-deploy".into()
            }
        );
        assert_eq!(r.sidecar, SidecarRef::Named("tpl".into()));
        let s = Sources {
            workload: None,
            template: None,
            namespace: Some(&n),
        };
        assert_eq!(
            resolve(&s, "app").unwrap().inject,
            InjectRef::Named {
                namespace: "app".into(),
                name: "from-ns".into()
            }
        );
    }

    #[test]
    fn explicit_false_opts_out_of_namespace_default() {
        let d = map(&[(INJECT, "false"), (SIDECAR, "FALSE")]);
        let n = map(&[(INJECT, "true"), (SIDECAR, "true")]);
        let s = Sources {
            workload: Some(&d),
            template: None,
            namespace: Some(&n),
        };
        let r = resolve(&s, "x").unwrap();
        assert_eq!(r.inject, InjectRef::Off);
        assert_eq!(r.sidecar, SidecarRef::Off);
    }

    #[test]
    fn service_name_and_container_names_ignore_the_namespace() {
        let n = map(&[(SERVICE_NAME, "ns-wide"), (CONTAINER_NAMES, "a")]);
        let t = map(&[(CONTAINER_NAMES, " a, b ,,")]);
        let s = Sources {
            workload: None,
            template: Some(&t),
            namespace: Some(&n),
        };
        let r = resolve(&s, "x").unwrap();
        assert_eq!(r.service_name, None);
        assert_eq!(r.container_names, Some(vec!["a".into(), "b".into()]));
    }

    #[test]
    fn inject_values() {
        assert_eq!(parse_inject("true", "a").unwrap(), InjectRef::Only);
        assert_eq!(parse_inject("True", "a").unwrap(), InjectRef::Only);
        assert_eq!(parse_inject("false", "a").unwrap(), InjectRef::Off);
        assert_eq!(
            parse_inject("obs/otel", "a").unwrap(),
            InjectRef::Named {
                namespace: "obs".into(),
                name: "otel".into()
            }
        );
        for bad in ["", "Yes Please", "a/b/c", "/x", "x/", "UPPER"] {
            let e = parse_inject(bad, "a").unwrap_err();
            assert_eq!(e.key, INJECT);
            assert!(e.to_string().contains("NAMESPACE/NAME"), "{e}");
        }
    }

    #[test]
    fn sidecar_values() {
        assert_eq!(parse_sidecar("true").unwrap(), SidecarRef::Only);
        assert_eq!(parse_sidecar("false").unwrap(), SidecarRef::Off);
        assert_eq!(
            parse_sidecar("col").unwrap(),
            SidecarRef::Named("col".into())
        );
        assert!(parse_sidecar("other/col").is_err());
    }

    #[test]
    fn empty_container_list_is_an_error() {
        let t = map(&[(CONTAINER_NAMES, " , ")]);
        let s = Sources {
            workload: None,
            template: Some(&t),
            namespace: None,
        };
        assert_eq!(resolve(&s, "x").unwrap_err().key, CONTAINER_NAMES);
    }

    fn existing() -> Vec<(String, String)> {
        vec![
            ("a".into(), "one".into()),
            ("b".into(), "x".into()),
            ("b".into(), "y".into()),
        ]
    }

    #[test]
    fn picking() {
        let e = existing();
        assert_eq!(
            pick_instrumentation(&InjectRef::Only, "a", &e).unwrap(),
            Some(("a".into(), "one".into()))
        );
        let amb = pick_instrumentation(&InjectRef::Only, "b", &e).unwrap_err();
        assert!(matches!(amb, PickError::Ambiguous { count: 2, .. }));
        assert!(amb.to_string().contains("x, y"));
        assert!(matches!(
            pick_instrumentation(&InjectRef::Only, "c", &e).unwrap_err(),
            PickError::NoneFound { .. }
        ));
        let cross = InjectRef::Named {
            namespace: "b".into(),
            name: "y".into(),
        };
        assert_eq!(
            pick_instrumentation(&cross, "a", &e).unwrap(),
            Some(("b".into(), "y".into()))
        );
        let missing = InjectRef::Named {
            namespace: "a".into(),
            name: "zzz".into(),
        };
        assert!(matches!(
            pick_instrumentation(&missing, "a", &e).unwrap_err(),
            PickError::NotFound { .. }
        ));
        assert_eq!(
            pick_instrumentation(&InjectRef::Off, "a", &e).unwrap(),
            None
        );
        assert_eq!(
            pick_sidecar(&SidecarRef::Named("x".into()), "b", &e).unwrap(),
            Some(("b".into(), "x".into()))
        );
        assert!(pick_sidecar(&SidecarRef::Named("x".into()), "a", &e).is_err());
        assert!(pick_sidecar(&SidecarRef::Only, "b", &e).is_err());
    }

    proptest! {
        #[test]
        fn most_specific_level_always_wins(
            d in proptest::option::of("[a-z]{1,8}"),
            t in proptest::option::of("[a-z]{1,8}"),
            n in proptest::option::of("[a-z]{1,8}"),
        ) {
            let dm = d.as_ref().map(|v| map(&[(INJECT, v)]));
            let tm = t.as_ref().map(|v| map(&[(INJECT, v)]));
            let nm = n.as_ref().map(|v| map(&[(INJECT, v)]));
            let s = Sources { workload: dm.as_ref(), template: tm.as_ref(), namespace: nm.as_ref() };
            let expected = d.or(t).or(n);
            prop_assert_eq!(s.lookup(INJECT, true).map(str::to_string), expected);
        }

        #[test]
        fn names_are_parsed_or_rejected_never_panic(v in ".{0,40}") {
            let _ = parse_inject(&v, "ns");
            let _ = parse_sidecar(&v);
        }
    }
}

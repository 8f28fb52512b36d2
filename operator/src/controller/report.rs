//! Stage 4, report: Events (a standing problem once, every change kotel makes with its own
//! message) and status, applied by kotel's field manager.

use super::*;

/// Whether an Event reports normal operation or a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Normal operation.
    Normal,
    /// Something the user should fix.
    Warning,
}

impl Context {
    pub(super) async fn event(
        &self,
        w: &dyn Templated,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        self.publish(w.object_reference(), type_, reason, "Reconcile", note)
            .await;
    }

    /// Creates one `events.k8s.io/v1` Event, its own for every call, so that every change
    /// kotel makes is visible with its own message. Not kube's `Recorder`: it folds Events of
    /// one reason on one object into a series that keeps the first message, and it caches each
    /// Event for six minutes (5,000 at scale).
    pub(super) async fn publish(
        &self,
        regarding: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let ns = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let now = k8s_openapi::jiff::Timestamp::now();
        let ev = KubeEvent {
            metadata: ObjectMeta {
                // `<object>.<nanoseconds>` as client-go names Events; unique per publish.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.clone().unwrap_or_default(),
                    now.as_nanosecond()
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(match type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            reason: Some(reason.to_string()),
            action: Some(action.to_string()),
            note: Some(note.chars().take(1000).collect()),
            regarding: Some(regarding),
            reporting_controller: Some("kotel.dev/operator".into()),
            reporting_instance: Some(self.instance.chars().take(128).collect()),
            ..Default::default()
        };
        let api: Api<KubeEvent> = Api::namespaced(self.client.clone(), &ns);
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => self.metrics.write("event"),
            Err(e) => warn!(error = %e, "could not publish an Event"),
        }
    }

    /// Reports standing problems once (not on every reconcile): only when the set of
    /// problems of this workload differs from the last one reported.
    pub(super) async fn report(&self, w: &dyn Templated, problems: &[Problem]) {
        let key = key(w);
        let text: String = problems
            .iter()
            .map(|p| format!("{}: {}\n", p.reason, p.message))
            .collect();
        let new = {
            let mut reported = self.reported.lock().expect("lock");
            // Problems of workloads that are gone go with them.
            reported.retain(|k, _| self.stores.workloads.get(k).is_some());
            reported.insert(key, text.clone()) != Some(text)
        };
        for p in problems {
            self.metrics.error(p.reason);
            if new {
                warn!(
                    kind = w.kind().as_str(),
                    name = w.name(),
                    reason = p.reason,
                    "{}",
                    p.message
                );
                self.event(w, EventType::Warning, p.reason, p.message.clone())
                    .await;
            }
        }
    }

    pub(super) fn clear_report(&self, w: &dyn Templated) {
        self.reported.lock().expect("lock").remove(&key(w));
    }

    /// Records where the rollout of an injected workload stands; a change wakes the status
    /// controllers, which report it.
    pub(super) fn observe_rollout(&self, w: &dyn Templated) {
        let state = injected_rollout(w);
        let changed = {
            let mut r = self.rollouts.lock().expect("lock");
            match state {
                Some(s) => r.insert(key(w), s) != Some(s),
                None => r.remove(&key(w)).is_some(),
            }
        };
        if changed {
            let _ = self.status_trigger.unbounded_send(());
        }
    }

    /// Sets the `kotel_rollouts` gauge from the recorded states, forgetting workloads that
    /// are gone.
    pub(super) fn publish_rollouts(&self) {
        let mut r = self.rollouts.lock().expect("lock");
        r.retain(|k, _| self.stores.workloads.get(k).is_some());
        self.metrics.set_rollouts(r.values().copied());
    }
}

pub(super) fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The Events of a change kotel applied: what it injected or removed, the user's variables it
/// left alone, and container names that match nothing.
pub(super) async fn report_applied(ctx: &Context, d: &dyn Templated, plan: &Plan, inputs: &Inputs) {
    match (&plan.intent.hash, &inputs.instrumentation) {
        (None, _) => {
            info!("removed kotel's injection");
            ctx.event(
                d,
                EventType::Normal,
                "Removed",
                "removed everything kotel had injected".into(),
            )
            .await;
        }
        (Some(hash), inst) => {
            let containers: Vec<&str> = plan
                .intent
                .containers
                .iter()
                .map(|(c, _)| c.as_str())
                .collect();
            let mut msg = match inst {
                Some((name, _)) => format!(
                    "injected Instrumentation {name} into containers [{}]",
                    containers.join(", ")
                ),
                None => "injected no SDK env".to_string(),
            };
            if let Some((c, _)) = &inputs.collector {
                msg.push_str(&format!(" with sidecar Collector {c}"));
            }
            msg.push_str(&format!(" (config-hash {hash})"));
            info!(hash = %hash, "{msg}");
            ctx.event(d, EventType::Normal, "Injected", msg).await;
        }
    }
    if !plan.kept_user_vars.is_empty() {
        let list: Vec<String> = plan
            .kept_user_vars
            .iter()
            .map(|(c, v)| format!("{c}/{v}"))
            .collect();
        ctx.event(
            d,
            EventType::Normal,
            "UserVariableKept",
            format!(
                "kept the workload's own value of {}; kotel did not set these",
                list.join(", ")
            ),
        )
        .await;
    }
    for (container, var) in &plan.agent_skipped {
        ctx.event(
            d,
            EventType::Warning,
            "AgentNotInjected",
            format!(
                "container {container} sets {var} itself, so kotel left it alone and added no agent to it; \
                 to load the agent, add kotel's value to yours: {var}={}",
                inputs
                    .resolved
                    .agent
                    .map(|l| {
                        let spec = inputs
                            .instrumentation
                            .as_ref()
                            .and_then(|(_, g)| g.0.as_ref().ok())
                            .map(|i| i.spec.agent(l))
                            .unwrap_or_default();
                        l.activation_value(&spec.agent_root(l))
                    })
                    .unwrap_or_default()
            ),
        )
        .await;
    }
}

/// Applies a status (kotel's whole status of the object) by kotel's field manager; every
/// status write goes through here.
pub(super) async fn apply_status<K>(
    ctx: &Context,
    ns: &str,
    name: &str,
    body: &serde_json::Value,
) -> Result<(), Error>
where
    K: Namespaced,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(body),
    )
    .await?;
    ctx.metrics.write("status");
    Ok(())
}

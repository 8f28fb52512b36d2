//! The Collector controller: validates the configuration, applies a gateway's objects where
//! they differ (a drifted one is repaired), and reports `ConfigValid` and `Ready`.

use super::*;

pub(super) async fn reconcile_collector(
    obj: Arc<DeserializeGuard<Collector>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let res = collector_status(&obj, &ctx).await;
    if res.is_ok() {
        ctx.backoff.reset(&backoff::key(obj.as_ref()));
    }
    res
}

pub(super) async fn collector_status(
    obj: &DeserializeGuard<Collector>,
    ctx: &Context,
) -> Result<Action, Error> {
    let Ok(col) = &obj.0 else {
        return Ok(Action::await_change());
    };
    ctx.stores.wait_until_ready().await;
    let ns = col.namespace().unwrap_or_default();
    let name = col.name_any();
    let previous = col.status.clone().unwrap_or_default();
    let generation = col.metadata.generation;
    let uid = col.metadata.uid.clone().unwrap_or_default();
    let owner = gateway::Owner {
        name: &name,
        namespace: &ns,
        uid: &uid,
    };
    let image = col.spec.image().to_string();
    // kotel's structural check, then the image's own `validate` (once per configuration and
    // image; nothing changes until it has answered, and the Job's watch wakes this reconcile).
    let structural = validate_config(&col.spec.config);
    let verdict = match &structural {
        Ok(cfg) => {
            match image_verdict(ctx, &owner, &image, cfg, previous.validation.as_ref()).await? {
                Some(v) => Some(v),
                None => return Ok(Action::requeue(Duration::from_secs(3))),
            }
        }
        Err(_) => None,
    };
    let validity: Result<&crate::collector::ValidConfig, String> = match (&structural, &verdict) {
        (Err(e), _) => Err(e.to_string()),
        (Ok(_), Some(v)) if v.result == "Invalid" => Err(v
            .message
            .clone()
            .unwrap_or_else(|| "refused by the collector image".into())),
        (Ok(cfg), _) => Ok(cfg),
    };
    let config_want = match (&validity, &verdict) {
        (Ok(_), Some(v)) if v.result == "Unavailable" => Want {
            type_: "ConfigValid",
            ok: true,
            reason: "Valid",
            message: format!(
                "the configuration parses and every pipeline names defined components; the image's own validate could not run ({}), so only that check applies",
                v.message.as_deref().unwrap_or_default()
            ),
        },
        (Ok(_), _) => Want {
            type_: "ConfigValid",
            ok: true,
            reason: "Valid",
            message: "the configuration parses, every pipeline names defined components, and the collector image's own validate accepts it".into(),
        },
        (Err(e), _) => Want {
            type_: "ConfigValid",
            ok: false,
            reason: "InvalidConfig",
            message: e.clone(),
        },
    };
    // Gateway modes: apply the objects when they differ, then read the pods' progress.
    let pods = match &validity {
        Ok(cfg) if col.spec.mode != Mode::Sidecar => {
            let objects = gateway::desired(&owner, &col.spec, cfg, &ports_for(&col.spec, cfg))
                .expect("gateway modes have objects");
            Some(apply_gateway(ctx, &ns, &gateway::object_name(&name), objects).await?)
        }
        Ok(_) if previous.replicas.is_some() => {
            // Switched to sidecar mode: the gateway goes.
            remove_gateway(ctx, &ns, &gateway::object_name(&name), None).await?;
            None
        }
        _ => None,
    };
    let ready_want = match (col.spec.mode, &validity, pods) {
        (_, Err(_), _) => Want {
            type_: "Ready",
            ok: false,
            reason: "InvalidConfig",
            message: "fix spec.config; running collectors keep their last good configuration"
                .into(),
        },
        (Mode::Sidecar, Ok(_), _) => Want {
            type_: "Ready",
            ok: true,
            reason: "SidecarReady",
            message: "injected into the workloads annotated kotel.dev/sidecar".into(),
        },
        (_, Ok(_), Some((want, ready))) if want > 0 && ready >= want => Want {
            type_: "Ready",
            ok: true,
            reason: "Available",
            message: format!("{ready} of {want} collector pod(s) ready"),
        },
        (_, Ok(_), pods) => {
            let (want, ready) = pods.unwrap_or_default();
            Want {
                type_: "Ready",
                ok: false,
                reason: "Progressing",
                message: format!(
                    "{ready} of {want} collector pod(s) ready in {}",
                    gateway::object_name(&name)
                ),
            }
        }
    };
    let mut by_kind = status::ByKind::default();
    if col.spec.mode == Mode::Sidecar {
        let existing = names_of(&ctx.stores.collectors, is_sidecar_collector);
        for w in ctx.stores.workloads.all() {
            if sidecar_from(w.as_ref(), &ctx.stores, &existing) == Some((ns.clone(), name.clone()))
            {
                by_kind.add(w.kind());
            }
        }
    }
    let workloads = by_kind.total();
    let conditions = vec![
        status::condition(&config_want, generation, &previous.conditions, now()),
        status::condition(&ready_want, generation, &previous.conditions, now()),
    ];
    let validation = verdict.or(previous.validation.clone());
    let (replicas, ready_replicas) = match pods {
        Some((w, r)) => (Some(w), Some(r)),
        // Invalid config in a gateway mode: the last good pods keep running and keep counting.
        None if validity.is_err() => (previous.replicas, previous.ready_replicas),
        None => (None, None),
    };
    if previous.observed_generation == generation
        && previous.replicas == replicas
        && previous.ready_replicas == ready_replicas
        && previous.workloads == workloads
        && previous.by_kind == Some(by_kind)
        && previous.image.as_deref() == Some(image.as_str())
        && previous.validation == validation
        && status::same_conditions(&previous.conditions, &conditions)
    {
        return Ok(Action::await_change());
    }
    let was_valid = previous
        .conditions
        .iter()
        .find(|c| c.type_ == "ConfigValid")
        .map(|c| c.status == "True");
    if let (Err(e), Some(true) | None) = (&validity, was_valid) {
        ctx.publish(
            col.object_ref(&()),
            EventType::Warning,
            "InvalidConfig",
            "Validate",
            e.clone(),
        )
        .await;
    }
    let body = json!({
        "apiVersion": "kotel.dev/v1alpha1",
        "kind": "Collector",
        "status": {"observedGeneration": generation, "conditions": conditions, "workloads": workloads, "byKind": by_kind, "image": image, "validation": validation,
                   "replicas": replicas, "readyReplicas": ready_replicas}
    });
    apply_status::<Collector>(ctx, &ns, &name, &body).await?;
    Ok(Action::await_change())
}

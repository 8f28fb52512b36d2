//! Faults and the tools users run beside kotel: an operator killed mid-rollout converges with
//! no extra ReplicaSet, and GitOps-style re-applies of the user's unchanged manifest (client-
//! and server-side `kubectl apply`, `helm upgrade`) leave kotel's fields in place and roll
//! nothing, while a `kubectl replace` that drops them gets them back with one write. Run with
//! --test-threads=1.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kotel_e2e::cluster::{self, Release, image_repository, image_tag, pause_image, require_node};
use kotel_e2e::*;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(90);

fn instrumentation() -> Value {
    json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Instrumentation", "metadata": {"name": "otel"},
           "spec": {"exporter": {"endpoint": "http://gw.obs:4318"}}})
}

async fn hash_of(client: &Client, ns: &str, name: &str) -> anyhow::Result<Option<String>> {
    Ok(template_hash(
        &Api::<Deployment>::namespaced(client.clone(), ns)
            .get(name)
            .await?,
    ))
}

#[tokio::test]
async fn an_operator_killed_mid_rollout_converges_without_an_extra_replicaset() -> anyhow::Result<()>
{
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "sigkill", json!({})).await?;
    ns.apply(instrumentation()).await?;
    let names: Vec<String> = (0..40).map(|i| format!("web-{i:02}")).collect();
    for n in &names {
        let mut d = deployment(n, json!({}), json!([]));
        d["spec"]["replicas"] = json!(0);
        ns.apply(d).await?;
    }
    let op = Operator::start().await?;
    // Annotate them all, and kill the operator with SIGKILL once it has written some of them.
    for n in &names {
        let mut d = deployment(n, json!({"kotel.dev/inject": "true"}), json!([]));
        d["spec"]["replicas"] = json!(0);
        ns.apply(d).await?;
    }
    wait_for("the first injections", T, || async {
        Ok(op.writes("deployment").await? >= 3.0)
    })
    .await?;
    op.signal("KILL")?;
    let before = op.writes("deployment").await.ok();
    drop(op);
    let op = Operator::start().await?;
    wait_for("every Deployment injected", T, || async {
        for n in &names {
            if hash_of(&client, &ns.name, n).await?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    // No Deployment rolled twice.
    wait_rolled_once(&client, &ns.name, &names, T).await?;
    assert!(before.is_none(), "the killed operator no longer answers");
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

/// The user's manifest at a revision of their repository, as a GitOps tool applies it: only
/// its revision annotation changes (an unchanged object would send no request at all, and
/// kotel would have nothing to see).
fn manifest(name: &str, revision: u32) -> Value {
    let mut d = deployment(
        name,
        json!({"kotel.dev/inject": "true", "example.com/revision": revision.to_string()}),
        json!([{"name": "FOO", "value": "bar"}]),
    );
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(pause_image());
    d
}

#[tokio::test]
async fn gitops_reapplies_leave_kotels_fields_and_roll_nothing() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    require_node(&client).await?;
    let ns = TestNamespace::create(&client, "gitops", json!({})).await?;
    ns.apply(instrumentation()).await?;
    let op = Operator::start().await?;
    let file = std::env::temp_dir().join(format!("{}-web.json", ns.name));
    std::fs::write(&file, serde_json::to_vec(&manifest("web", 1))?)?;
    let path = file.to_str().unwrap();
    kubectl(&["apply", "-n", &ns.name, "-f", path])?;
    wait_for("injection", T, || async {
        Ok(hash_of(&client, &ns.name, "web").await?.is_some())
    })
    .await?;
    cluster::wait_rollout(&client, &ns.name, "web").await?;
    let hash = hash_of(&client, &ns.name, "web").await?;
    let sets = replicasets(&client, &ns.name, "web").await?.len();

    // The user's manifest again at a new revision, client-side and then server-side: each is
    // seen by kotel (its reconcile is logged) and leaves its fields and the pods alone.
    for (revision, args) in [
        (2, vec!["apply", "-n", &ns.name, "-f", path]),
        (
            3,
            vec![
                "apply",
                "--server-side",
                "--force-conflicts",
                "-n",
                &ns.name,
                "-f",
                path,
            ],
        ),
    ] {
        std::fs::write(&file, serde_json::to_vec(&manifest("web", revision))?)?;
        let seen = op.reconcile_count(&ns.name, "web");
        let writes = op.writes("deployment").await?;
        kubectl(&args)?;
        wait_for(
            "kotel's reconcile of the re-applied manifest",
            T,
            || async { Ok(op.reconcile_count(&ns.name, "web") > seen) },
        )
        .await?;
        assert_eq!(hash_of(&client, &ns.name, "web").await?, hash, "{args:?}");
        assert_eq!(
            replicasets(&client, &ns.name, "web").await?.len(),
            sets,
            "{args:?} rolled"
        );
        assert_eq!(
            op.writes("deployment").await?,
            writes,
            "{args:?}: kotel wrote"
        );
    }

    // A replace with the user's manifest drops kotel's fields: kotel applies them again, once.
    std::fs::write(&file, serde_json::to_vec(&manifest("web", 4))?)?;
    let writes = op.writes("deployment").await?;
    kubectl(&["replace", "-n", &ns.name, "-f", path])?;
    wait_for("kotel's fields back after the replace", T, || async {
        Ok(op.writes("deployment").await? > writes
            && hash_of(&client, &ns.name, "web").await? == hash)
    })
    .await?;
    // A change kotel has nothing to do about, to see that it writes nothing more.
    let seen = op.reconcile_count(&ns.name, "web");
    kubectl(&["label", "-n", &ns.name, "deployment/web", "touched=yes"])?;
    wait_for("a later reconcile", T, || async {
        Ok(op.reconcile_count(&ns.name, "web") > seen)
    })
    .await?;
    assert_eq!(
        op.writes("deployment").await?,
        writes + 1.0,
        "re-applied once"
    );

    // `helm upgrade` of an app chart (scaled to two replicas: a change kotel sees, which is no
    // new pod template).
    let release = Release::install(
        "shop",
        &ns.name,
        &repo_root().join("charts/inference-app"),
        &[
            ("image.repository", image_repository("inference-app")),
            ("image.tag", image_tag()),
            ("kotel.sidecar", "false".into()),
        ],
    )?;
    wait_for("injection of the chart's Deployment", T, || async {
        Ok(hash_of(&client, &ns.name, "shop").await?.is_some())
    })
    .await?;
    cluster::wait_rollout(&client, &ns.name, "shop").await?;
    let hash = hash_of(&client, &ns.name, "shop").await?;
    let sets = replicasets(&client, &ns.name, "shop").await?.len();
    let seen = op.reconcile_count(&ns.name, "shop");
    let writes = op.writes("deployment").await?;
    release.upgrade(
        &repo_root().join("charts/inference-app"),
        &[("replicaCount", "2".into())],
    )?;
    wait_for("kotel's reconcile after the upgrade", T, || async {
        Ok(op.reconcile_count(&ns.name, "shop") > seen)
    })
    .await?;
    assert_eq!(hash_of(&client, &ns.name, "shop").await?, hash);
    assert_eq!(
        replicasets(&client, &ns.name, "shop").await?.len(),
        sets,
        "helm upgrade rolled"
    );
    assert_eq!(op.writes("deployment").await?, writes);
    drop(release);
    let _ = std::fs::remove_file(&file);
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

/// Another field manager force-applies one of kotel's variables: the variable is now that
/// manager's, and DESIGN's "a variable the workload sets itself is never overwritten" applies.
/// kotel keeps the other value, says so with one `UserVariableKept` Event, and does not fight:
/// nothing written in the 60 s after it saw the change.
#[tokio::test]
async fn a_force_applied_variable_is_kept_once_without_a_fight() -> anyhow::Result<()> {
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "force", json!({})).await?;
    ns.apply(instrumentation()).await?;
    let mut d = deployment("web", json!({"kotel.dev/inject": "true"}), json!([]));
    d["spec"]["replicas"] = json!(0);
    ns.apply(d).await?;
    let op = Operator::start().await?;
    wait_for("the injection", T, || async {
        Ok(hash_of(&client, &ns.name, "web").await?.is_some())
    })
    .await?;
    let force = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [{"name": "app",
            "env": [{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://elsewhere:4318"}]}]}}}});
    let seen = op.reconcile_count(&ns.name, "web");
    apply_json(&client, &ns.name, force, "gitops-tool").await?;
    wait_for("kotel's Event about the kept variable", T, || async {
        Ok(op.reconcile_count(&ns.name, "web") > seen
            && event_reasons(&client, &ns.name, "web")
                .await?
                .iter()
                .any(|(r, note)| {
                    r == "UserVariableKept" && note.contains("OTEL_EXPORTER_OTLP_ENDPOINT")
                }))
    })
    .await?;
    let writes = op.writes("deployment").await?;
    let reconciles = op.reconcile_count(&ns.name, "web");
    // An observation window, not a wait: kotel's reaction (its reconcile and the Event) was
    // seen above, and it may write nothing during the 60 s that follow.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let d: Deployment = Api::namespaced(client.clone(), &ns.name).get("web").await?;
    assert_eq!(
        env_value(&template_env(&d, "app"), "OTEL_EXPORTER_OTLP_ENDPOINT"),
        Some("http://elsewhere:4318"),
        "the other manager's value stays"
    );
    assert_eq!(
        op.writes("deployment").await?,
        writes,
        "kotel wrote in the 60 s"
    );
    let kept = event_reasons(&client, &ns.name, "web")
        .await?
        .into_iter()
        .filter(|(r, n)| r == "UserVariableKept" && n.contains("OTEL_EXPORTER_OTLP_ENDPOINT"))
        .count();
    assert_eq!(kept, 1, "one Event");
    eprintln!(
        "reconciles in the 60 s: {}",
        op.reconcile_count(&ns.name, "web") - reconciles
    );
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

//! The real OpenTelemetry Collector (otelcol-kotel, built by ocb from e2e/tools/otelcol):
//! every configuration kotel renders passes its `validate` command exactly as the pod would
//! read it, and the inference app, run with the env kotel injected into its Deployment,
//! delivers its telemetry to it.

use std::process::Command;
use std::time::Duration;

use anyhow::bail;
use k8s_openapi::serde::Deserialize;
use kotel_e2e::*;
use kotel_operator::collector::{Collector, ports_for, validate_config};
use kotel_operator::{gateway, sidecar};
use serde_json::{Value, json};

/// The Collectors of examples/ and a few more shapes (YAML string, extensions, several
/// pipelines).
fn collectors() -> Vec<(String, Collector)> {
    let mut out = Vec::new();
    let dir = repo_root().join("examples");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap();
            if v["kind"] == "Collector" {
                out.push((
                    path.display().to_string(),
                    serde_json::from_value(v).unwrap(),
                ));
            }
        }
    }
    let more = [
        json!({"mode": "sidecar", "config": "receivers: {otlp: {protocols: {grpc: {}}}}\nexporters: {debug: {}}\nservice: {pipelines: {logs: {receivers: [otlp], exporters: [debug]}}}\n"}),
        json!({"mode": "deployment", "config": {
            "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "0.0.0.0:14317"}, "http": {}}}},
            "processors": {"batch": {"timeout": "2s"}, "memory_limiter": {"check_interval": "1s", "limit_mib": 200}},
            "exporters": {"otlp": {"endpoint": "backend:4317", "tls": {"insecure": true}}, "debug": {"verbosity": "detailed"}},
            "extensions": {"health_check": {}},
            "service": {"extensions": ["health_check"], "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"], "exporters": ["otlp", "debug"]},
                "metrics": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["otlp"]}}}}}),
    ];
    for (i, spec) in more.into_iter().enumerate() {
        let c = json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Collector",
                       "metadata": {"name": format!("c{i}"), "namespace": "n"}, "spec": spec});
        out.push((format!("extra #{i}"), serde_json::from_value(c).unwrap()));
    }
    out
}

fn validate(bin: &std::path::Path, config_arg: &str, env: Option<(&str, &str)>) -> (bool, String) {
    let mut cmd = Command::new(bin);
    cmd.args(["validate", config_arg]);
    if let Some((k, v)) = env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running otelcol-kotel");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn every_config_kotel_renders_passes_the_collectors_own_validation() -> anyhow::Result<()> {
    let bin = otelcol()?;
    let dir = tempdir("kotel-validate")?;
    let all = collectors();
    assert!(all.len() >= 4, "examples/ lost its Collectors");
    for (at, col) in all {
        let cfg = validate_config(&col.spec.config)
            .map_err(|e| anyhow::anyhow!("{at}: kotel rejects it: {e}"))?;
        let ports = ports_for(&col.spec, &cfg);
        // As the native sidecar reads it: --config=env:KOTEL_COLLECTOR_CONFIG.
        let c = sidecar::container(&col.spec, &cfg, &ports);
        let inline = c.env.as_ref().unwrap()[0].value.clone().unwrap();
        let (ok, out) = validate(
            &bin,
            "--config=env:KOTEL_COLLECTOR_CONFIG",
            Some((sidecar::CONFIG_ENV, &inline)),
        );
        assert!(
            ok,
            "{at} (sidecar): the collector rejects what kotel renders:\n{out}\n{inline}"
        );
        // As a gateway reads it: the ConfigMap's file.
        let owner = gateway::Owner {
            name: "c",
            namespace: "n",
            uid: "u",
        };
        let mut spec = col.spec.clone();
        spec.mode = kotel_operator::collector::Mode::Deployment;
        let objects = gateway::desired(&owner, &spec, &cfg, &ports).unwrap();
        let file = dir.join(gateway::CONFIG_KEY);
        std::fs::write(
            &file,
            &objects.config_map.data.unwrap()[gateway::CONFIG_KEY],
        )?;
        let (ok, out) = validate(&bin, &format!("--config={}", file.display()), None);
        assert!(
            ok,
            "{at} (gateway): the collector rejects what kotel renders:\n{out}"
        );
    }
    // And what kotel refuses, the collector refuses too (kotel only refuses earlier).
    let undefined = "receivers: {otlp: {protocols: {grpc: {}}}}\nexporters: {debug: {}}\nservice: {pipelines: {traces: {receivers: [otlp], exporters: [otlp/nowhere]}}}\n";
    assert!(validate_config(&json!(undefined)).is_err());
    let (ok, _) = validate(&bin, "--config=env:CFG", Some(("CFG", undefined)));
    assert!(
        !ok,
        "otelcol accepted a pipeline naming an undefined exporter"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn the_inference_app_with_kotels_env_reaches_a_real_collector() -> anyhow::Result<()> {
    let bin = otelcol()?;
    let app_bin = InferenceApp::binary()?;
    let work = tempdir("kotel-otelcol")?;

    // kotel injects into a Deployment; the env is read back from the API.
    let client = client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "telemetry", json!({})).await?;
    let op = Operator::start().await?;
    let grpc = free_port();
    ns.apply(
        json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Instrumentation",
        "metadata": {"name": "otel"},
        "spec": {"exporter": {"endpoint": format!("http://127.0.0.1:{grpc}"), "protocol": "grpc"},
                 "sampler": {"type": "parentbased_always_on"},
                 "resourceAttributes": {"deployment.environment.name": "e2e"},
                 "metricExportInterval": "1s"}}),
    )
    .await?;
    let mut d = deployment(
        "house-price",
        json!({"kotel.dev/inject": "true"}),
        json!([]),
    );
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("kotel/inference-app:1.2.0");
    d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"] = json!("1.2.0");
    ns.apply(d).await?;
    let api: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client.clone(), &ns.name);
    wait_for("injection", Duration::from_secs(30), || async {
        Ok(template_hash(&api.get("house-price").await?).is_some())
    })
    .await?;
    let injected = api.get("house-price").await?;
    let container = injected
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .name
        .clone();
    let labels = injected
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone();
    let env = container_env(
        &template_env(&injected, &container),
        "house-price-7d4b9-x2x4q",
        "node-1",
        &labels.unwrap_or_default(),
    );
    assert!(
        env.iter().any(|(k, _)| k == "OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{env:?}"
    );

    // The collector: OTLP in, everything to its debug exporter's log.
    let config = work.join("otelcol.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers: {{otlp: {{protocols: {{grpc: {{endpoint: '127.0.0.1:{grpc}'}}}}}}}}\n\
             exporters: {{debug: {{verbosity: detailed}}}}\n\
             service:\n  telemetry: {{metrics: {{level: none}}}}\n  pipelines:\n\
             \x20   traces: {{receivers: [otlp], exporters: [debug]}}\n\
             \x20   metrics: {{receivers: [otlp], exporters: [debug]}}\n\
             \x20   logs: {{receivers: [otlp], exporters: [debug]}}\n"
        ),
    )?;
    let col_log = work.join("otelcol.log");
    let _col = spawn(
        Command::new(&bin).arg(format!("--config={}", config.display())),
        &col_log,
    )?;

    // The app, as the pod would run it, with a model and some traffic.
    let app = InferenceApp::start(&app_bin, &work, &env).await?;
    app.load(20).await?;

    let wanted = [
        "service.name: Str(house-price)",
        "k8s.namespace.name: Str(",
        "k8s.deployment.name: Str(house-price)",
        "k8s.pod.name: Str(house-price-7d4b9-x2x4q)",
        "k8s.node.name: Str(node-1)",
        "service.version: Str(1.2.0)",
        "deployment.environment.name: Str(e2e)",
        "Name           : POST /predict",
        "Name           : inference",
        "http.server.request.duration",
        "inference.requests",
        "Body: Str(request served)",
    ];
    let seen = wait_for(
        "the app's spans, metrics and logs at the collector",
        Duration::from_secs(30),
        || {
            let log = std::fs::read_to_string(&col_log).unwrap_or_default();
            async move { Ok(wanted.iter().all(|w| log.contains(w))) }
        },
    )
    .await;
    if let Err(e) = seen {
        let log = std::fs::read_to_string(&col_log).unwrap_or_default();
        let missing: Vec<_> = wanted.iter().filter(|w| !log.contains(**w)).collect();
        let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().join("\n");
        bail!(
            "{e}: missing {missing:?}\ninjected env: {env:?}\ncollector log (last lines, reversed):\n{tail}"
        );
    }
    op.stop()?;
    ns.cleanup().await;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// A Collector moved from the OpenTelemetry Operator with the `logging` exporter passes kotel's
/// structural check, but its image's own `validate` (run by kotel in a Job on the node) refuses
/// it: `ConfigValid=False` names the component and its replacement, and no workload gets it.
/// Replaced by `debug`, it is accepted and reaches the workload.
#[tokio::test]
async fn a_removed_component_is_refused_by_the_images_own_validate_before_any_pod_gets_it()
-> anyhow::Result<()> {
    use kotel_e2e::cluster::{image, pause_image, require_node};
    let client = client().await?;
    install_crds(&client).await?;
    require_node(&client).await?;
    let ns = TestNamespace::create(&client, "validate", json!({})).await?;
    let op = Operator::start().await?;
    let text = std::fs::read_to_string(repo_root().join("e2e/testdata/upstream-collector.yaml"))?;
    let mut upstream = Value::deserialize(serde_norway::Deserializer::from_str(&text))?;
    upstream["spec"]["image"] = json!(image("otelcol-kotel"));
    ns.apply(upstream.clone()).await?;
    let mut web = deployment("web", json!({"kotel.dev/sidecar": "otel"}), json!([]));
    web["spec"]["template"]["spec"]["containers"][0]["image"] = json!(pause_image());
    ns.apply(web).await?;

    let cols: kube::Api<Collector> = kube::Api::namespaced(client.clone(), &ns.name);
    let config_valid = |c: &Collector| {
        c.status.as_ref().and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "ConfigValid")
                .cloned()
        })
    };
    wait_for(
        "ConfigValid=False from the image's validate",
        Duration::from_secs(90),
        || async {
            Ok(config_valid(&cols.get("otel").await?).is_some_and(|c| {
                c.status == "False"
                    && c.message.contains("\"logging\"")
                    && c.message.contains("use debug")
            }))
        },
    )
    .await?;
    wait_for(
        "the workload's InvalidCollectorConfig Event",
        Duration::from_secs(30),
        || async {
            Ok(event_reasons(&client, &ns.name, "web")
                .await?
                .iter()
                .any(|(r, n)| r == "InvalidCollectorConfig" && n.contains("logging")))
        },
    )
    .await?;
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(client.clone(), &ns.name);
    let d = deployments.get("web").await?;
    assert!(
        template_hash(&d).is_none(),
        "the refused configuration reached no pod template"
    );

    // Fixed as the message says: accepted by the image, and the workload gets its sidecar.
    let fixed = text.replace("logging", "debug");
    let mut fixed = Value::deserialize(serde_norway::Deserializer::from_str(&fixed))?;
    fixed["spec"]["image"] = json!(image("otelcol-kotel"));
    ns.apply(fixed).await?;
    wait_for(
        "ConfigValid=True from the image's validate",
        Duration::from_secs(90),
        || async {
            Ok(config_valid(&cols.get("otel").await?)
                .is_some_and(|c| c.status == "True" && c.message.contains("validate accepts")))
        },
    )
    .await?;
    wait_for(
        "the sidecar in the pod template",
        Duration::from_secs(30),
        || async {
            let d = deployments.get("web").await?;
            let inits = d
                .spec
                .and_then(|s| s.template.spec)
                .and_then(|s| s.init_containers);
            Ok(inits.is_some_and(|i| i.iter().any(|c| c.name == sidecar::CONTAINER_NAME)))
        },
    )
    .await?;
    // One Job per configuration, each deleted once read: four writes.
    assert_eq!(
        series_value(
            &http_get(&format!("http://{}/metrics", op.addr)).await?.1,
            "kotel_writes_total{kind=\"validation\"}"
        ),
        Some(4.0)
    );
    op.stop()?;
    ns.cleanup().await;
    Ok(())
}

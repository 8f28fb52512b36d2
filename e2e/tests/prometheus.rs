//! A real Prometheus (Debian's `prometheus`) scrapes the operator's and the inference app's
//! /metrics: both expositions parse, and the series the README documents are there.

use std::process::Command;
use std::time::Duration;

use anyhow::bail;
use kotel_e2e::*;
use serde_json::Value;

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of a PromQL query that returns one sample, if it returns one.
async fn query(prom: &str, q: &str) -> anyhow::Result<Option<f64>> {
    let (code, body) = http_get(&format!("http://{prom}/api/v1/query?query={}", encode(q))).await?;
    if code != 200 {
        bail!("query {q}: HTTP {code}: {body}");
    }
    let v: Value = serde_json::from_str(&body)?;
    Ok(v["data"]["result"][0]["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok()))
}

#[tokio::test]
async fn prometheus_scrapes_the_operator_and_the_inference_app() -> anyhow::Result<()> {
    let Some(prometheus) = which("prometheus") else {
        bail!("prometheus is not installed: apt-get install prometheus (.ci/run does)");
    };
    let app_bin = InferenceApp::binary()?;
    let work = tempdir("kotel-prom")?;

    // The operator, with its CRDs.
    let client = client().await?;
    install_crds(&client).await?;
    let op = Operator::start().await?;

    // The inference app, with a freshly trained model, and some traffic.
    let app = InferenceApp::start(
        &app_bin,
        &work,
        &[("OTEL_SDK_DISABLED".into(), "true".into())],
    )
    .await?;
    let app_addr = app.addr.clone();
    app.load(40).await?;

    // Prometheus, scraping both every second.
    let prom_addr = format!("127.0.0.1:{}", free_port());
    let config = work.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: kotel-operator\n  static_configs: [{{targets: ['{}']}}]\n\
             - job_name: inference-app\n  static_configs: [{{targets: ['{app_addr}']}}]\n",
            op.addr
        ),
    )?;
    let _prom = spawn(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                work.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}")),
        &work.join("prometheus.log"),
    )?;

    let checks = [
        ("up{job=\"kotel-operator\"}", 1.0),
        ("up{job=\"inference-app\"}", 1.0),
        ("sum(kotel_reconciles_total)", 0.0),
        ("sum(kotel_injected_workloads)", 0.0),
        ("sum(inference_requests_total{outcome=\"ok\"})", 40.0),
        (
            "sum(http_server_request_duration_seconds_count{http_route=\"/predict\"})",
            40.0,
        ),
        ("sum(inference_duration_seconds_count)", 40.0),
        ("sum(model_info)", 1.0),
    ];
    let prom = prom_addr.clone();
    let outcome = wait_for(
        "Prometheus to scrape both targets",
        Duration::from_secs(60),
        || {
            let prom = prom.clone();
            async move {
                for (q, at_least) in checks {
                    match query(&prom, q).await {
                        Ok(Some(v)) if v >= at_least => {}
                        _ => return Ok(false),
                    }
                }
                Ok(true)
            }
        },
    )
    .await;
    if let Err(e) = outcome {
        let mut report = String::new();
        for (q, _) in checks {
            report += &format!("{q} = {:?}\n", query(&prom_addr, q).await);
        }
        let (_, targets) = http_get(&format!("http://{prom_addr}/api/v1/targets"))
            .await
            .unwrap_or_default();
        bail!("{e}\n{report}targets: {targets}");
    }
    op.stop()?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

//! A real Prometheus (Debian's `prometheus`) scrapes the operator's and the inference app's
//! /metrics: both expositions parse, the series the README documents are there, and every
//! query of the charts' Grafana dashboards parses and returns data.

use std::process::Command;
use std::time::Duration;

use anyhow::bail;
use kotel_e2e::*;
use serde_json::Value;

/// The series a PromQL query returns (an error names the query and Prometheus's reason).
async fn series(prom: &str, q: &str) -> anyhow::Result<Vec<Value>> {
    let encoded = percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC);
    let (code, body) = http_get(&format!("http://{prom}/api/v1/query?query={encoded}")).await?;
    if code != 200 {
        bail!("query {q}: HTTP {code}: {body}");
    }
    let v: Value = serde_json::from_str(&body)?;
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// The value of a PromQL query that returns one sample, if it returns one.
async fn query(prom: &str, q: &str) -> anyhow::Result<Option<f64>> {
    Ok(series(prom, q)
        .await?
        .first()
        .and_then(|s| s["value"][1].as_str().and_then(|v| v.parse().ok())))
}

/// Every panel query of the charts' dashboards, with Grafana's `$__rate_interval` set to what
/// one-second scrapes allow, as (dashboard file, panel title, query).
fn dashboard_queries() -> anyhow::Result<Vec<(String, String, String)>> {
    let mut out = Vec::new();
    for chart in ["kotel-operator", "inference-app"] {
        let dir = repo_root().join("charts").join(chart).join("dashboards");
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let d: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
            for p in d["panels"].as_array().into_iter().flatten() {
                for t in p["targets"].as_array().into_iter().flatten() {
                    out.push((
                        path.file_name().unwrap().to_string_lossy().into_owned(),
                        p["title"].as_str().unwrap_or_default().to_string(),
                        t["expr"]
                            .as_str()
                            .unwrap_or_default()
                            .replace("$__rate_interval", "30s"),
                    ));
                }
            }
        }
    }
    Ok(out)
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
    // A refusal and an input outside the training range, for the dashboards' error and drift
    // panels.
    let predict = format!("http://{app_addr}/predict");
    let (code, _) = http_request("POST", &predict, Some(r#"{"features": [-1]}"#)).await?;
    assert_eq!(code, 400);
    let (code, _) = http_request("POST", &predict, Some(r#"{"features": [9000]}"#)).await?;
    assert_eq!(code, 200);

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

    // Every dashboard query parses and returns at least one series: a renamed metric or a typo
    // in a panel fails here.
    let queries = dashboard_queries()?;
    assert!(queries.len() >= 20, "{queries:?}");
    let prom = prom_addr.clone();
    let panels = queries.clone();
    let answered = wait_for(
        "every dashboard query to return data",
        Duration::from_secs(60),
        || {
            let (prom, panels) = (prom.clone(), panels.clone());
            async move {
                for (_, _, q) in &panels {
                    if series(&prom, q).await.map_or(true, |s| s.is_empty()) {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        },
    )
    .await;
    if let Err(e) = answered {
        let mut report = String::new();
        for (file, title, q) in &queries {
            match series(&prom_addr, q).await {
                Ok(s) if !s.is_empty() => {}
                Ok(_) => report += &format!("{file} / {title}: no series from {q}\n"),
                Err(err) => report += &format!("{file} / {title}: {err:#}\n"),
            }
        }
        bail!("{e}\n{report}");
    }
    op.stop()?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

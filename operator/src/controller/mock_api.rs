//! The controllers against a mocked API server (as kube-rs' controller-rs tests them): each test
//! fills the stores, runs one reconcile, and asserts the exact requests it makes — or that it
//! makes none.

use std::time::Duration;

use http::{Method, Request, Response};
use kube::client::Body;
use kube::runtime::reflector::store::Writer;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::*;

type ApiHandle = Handle<Request<Body>, Response<Body>>;

/// A Context over a mocked client, with every store filled from `objects` and ready.
fn context(objects: &[Value]) -> (Arc<Context>, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    fn fill<K>(objects: &[Value], kind: &str) -> Store<K>
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
    {
        let mut w: Writer<K> = Writer::default();
        let store = w.as_reader();
        w.apply_watcher_event(&watcher::Event::Init);
        for o in objects.iter().filter(|o| o["kind"] == kind) {
            let obj: K = serde_json::from_value(o.clone()).expect("a valid object");
            w.apply_watcher_event(&watcher::Event::InitApply(obj));
        }
        w.apply_watcher_event(&watcher::Event::InitDone);
        store
    }
    let (_, ready) = watch::channel([true; STREAMS]);
    let stores = Stores {
        workloads: WorkloadStores {
            deployments: fill(objects, "Deployment"),
            stateful_sets: fill(objects, "StatefulSet"),
            daemon_sets: fill(objects, "DaemonSet"),
            cron_jobs: fill(objects, "CronJob"),
        },
        namespaces: fill(objects, "Namespace"),
        instrumentations: fill(objects, "Instrumentation"),
        collectors: fill(objects, "Collector"),
        gateway: GatewayStores {
            service_accounts: fill(&[], ""),
            config_maps: fill(&[], ""),
            services: fill(&[], ""),
            deployments: fill(&[], ""),
            daemon_sets: fill(&[], ""),
        },
        validation_jobs: fill(objects, "Job"),
        ready,
    };
    let (tx, _rx) = mpsc::unbounded();
    let ctx = Context {
        client,
        instance: "test".into(),
        metrics: Metrics::default(),
        stores,
        reported: Mutex::default(),
        invalid_reported: Mutex::default(),
        rollouts: Mutex::default(),
        backoff: Backoff::default(),
        status_trigger: tx,
    };
    (Arc::new(ctx), handle)
}

/// Takes the next request, checks its method and path (with query), answers `reply`, and
/// returns its JSON body.
async fn expect(handle: &mut ApiHandle, method: Method, path: &str, reply: Value) -> Value {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
        .expect("the client is alive");
    assert_eq!(req.method(), method, "{}", req.uri());
    assert_eq!(req.uri().path_and_query().map(|p| p.as_str()), Some(path));
    let bytes = req.into_body().collect_bytes().await.expect("a body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON body")
    };
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    body
}

/// Asserts that no request is pending once the reconcile has returned.
async fn expect_none(handle: &mut ApiHandle) {
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await
    {
        panic!("unexpected request {} {}", req.method(), req.uri());
    }
}

fn instrumentation() -> Value {
    json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Instrumentation",
           "metadata": {"name": "otel", "namespace": "shop", "uid": "i1", "generation": 1},
           "spec": {"exporter": {"endpoint": "http://gw.obs:4318"}}})
}

fn web(extra_template_meta: Value) -> Value {
    let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "uid": "d1",
                     "annotations": {"kotel.dev/inject": "true"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": "shop/web:1",
                                        "env": [{"name": "OTEL_SERVICE_NAME", "value": "mine"}]}]}}}});
    if let Some(a) = extra_template_meta.get("annotations") {
        d["spec"]["template"]["metadata"]["annotations"] = a.clone();
    }
    d
}

fn deployment(v: &Value) -> Arc<Watched<Deployment>> {
    Arc::new(serde_json::from_value(v.clone()).unwrap())
}

const APPLY_WEB: &str =
    "/apis/apps/v1/namespaces/shop/deployments/web?&force=true&fieldManager=kotel";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/shop/events?";
const COLLECTOR_STATUS: &str = "/apis/kotel.dev/v1alpha1/namespaces/shop/collectors/side/status?&force=true&fieldManager=kotel";

#[tokio::test]
async fn an_annotated_deployment_gets_one_apply_by_kotel_and_events() {
    let d = web(json!({}));
    let (ctx, mut api) = context(&[instrumentation(), d.clone()]);
    let (res, (body, injected, kept)) =
        tokio::join!(reconcile_workload(deployment(&d), ctx.clone()), async {
            let body = expect(&mut api, Method::PATCH, APPLY_WEB, d.clone()).await;
            let injected = expect(&mut api, Method::POST, EVENTS, json!({})).await;
            let kept = expect(&mut api, Method::POST, EVENTS, json!({})).await;
            (body, injected, kept)
        });
    assert_eq!(res.expect("reconciled"), Action::await_change());
    expect_none(&mut api).await;

    // Only kotel's fields: the env it owns (not the user's OTEL_SERVICE_NAME) and the hash.
    assert_eq!(
        (body["apiVersion"].as_str(), body["kind"].as_str()),
        (Some("apps/v1"), Some("Deployment"))
    );
    assert_eq!(
        body["metadata"],
        json!({"name": "web", "namespace": "shop"})
    );
    let hash = body["spec"]["template"]["metadata"]["annotations"]["kotel.dev/config-hash"]
        .as_str()
        .expect("the config hash");
    let containers = body["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    assert_eq!(containers[0]["name"], "app");
    let names: Vec<&str> = containers[0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"OTEL_EXPORTER_OTLP_ENDPOINT"), "{names:?}");
    assert!(
        !names.contains(&"OTEL_SERVICE_NAME"),
        "the user's variable is kept: {names:?}"
    );
    assert!(
        body["spec"]["template"]["spec"]
            .get("initContainers")
            .is_none()
    );

    assert_eq!(injected["reason"], "Injected");
    assert_eq!(injected["type"], "Normal");
    assert_eq!(injected["regarding"]["name"], "web");
    assert!(
        injected["note"].as_str().unwrap().contains(hash),
        "{injected}"
    );
    assert_eq!(kept["reason"], "UserVariableKept");
    assert!(
        kept["note"]
            .as_str()
            .unwrap()
            .contains("app/OTEL_SERVICE_NAME")
    );
    assert_eq!(ctx.metrics.total_writes(), 3);
}

/// The CronJob form of `web`: the same pod template under `spec.jobTemplate.spec.template`.
fn nightly() -> Value {
    let d = web(json!({}));
    json!({"apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "nightly", "namespace": "shop", "uid": "c1",
                     "annotations": {"kotel.dev/inject": "true"}},
        "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": d["spec"]["template"]}}}})
}

#[tokio::test]
async fn a_cron_job_gets_its_job_template_patched_with_its_own_name_attribute() {
    let c = nightly();
    let (ctx, mut api) = context(&[instrumentation(), c.clone()]);
    let cron: Arc<Watched<CronJob>> = Arc::new(serde_json::from_value(c.clone()).unwrap());
    let (res, (body, injected)) = tokio::join!(reconcile_workload(cron, ctx.clone()), async {
        let body = expect(
            &mut api,
            Method::PATCH,
            "/apis/batch/v1/namespaces/shop/cronjobs/nightly?&force=true&fieldManager=kotel",
            c.clone(),
        )
        .await;
        let injected = expect(&mut api, Method::POST, EVENTS, json!({})).await;
        let _kept = expect(&mut api, Method::POST, EVENTS, json!({})).await;
        (body, injected)
    });
    res.expect("reconciled");
    expect_none(&mut api).await;
    assert_eq!(
        (body["apiVersion"].as_str(), body["kind"].as_str()),
        (Some("batch/v1"), Some("CronJob"))
    );
    assert!(body["spec"].get("template").is_none(), "{body}");
    let template = &body["spec"]["jobTemplate"]["spec"]["template"];
    assert!(template["metadata"]["annotations"]["kotel.dev/config-hash"].is_string());
    let env = template["spec"]["containers"][0]["env"].as_array().unwrap();
    let attrs = env
        .iter()
        .find(|e| e["name"] == "OTEL_RESOURCE_ATTRIBUTES")
        .expect("resource attributes");
    let value = attrs["value"].as_str().unwrap_or_default();
    assert!(value.contains("k8s.cronjob.name=nightly"), "{attrs}");
    assert!(!value.contains("k8s.deployment.name"), "{attrs}");
    assert_eq!(
        (
            injected["regarding"]["kind"].as_str(),
            injected["regarding"]["apiVersion"].as_str()
        ),
        (Some("CronJob"), Some("batch/v1"))
    );
    assert_eq!(ctx.metrics.total_writes(), 3);
}

#[tokio::test]
async fn an_injected_deployment_costs_no_request() {
    // What kotel wants (the pure stages), then the Deployment as the API server returns it
    // after kotel's apply: the hash on the template and kotel owning exactly its fields.
    let (ctx, _) = context(&[instrumentation(), web(json!({}))]);
    let d = deployment(&web(json!({})));
    let inputs = dereference(d.as_ref(), &ctx.stores).expect("inputs");
    let plan = decide(d.as_ref(), &inputs, &ownership::Shape::default())
        .expect("a plan")
        .expect("nothing to wait for");
    let injected = web(json!({"annotations": {"kotel.dev/config-hash": plan.intent.hash}}));
    let mut d: Watched<Deployment> = serde_json::from_value(injected.clone()).unwrap();
    // As its managedFields would say after kotel's apply.
    d.owned = plan.intent.shape();

    let (ctx, mut api) = context(&[instrumentation(), injected]);
    reconcile_workload(Arc::new(d), ctx.clone())
        .await
        .expect("reconciled");
    expect_none(&mut api).await;
    assert_eq!(ctx.metrics.total_writes(), 0);
}

#[tokio::test]
async fn an_ambiguous_inject_is_one_warning_event_and_no_apply() {
    let mut second = instrumentation();
    second["metadata"]["name"] = json!("other");
    let d = web(json!({}));
    let (ctx, mut api) = context(&[instrumentation(), second, d.clone()]);
    let (res, ev) = tokio::join!(
        reconcile_workload(deployment(&d), ctx.clone()),
        expect(&mut api, Method::POST, EVENTS, json!({}))
    );
    res.unwrap();
    expect_none(&mut api).await;
    assert_eq!(
        (ev["reason"].as_str(), ev["type"].as_str()),
        (Some("AmbiguousInstrumentation"), Some("Warning"))
    );
    // The same standing problem is not reported again.
    reconcile_workload(deployment(&d), ctx).await.unwrap();
    expect_none(&mut api).await;
}

#[tokio::test]
async fn a_collector_gets_its_status_by_one_apply_and_an_invalid_one_an_event() {
    let col = json!({"apiVersion": "kotel.dev/v1alpha1", "kind": "Collector",
        "metadata": {"name": "side", "namespace": "shop", "uid": "c1", "generation": 2},
        "spec": {"mode": "sidecar", "config": {
            "receivers": {"otlp": {"protocols": {"grpc": {}}}},
            "exporters": {"debug": {}},
            "service": {"pipelines": {"traces": {"receivers": ["otlp"], "exporters": ["debug"]}}}}}});
    let guard = |v: &Value| -> Arc<DeserializeGuard<Collector>> {
        Arc::new(serde_json::from_value(v.clone()).unwrap())
    };
    // A configuration the image has not judged: one Job that runs its `validate`, and nothing
    // else until it has answered.
    let c: Collector = serde_json::from_value(col.clone()).unwrap();
    let key = validation::key(
        &validate_config(&c.spec.config).unwrap().to_yaml(),
        c.spec.image(),
    );
    let (ctx, mut api) = context(std::slice::from_ref(&col));
    let job_path = format!(
        "/apis/batch/v1/namespaces/shop/jobs/side-validate-{key}?&force=true&fieldManager=kotel"
    );
    let (res, job) = tokio::join!(
        reconcile_collector(guard(&col), ctx),
        expect(&mut api, Method::PATCH, &job_path, json!({}))
    );
    assert!(
        res.unwrap() != Action::await_change(),
        "requeued until the verdict"
    );
    expect_none(&mut api).await;
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["metadata"]["ownerReferences"][0]["uid"], "c1");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"][0],
        "validate"
    );

    // With the image's verdict in status, the status is applied and no Job runs again.
    let mut judged = col.clone();
    judged["status"] = json!({"validation": {"key": key, "result": "Valid"}});
    let (ctx, mut api) = context(std::slice::from_ref(&judged));
    let (res, body) = tokio::join!(
        reconcile_collector(guard(&judged), ctx),
        expect(&mut api, Method::PATCH, COLLECTOR_STATUS, judged.clone())
    );
    res.unwrap();
    expect_none(&mut api).await;
    assert_eq!(body["kind"], "Collector");
    let status = &body["status"];
    assert_eq!(status["observedGeneration"], 2);
    let cond = |status: &Value, t: &str| {
        status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .map(|c| (c["status"].clone(), c["reason"].clone()))
    };
    assert_eq!(
        cond(status, "ConfigValid"),
        Some((json!("True"), json!("Valid")))
    );
    assert_eq!(
        cond(status, "Ready"),
        Some((json!("True"), json!("SidecarReady")))
    );

    let mut bad = col;
    bad["spec"]["config"]["service"]["pipelines"]["traces"]["exporters"] = json!(["nope"]);
    let (ctx, mut api) = context(std::slice::from_ref(&bad));
    let (res, (ev, body)) = tokio::join!(reconcile_collector(guard(&bad), ctx), async {
        let ev = expect(&mut api, Method::POST, EVENTS, json!({})).await;
        let body = expect(&mut api, Method::PATCH, COLLECTOR_STATUS, bad.clone()).await;
        (ev, body)
    });
    res.unwrap();
    expect_none(&mut api).await;
    assert_eq!(
        (ev["reason"].as_str(), ev["type"].as_str()),
        (Some("InvalidConfig"), Some("Warning"))
    );
    assert!(ev["note"].as_str().unwrap().contains("nope"), "{ev}");
    assert_eq!(
        cond(&body["status"], "ConfigValid").map(|c| c.0),
        Some(json!("False"))
    );
}

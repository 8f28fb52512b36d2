//! The operator's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// What the endpoints report on.
#[derive(Clone)]
pub struct State {
    /// The metrics registry.
    pub registry: Arc<Registry>,
    /// The API server answered and kotel's CRDs are installed.
    pub crds: Arc<AtomicBool>,
    /// Every reflector store has listed once.
    pub synced: Arc<AtomicBool>,
    /// This replica holds the leader Lease.
    pub leader: Arc<AtomicBool>,
}

async fn metrics(AxumState(s): AxumState<State>) -> impl IntoResponse {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &s.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        ),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

/// Readiness never waits for the Lease: a standby that reaches the API and finds the CRDs is
/// ready, so a rolling upgrade's new pod becomes ready while the old one still leads. The
/// leader is ready once its caches have synced.
pub fn is_ready(crds: bool, leader: bool, synced: bool) -> bool {
    crds && (!leader || synced)
}

async fn readyz(AxumState(s): AxumState<State>) -> (StatusCode, String) {
    let crds = s.crds.load(Ordering::SeqCst);
    let synced = s.synced.load(Ordering::SeqCst);
    let leader = s.leader.load(Ordering::SeqCst);
    let code = if is_ready(crds, leader, synced) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        format!("crds found: {crds}\nleader: {leader}\ncaches synced: {synced}\n"),
    )
}

/// The router.
pub fn router(state: State) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state() -> State {
        let m = crate::metrics::Metrics::default();
        let mut reg = Registry::default();
        m.register(&mut reg);
        State {
            registry: Arc::new(reg),
            crds: Arc::new(AtomicBool::new(false)),
            synced: Arc::new(AtomicBool::new(false)),
            leader: Arc::new(AtomicBool::new(true)),
        }
    }

    #[test]
    fn readiness_needs_the_crds_and_a_leaders_caches_but_never_the_lease() {
        for crds in [false, true] {
            for leader in [false, true] {
                for synced in [false, true] {
                    let expected = match (crds, leader, synced) {
                        (false, _, _) => false,
                        (true, false, _) => true,
                        (true, true, synced) => synced,
                    };
                    assert_eq!(
                        is_ready(crds, leader, synced),
                        expected,
                        "{crds} {leader} {synced}"
                    );
                }
            }
        }
    }

    async fn get_status(r: &Router, path: &str) -> (StatusCode, String) {
        let resp = r
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn endpoints() {
        let s = state();
        let r = router(s.clone());
        assert_eq!(get_status(&r, "/healthz").await.0, StatusCode::OK);
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(get_status(&r, "/readyz").await.0, unavailable);
        s.crds.store(true, Ordering::SeqCst);
        assert_eq!(get_status(&r, "/readyz").await.0, unavailable);
        s.synced.store(true, Ordering::SeqCst);
        assert_eq!(get_status(&r, "/readyz").await.0, StatusCode::OK);
        // A standby is ready: readiness never waits for the Lease.
        s.leader.store(false, Ordering::SeqCst);
        s.synced.store(false, Ordering::SeqCst);
        let (code, body) = get_status(&r, "/readyz").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let (code, body) = get_status(&r, "/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(body.contains("kotel_reconciles_total"), "{body}");
    }
}

//! The operator's Kubernetes client: kube's own, with a layer that times every request by
//! verb (`kotel_api_request_duration_seconds`) and warns when the API server is slow to answer.
//! While etcd is away the API server holds requests instead of failing them, so a slow answer
//! is how an outage shows.

use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::{Method, Request, Response, Uri};
use kube::Client;
use tower::{Layer, Service};
use tracing::warn;

use crate::metrics::ApiDurations;

/// An answer slower than this is logged.
pub const SLOW: Duration = Duration::from_secs(5);

/// kube's client for the inferred configuration, with every request timed.
pub async fn client(durations: ApiDurations) -> anyhow::Result<Client> {
    let config = kube::Config::infer().await?;
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&Timed { durations })
        .build())
}

/// The Kubernetes verb of a request, from its method and path.
pub fn verb(method: &Method, uri: &Uri) -> &'static str {
    let query = uri.query().unwrap_or_default();
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    match *method {
        Method::GET if watch => "watch",
        Method::GET if names_a_collection(uri.path()) => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "other",
    }
}

/// Whether a path names a collection (`.../deployments`) rather than one object
/// (`.../deployments/web`, `.../namespaces/shop`) or a subresource.
fn names_a_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return false,
    };
    let rest = match rest {
        ["namespaces", _namespace, scoped @ ..] if !scoped.is_empty() => scoped,
        other => other,
    };
    rest.len() == 1
}

/// The layer that times requests.
#[derive(Clone)]
pub struct Timed {
    durations: ApiDurations,
}

impl<S> Layer<S> for Timed {
    type Service = TimedService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimedService {
            inner,
            durations: self.durations.clone(),
        }
    }
}

/// A service whose requests are timed.
#[derive(Clone)]
pub struct TimedService<S> {
    inner: S,
    durations: ApiDurations,
}

impl<S, B, R> Service<Request<B>> for TimedService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Response: Send,
    S::Error: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let verb = verb(request.method(), request.uri());
        let path = request.uri().path().to_string();
        let durations = self.durations.clone();
        let start = Instant::now();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let result = answer.await;
            let took = start.elapsed();
            durations.observe(verb, took);
            if took >= SLOW && verb != "watch" {
                warn!(
                    verb,
                    path,
                    seconds = took.as_secs_f64(),
                    "the API server was slow to answer: it may be overloaded, or its etcd unavailable"
                );
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(method: Method, uri: &str) -> &'static str {
        verb(&method, &uri.parse().unwrap())
    }

    #[test]
    fn verbs_follow_the_method_and_the_path() {
        assert_eq!(
            v(Method::GET, "/apis/apps/v1/deployments?limit=100"),
            "list"
        );
        assert_eq!(
            v(Method::GET, "/apis/apps/v1/namespaces/shop/deployments"),
            "list"
        );
        assert_eq!(
            v(Method::GET, "/apis/apps/v1/namespaces/shop/deployments/web"),
            "get"
        );
        assert_eq!(
            v(
                Method::GET,
                "/apis/apps/v1/deployments?watch=true&resourceVersion=12"
            ),
            "watch"
        );
        assert_eq!(v(Method::GET, "/api/v1/namespaces"), "list");
        assert_eq!(v(Method::GET, "/api/v1/namespaces/shop"), "get");
        assert_eq!(v(Method::GET, "/api/v1/namespaces/shop/pods"), "list");
        assert_eq!(v(Method::GET, "/api/v1/namespaces/shop/pods/p/log"), "get");
        assert_eq!(v(Method::GET, "/readyz"), "get");
        assert_eq!(
            v(
                Method::PATCH,
                "/apis/apps/v1/namespaces/shop/deployments/web"
            ),
            "patch"
        );
        assert_eq!(
            v(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/shop/events"
            ),
            "create"
        );
        assert_eq!(
            v(
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/x/leases/kotel-operator"
            ),
            "update"
        );
        assert_eq!(
            v(Method::DELETE, "/apis/batch/v1/namespaces/x/jobs/j"),
            "delete"
        );
        assert_eq!(v(Method::HEAD, "/"), "other");
    }
}

//! inference-app: a candle house-price model served by axum, instrumented on the stock
//! OpenTelemetry SDK through the standard `OTEL_*` environment (exactly what kotel injects).

pub mod dropped;
pub mod http;
pub mod metrics;
pub mod model;
pub mod prometheus;
pub mod serve;
pub mod telemetry;
pub mod train;

//! inference-app: a candle house-price model served by axum, instrumented only through the
//! standard `OTEL_*` environment (exactly what kotel injects).

pub mod http;
pub mod load;
pub mod log_writer;
pub mod metrics;
pub mod model;
pub mod otlp;
pub mod recorder;
pub mod serve;
pub mod telemetry;
pub mod train;

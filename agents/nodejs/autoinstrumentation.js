// Loaded through NODE_OPTIONS=--require before the application: starts the OpenTelemetry
// Node.js SDK with every auto-instrumentation, configured from the OTEL_* env kotel injects.
require('@opentelemetry/auto-instrumentations-node/register');

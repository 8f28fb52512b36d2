//! Reads what a Collector's `debug` exporter (verbosity `detailed`) wrote to its log: the
//! e2e sink on running pods, read through the API like any pod's logs, so the same test
//! works on kind.

use std::collections::BTreeMap;

/// The signal of one resource block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `ResourceSpans #n`
    Traces,
    /// `ResourceMetrics #n`
    Metrics,
    /// `ResourceLog #n`
    Logs,
}

/// A span as the debug exporter prints it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Span {
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex id of the parent span, empty for a root.
    pub parent_id: String,
    /// Span name.
    pub name: String,
    /// `Server`, `Internal`, ...
    pub kind: String,
    /// `Start time` and `End time` as printed (`2026-11-30 00:13:37.45028779 +0000 UTC`).
    pub start: String,
    /// See `start`.
    pub end: String,
    /// The span's attributes; string values without their `Str(...)` wrapper.
    pub attributes: BTreeMap<String, String>,
}

impl Span {
    /// The span's duration, when both of its times parse.
    pub fn duration(&self) -> Option<std::time::Duration> {
        let t = |s: &str| -> Option<jiff::Timestamp> {
            let s = s.strip_suffix(" UTC")?;
            jiff::fmt::strtime::parse("%Y-%m-%d %H:%M:%S%.f %z", s)
                .ok()?
                .to_timestamp()
                .ok()
        };
        let d = t(&self.end)?.duration_since(t(&self.start)?);
        std::time::Duration::try_from(d).ok()
    }
}

/// One resource block: its resource attributes and, for traces, its spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Which signal it carried.
    pub signal: Signal,
    /// Resource attributes; string values without their `Str(...)` wrapper.
    pub attributes: BTreeMap<String, String>,
    /// The spans (traces only).
    pub spans: Vec<Span>,
}

impl Resource {
    /// A resource attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn signal_of(line: &str) -> Option<Signal> {
    let head = line.rsplit('\t').next()?.trim();
    let (kind, n) = head.split_once(" #")?;
    n.parse::<u32>().ok()?;
    match kind {
        "ResourceSpans" => Some(Signal::Traces),
        "ResourceMetrics" => Some(Signal::Metrics),
        "ResourceLog" | "ResourceLogs" => Some(Signal::Logs),
        _ => None,
    }
}

fn value(raw: &str) -> String {
    raw.strip_prefix("Str(")
        .and_then(|v| v.strip_suffix(')'))
        .unwrap_or(raw)
        .to_string()
}

/// Every resource block in `log`, in order.
pub fn parse(log: &str) -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    let mut in_attributes = false;
    // Inside the `Attributes:` block of the span pushed last.
    let mut in_span_attributes = false;
    let mut span: Option<Span> = None;
    for line in log.lines() {
        if let Some(signal) = signal_of(line) {
            out.push(Resource {
                signal,
                attributes: BTreeMap::new(),
                spans: Vec::new(),
            });
            in_attributes = false;
            in_span_attributes = false;
            span = None;
            continue;
        }
        let Some(current) = out.last_mut() else {
            continue;
        };
        if line == "Resource attributes:" {
            in_attributes = true;
            continue;
        }
        if in_attributes {
            if let Some((k, v)) = line
                .trim_start()
                .strip_prefix("-> ")
                .and_then(|kv| kv.split_once(": "))
            {
                current.attributes.insert(k.to_string(), value(v));
                continue;
            }
            in_attributes = false;
        }
        if current.signal != Signal::Traces {
            continue;
        }
        if line == "Attributes:" {
            in_span_attributes = !current.spans.is_empty();
            continue;
        }
        if in_span_attributes {
            if let Some((k, v)) = line
                .trim_start()
                .strip_prefix("-> ")
                .and_then(|kv| kv.split_once(": "))
            {
                if let Some(last) = current.spans.last_mut() {
                    last.attributes.insert(k.to_string(), value(v));
                }
                continue;
            }
            in_span_attributes = false;
        }
        let Some((field, v)) = line.trim_start().split_once(':') else {
            continue;
        };
        let v = v.trim().to_string();
        let field = field.trim_end();
        if field == "Trace ID" && line.starts_with("    ") {
            span = Some(Span {
                trace_id: v,
                ..Span::default()
            });
            continue;
        }
        if let Some(s) = span.as_mut() {
            match field {
                "Parent ID" => s.parent_id = v,
                "ID" => s.span_id = v,
                "Name" => s.name = v,
                "Kind" => {
                    s.kind = v;
                    current.spans.extend(span.take());
                }
                _ => {}
            }
        } else if line.starts_with("    ")
            && let Some(last) = current.spans.last_mut()
        {
            match field {
                "Start time" => last.start = v,
                "End time" => last.end = v,
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As otelcol-kotel v0.162.0's debug exporter printed it for the inference app.
    const SAMPLE: &str = "2026-11-30T00:13:37.650Z\tinfo\tLogs\t{\"resource logs\": 1}
2026-11-30T00:13:37.650Z\tinfo\tResourceLog #0
Resource SchemaURL: 
Resource attributes:
     -> k8s.pod.name: Str(house-price-5bc9d56bb4-98pxk)
     -> service.name: Str(house-price)
ScopeLogs #0
InstrumentationScope inference_app::serve 
LogRecord #0
Body: Str(serving)
Attributes:
     -> addr: Str(0.0.0.0:8000)
Trace ID: 
Span ID: 
2026-11-30T00:13:38.652Z\tinfo\tResourceSpans #0
Resource SchemaURL: 
Resource attributes:
     -> service.name: Str(house-price)
     -> k8s.node.name: Str(kotel-e2e-node)
ScopeSpans #0
InstrumentationScope inference-app 0.1.0
Span #0
    Trace ID       : ccda9d849698922c76012c989e2d8cdd
    Parent ID      : 
    ID             : 89982caf1fa65334
    Name           : POST /predict
    Kind           : Server
    Start time     : 2026-11-30 00:13:37.45028779 +0000 UTC
Attributes:
     -> http.request.method: Str(POST)
Span #1
    Trace ID       : ccda9d849698922c76012c989e2d8cdd
    Parent ID      : 89982caf1fa65334
    ID             : 0000000000000001
    Name           : inference
    Kind           : Internal
    Start time     : 2026-11-30 00:13:37.450300 +0000 UTC
    End time       : 2026-11-30 00:13:37.450425 +0000 UTC
2026-11-30T00:13:41.668Z\tinfo\tResourceMetrics #0
Resource attributes:
     -> service.name: Str(house-price)
     -> process.pid: Int(7)
ScopeMetrics #0
";

    #[test]
    fn reads_resources_attributes_and_spans_of_every_signal() {
        let r = parse(SAMPLE);
        assert_eq!(
            r.iter().map(|r| r.signal).collect::<Vec<_>>(),
            [Signal::Logs, Signal::Traces, Signal::Metrics]
        );
        assert_eq!(
            r[0].attr("k8s.pod.name"),
            Some("house-price-5bc9d56bb4-98pxk")
        );
        assert!(r[0].spans.is_empty(), "a log record's Trace ID is no span");
        assert_eq!(r[1].attr("k8s.node.name"), Some("kotel-e2e-node"));
        assert_eq!(
            r[1].spans,
            [
                Span {
                    trace_id: "ccda9d849698922c76012c989e2d8cdd".into(),
                    span_id: "89982caf1fa65334".into(),
                    name: "POST /predict".into(),
                    kind: "Server".into(),
                    start: "2026-11-30 00:13:37.45028779 +0000 UTC".into(),
                    attributes: [("http.request.method".to_string(), "POST".to_string())].into(),
                    ..Span::default()
                },
                Span {
                    trace_id: "ccda9d849698922c76012c989e2d8cdd".into(),
                    span_id: "0000000000000001".into(),
                    parent_id: "89982caf1fa65334".into(),
                    name: "inference".into(),
                    kind: "Internal".into(),
                    start: "2026-11-30 00:13:37.450300 +0000 UTC".into(),
                    end: "2026-11-30 00:13:37.450425 +0000 UTC".into(),
                    attributes: BTreeMap::new(),
                }
            ]
        );
        assert_eq!(
            r[1].spans[1].duration(),
            Some(std::time::Duration::from_micros(125))
        );
        assert_eq!(r[1].spans[0].duration(), None, "no end time");
        assert_eq!(r[2].attr("process.pid"), Some("Int(7)"));
        assert_eq!(
            r[2].attributes.len(),
            2,
            "span attributes are not resource attributes"
        );
    }

    #[test]
    fn ignores_everything_before_the_first_resource() {
        assert!(parse("2026\tinfo\tEverything is ready.\nTrace ID       : ab\n").is_empty());
    }
}

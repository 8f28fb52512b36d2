//! The traces a Collector's debug exporter received, as trees in the terminal: each span
//! indented under its parent with its duration, and the service and Kubernetes resource
//! attributes of whoever made it. The demo prints this where a trace UI would show it: no
//! Jaeger UI can be built from the registries this project's machines reach.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::debug_exporter::{Resource, Signal, Span};

/// Who made a span: `service.name` and the `k8s.*` resource attributes.
fn maker(r: &Resource) -> String {
    let mut out = r
        .attr("service.name")
        .unwrap_or("unknown service")
        .to_string();
    for (k, v) in r.attributes.iter().filter(|(k, _)| k.starts_with("k8s.")) {
        let _ = write!(out, " {k}={v}");
    }
    out
}

fn line(out: &mut String, prefix: &str, span: &Span, made_by: Option<String>) {
    let took = span
        .duration()
        .map(|d| format!("{:.3} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "?".into());
    let kind = if span.kind == "Internal" {
        String::new()
    } else {
        format!(" [{}]", span.kind)
    };
    let _ = write!(out, "{prefix}{}  {took}{kind}", span.name);
    if let Some(m) = made_by {
        let _ = write!(out, "  ({m})");
    }
    out.push('\n');
}

type Spans<'a> = Vec<(&'a Span, &'a Resource)>;

fn children<'a>(
    out: &mut String,
    indent: &str,
    parent: &'a Span,
    by_parent: &BTreeMap<&'a str, Spans<'a>>,
    parent_maker: &str,
) {
    let Some(kids) = by_parent.get(parent.span_id.as_str()) else {
        return;
    };
    for (i, (span, res)) in kids.iter().enumerate() {
        let last = i + 1 == kids.len();
        let made = maker(res);
        let shown = (made != parent_maker).then(|| made.clone());
        line(
            out,
            &format!("{indent}{}", if last { "└─ " } else { "├─ " }),
            span,
            shown,
        );
        let deeper = format!("{indent}{}", if last { "   " } else { "│  " });
        children(out, &deeper, span, by_parent, &made);
    }
}

/// The last `last` traces of `resources` (in the order their first span arrived).
pub fn render(resources: &[Resource], last: usize) -> String {
    let mut traces: Vec<(&str, Spans<'_>)> = Vec::new();
    for r in resources.iter().filter(|r| r.signal == Signal::Traces) {
        for s in &r.spans {
            match traces.iter_mut().find(|(id, _)| *id == s.trace_id) {
                Some((_, spans)) => spans.push((s, r)),
                None => traces.push((&s.trace_id, vec![(s, r)])),
            }
        }
    }
    let mut out = String::new();
    for (id, mut spans) in traces.into_iter().rev().take(last).rev() {
        spans.sort_by(|a, b| a.0.start.cmp(&b.0.start));
        let known: Vec<&str> = spans.iter().map(|(s, _)| s.span_id.as_str()).collect();
        let mut by_parent: BTreeMap<&str, Spans<'_>> = BTreeMap::new();
        let mut roots = Vec::new();
        for (s, r) in spans {
            if known.contains(&s.parent_id.as_str()) {
                by_parent.entry(&s.parent_id).or_default().push((s, r));
            } else {
                roots.push((s, r));
            }
        }
        let _ = writeln!(out, "trace {id}");
        for (s, r) in roots {
            let made = maker(r);
            let remote = if s.parent_id.is_empty() {
                String::new()
            } else {
                format!(", remote parent {}", s.parent_id)
            };
            line(&mut out, "", s, Some(format!("{made}{remote}")));
            children(&mut out, "", s, &by_parent, &made);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: &str, name: &str, kind: &str, start_us: u32, end_us: u32) -> Span {
        let t = |us: u32| format!("2026-11-30 00:13:37.{us:06} +0000 UTC");
        Span {
            trace_id: "t1".into(),
            span_id: id.into(),
            parent_id: parent.into(),
            name: name.into(),
            kind: kind.into(),
            start: t(start_us),
            end: t(end_us),
            attributes: BTreeMap::new(),
        }
    }

    fn resource(service: &str, pod: &str, spans: Vec<Span>) -> Resource {
        Resource {
            signal: Signal::Traces,
            attributes: [
                ("service.name".to_string(), service.to_string()),
                ("k8s.pod.name".to_string(), pod.to_string()),
                ("process.pid".to_string(), "7".to_string()),
            ]
            .into(),
            spans,
        }
    }

    #[test]
    fn spans_hang_under_their_parents_with_durations_and_who_made_them() {
        let app = resource(
            "house-price",
            "house-price-1",
            vec![
                span("b", "a", "inference", "Internal", 300, 425),
                span("a", "", "POST /predict", "Server", 100, 1100),
                span("c", "a", "preprocess", "Internal", 200, 250),
            ],
        );
        let db = resource(
            "db",
            "db-0",
            vec![span("d", "b", "SELECT", "Client", 310, 400)],
        );
        let text = render(&[app, db], 5);
        assert_eq!(
            text,
            "trace t1\n\
             POST /predict  1.000 ms [Server]  (house-price k8s.pod.name=house-price-1)\n\
             ├─ preprocess  0.050 ms\n\
             └─ inference  0.125 ms\n\
             \x20  └─ SELECT  0.090 ms [Client]  (db k8s.pod.name=db-0)\n"
        );
    }

    #[test]
    fn a_span_whose_parent_is_elsewhere_is_a_root_that_says_so_and_only_the_last_traces_show() {
        let mut orphan = span("x", "feed", "GET /", "Server", 0, 10);
        orphan.trace_id = "t2".into();
        let r = resource(
            "shop",
            "shop-1",
            vec![span("a", "", "first", "Server", 0, 1), orphan],
        );
        let text = render(&[r], 1);
        assert!(!text.contains("trace t1"), "{text}");
        assert!(text.contains("remote parent feed"), "{text}");
    }
}

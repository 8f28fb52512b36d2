//! `trace-tree LOG [N]`: the last N (default 3) traces in a Collector's debug-exporter log
//! (verbosity `detailed`), as trees.

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        anyhow::bail!("usage: trace-tree COLLECTOR_LOG [N]");
    };
    let last = match args.next() {
        Some(n) => n.parse()?,
        None => 3,
    };
    let log = std::fs::read_to_string(&path)?;
    print!(
        "{}",
        kotel_e2e::trace_tree::render(&kotel_e2e::debug_exporter::parse(&log), last)
    );
    Ok(())
}

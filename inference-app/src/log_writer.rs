//! Where the JSON log lines go: a shared buffer that a background thread writes to stdout every
//! 50 ms, or sooner once it holds 256 KiB. A request only copies its line into the buffer. A
//! channel per line (tracing-appender) woke the writer thread for nearly every request, and
//! those context switches cost more than formatting the line. When the output cannot keep up,
//! the buffer stops at its cap and further lines are dropped whole and counted, so a slow log
//! reader never stalls a request.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

/// How long a line may wait in the buffer.
const INTERVAL: Duration = Duration::from_millis(50);
/// Past this many buffered bytes the writer thread is woken early.
const HIGH_WATER: usize = 256 * 1024;

struct Shared {
    buf: Mutex<Vec<u8>>,
    cap: usize,
    woken: AtomicBool,
    stop: AtomicBool,
    thread: OnceLock<Thread>,
    dropped: Arc<AtomicU64>,
}

/// The `MakeWriter` for the JSON log layer; cheap to clone.
#[derive(Clone)]
pub struct LogWriter(Arc<Shared>);

/// Writes out what is buffered and stops the writer thread when dropped.
pub struct FlushGuard {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

/// Starts the writer thread over `out`. At most `cap` bytes wait in the buffer; a line that
/// does not fit is dropped and counted in `dropped`.
pub fn spawn<W: Write + Send + 'static>(
    mut out: W,
    cap: usize,
    dropped: Arc<AtomicU64>,
) -> std::io::Result<(LogWriter, FlushGuard)> {
    let shared = Arc::new(Shared {
        buf: Mutex::new(Vec::with_capacity(HIGH_WATER)),
        cap,
        woken: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        thread: OnceLock::new(),
        dropped,
    });
    let s = shared.clone();
    let handle = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || {
            let mut spare = Vec::with_capacity(HIGH_WATER);
            loop {
                std::thread::park_timeout(INTERVAL);
                let stopping = s.stop.load(Ordering::Acquire);
                {
                    let mut buf = s.buf.lock().unwrap_or_else(|p| p.into_inner());
                    std::mem::swap(&mut *buf, &mut spare);
                    s.woken.store(false, Ordering::Release);
                }
                if !spare.is_empty() {
                    // Nowhere to report a failed write of the log itself: the lines are lost.
                    let _ = out.write_all(&spare).and_then(|()| out.flush());
                    spare.clear();
                    spare.shrink_to(HIGH_WATER * 2);
                }
                if stopping {
                    break;
                }
            }
        })?;
    let _ = shared.thread.set(handle.thread().clone());
    Ok((
        LogWriter(shared.clone()),
        FlushGuard {
            shared,
            handle: Some(handle),
        },
    ))
}

impl LogWriter {
    /// Writes `v` as one JSON line, formatted in a buffer of the calling thread's.
    pub fn line(&self, v: &impl serde::Serialize) {
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        BUF.with_borrow_mut(|buf| {
            buf.clear();
            if serde_json::to_writer(&mut *buf, v).is_ok() {
                buf.push(b'\n');
                let _ = self.clone().write_all(buf);
            }
        });
    }
}

impl Write for LogWriter {
    /// The JSON layer writes each event, newline included, with one `write_all`.
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let s = &self.0;
        let len = {
            let mut buf = s.buf.lock().unwrap_or_else(|p| p.into_inner());
            if buf.len() + line.len() > s.cap {
                s.dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(line.len());
            }
            buf.extend_from_slice(line);
            buf.len()
        };
        if len >= HIGH_WATER
            && !s.woken.swap(true, Ordering::AcqRel)
            && let Some(t) = s.thread.get()
        {
            t.unpark();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        self.clone()
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_the_guard_flushes_the_rest() {
        let out = Captured::default();
        let dropped = Arc::new(AtomicU64::new(0));
        let (mut w, guard) = spawn(out.clone(), 1 << 20, dropped.clone()).unwrap();
        for i in 0..1000 {
            w.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1000);
        assert_eq!(lines[0], "line 0");
        assert_eq!(lines[999], "line 999");
        assert_eq!(dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn lines_are_written_without_waiting_for_shutdown() {
        let out = Captured::default();
        let (mut w, _guard) = spawn(out.clone(), 1 << 20, Arc::default()).unwrap();
        w.write_all(b"hello\n").unwrap();
        let start = std::time::Instant::now();
        while out.0.lock().unwrap().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the line was never written"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hello\n");
    }

    /// An output that blocks until released, as a full pipe would.
    struct Stuck(Arc<Mutex<()>>);
    impl Write for Stuck {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            drop(self.0.lock().unwrap());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stuck_output_drops_whole_lines_and_counts_them() {
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().unwrap();
        let dropped = Arc::new(AtomicU64::new(0));
        let (mut w, guard) = spawn(Stuck(gate.clone()), 100, dropped.clone()).unwrap();
        // The first lines may be taken by the writer thread (which then blocks on the gate);
        // after that at most 100 bytes fit, so most of the 1,000 lines are dropped.
        for _ in 0..1000 {
            w.write_all(b"0123456789\n").unwrap();
        }
        assert!(
            dropped.load(Ordering::Relaxed) >= 1000 - 2 * 100 / 11,
            "dropped {}",
            dropped.load(Ordering::Relaxed)
        );
        drop(held);
        drop(guard);
    }
}

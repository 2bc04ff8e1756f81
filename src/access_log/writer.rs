//! Where lines wait for the output: a buffer per thread that logs, and one writer
//! thread per process that does the writes.
//!
//! A worker thread formats lines into its own buffer (thread-local: nothing shared, no
//! lock, no allocation per line). It hands the buffer to the writer through a bounded
//! queue when it holds [`CAP`] bytes, or [`GATHER`] after its first line (a timer task
//! on the worker's runtime, armed once per buffer), or when the thread flushes or
//! ends. When the queue is full, the buffer's lines are dropped and counted.

use std::cell::RefCell;
use std::io::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use super::OUTPUT;

/// The size at which a buffer goes to the writer (a line may go a little past it).
const CAP: usize = 64 * 1024;
/// How long a line may wait in its thread's buffer: the output gets a few large
/// writes a second rather than one per request.
const GATHER: Duration = Duration::from_millis(20);
/// Buffers that may wait for the writer before new ones are dropped.
const QUEUE: usize = 128;

enum Msg {
    Lines(Vec<u8>),
    /// Write everything queued before this, then answer.
    Flush(SyncSender<()>),
    /// Wakes the writer to look at [`REOPEN`].
    Reopen,
}

static SENDER: OnceLock<SyncSender<Msg>> = OnceLock::new();
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// This thread's lines not yet handed over.
#[derive(Default)]
struct Local {
    buf: Vec<u8>,
    lines: u64,
    /// A timer task will hand the buffer over.
    armed: bool,
}

impl Local {
    fn hand_over(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        // The next buffer: about as large as this one came to be.
        let size = (self.buf.len() + self.buf.len() / 4).clamp(4096, CAP + 4096);
        let buf = std::mem::replace(&mut self.buf, Vec::with_capacity(size));
        let lines = std::mem::take(&mut self.lines);
        let tx = SENDER.get_or_init(start_writer);
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            tx.try_send(Msg::Lines(buf))
        {
            DROPPED.fetch_add(lines, Relaxed);
        }
    }
}

impl Drop for Local {
    /// A thread that ends hands its last lines over.
    fn drop(&mut self) {
        self.hand_over();
    }
}

thread_local! {
    static LOCAL: RefCell<Local> = RefCell::new(Local::default());
}

/// Lets `format` append one line to this thread's buffer.
pub(super) fn append(format: impl FnOnce(&mut Vec<u8>)) {
    let arm = LOCAL.try_with(|l| {
        let mut l = l.try_borrow_mut().ok()?;
        format(&mut l.buf);
        l.lines += 1;
        if l.buf.len() >= CAP {
            l.hand_over();
        }
        Some(!std::mem::replace(&mut l.armed, true))
    });
    match arm {
        Ok(Some(true)) => arm_timer(),
        Ok(Some(false)) => {}
        // The thread is ending (its buffer is gone), or (cannot happen) in use.
        Ok(None) | Err(_) => {
            DROPPED.fetch_add(1, Relaxed);
        }
    }
}

/// Hands this thread's buffer over in [`GATHER`], from a task on the thread's runtime
/// (workers' runtimes are single-threaded: the task runs on this thread); at once
/// outside such a runtime.
fn arm_timer() {
    /// Hands the buffer over when the task ends, or is dropped with its runtime.
    struct Due;
    impl Drop for Due {
        fn drop(&mut self) {
            hand_over(true);
        }
    }
    match tokio::runtime::Handle::try_current() {
        Ok(rt) if rt.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread => {
            rt.spawn(async {
                let _due = Due;
                tokio::time::sleep(GATHER).await;
            });
        }
        // No runtime, or one whose tasks may run on another thread.
        _ => hand_over(true),
    }
}

/// Hands this thread's lines to the writer (`disarm`: from the timer).
fn hand_over(disarm: bool) {
    let _ = LOCAL.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            l.hand_over();
            if disarm {
                l.armed = false;
            }
        }
    });
}

/// Hands this thread's lines over, then waits (up to a second) until every buffer
/// queued so far is written.
pub(super) fn flush() {
    hand_over(false);
    if let Some(tx) = SENDER.get() {
        let (done, wait) = sync_channel(1);
        if tx.send(Msg::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(1));
        }
    }
}

/// Set by [`reopen`], taken by the writer after each message: a reopen is never lost
/// to a full queue (which is when the output is slow).
static REOPEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Asks the writer to open its file again; nothing when it is not running.
pub(super) fn reopen() {
    if let Some(tx) = SENDER.get() {
        REOPEN.store(true, Relaxed);
        // Wakes an idle writer; when the queue is full the flag is seen anyway.
        let _ = tx.try_send(Msg::Reopen);
    }
}

fn start_writer() -> SyncSender<Msg> {
    let (tx, rx) = sync_channel(QUEUE);
    let spawned = std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || writer(rx));
    if let Err(e) = spawned {
        tracing::error!("access log writer could not start: {e}");
    }
    tx
}

fn writer(rx: Receiver<Msg>) {
    let mut out = Out::open();
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Lines(buf) => out.write_all(&buf),
            Msg::Flush(done) => {
                let _ = done.send(());
            }
            Msg::Reopen => {}
        }
        if REOPEN.swap(false, Relaxed) {
            out = Out::open();
        }
        let dropped = DROPPED.swap(0, Relaxed);
        if dropped > 0 {
            let note = format!("access log: {dropped} lines dropped (output too slow)\n");
            out.write_all(note.as_bytes());
        }
    }
}

/// The writer's output: the file, or stderr.
enum Out {
    File(std::fs::File),
    Stderr(std::io::Stderr),
}

impl Out {
    fn open() -> Out {
        let Some(path) = OUTPUT.get().and_then(|o| o.path.as_ref()) else {
            return Out::Stderr(std::io::stderr());
        };
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => Out::File(f),
            Err(e) => {
                tracing::error!(path = %path.display(), "access log: cannot open the file, writing to stderr: {e}");
                Out::Stderr(std::io::stderr())
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) {
        let _ = match self {
            Out::File(f) => f.write_all(bytes),
            Out::Stderr(e) => e.lock().write_all(bytes),
        };
    }
}

//! Parked connections: one lot per worker, not a task per connection.
//!
//! Most client connections, most of the time, are idle: accepted and silent, or kept
//! alive between requests. A task per idle connection costs its future and tokio's
//! task header (about 1.4 KiB each in all); here a parked connection is an entry in a
//! slab (the socket, what the connection needs to resume, its deadline), plus the
//! waker tokio keeps for the socket's readiness. That waker belongs to the entry's slot
//! (made once per slot, reused): waking it queues the slot's index, and the lot's one
//! task resumes the connection in a task of its own. The same task closes entries whose
//! idle deadline passed (a sweep every `client_idle / 8`, at least 10 ms, at most 1 s,
//! while anything is parked) and, on a drain, all of them once the drain's linger
//! (see `Connections::linger_until`) is over; one that sends a request meanwhile is
//! served, with `Connection: close`.
//!
//! The `switchyard_connections_parked` gauge counts the entries.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::time::Instant;

use tokio::net::TcpStream;

/// What can wait in a lot: a connection with a socket to watch.
pub(super) trait Parked: Sized + 'static {
    /// The socket whose readiness wakes it.
    fn socket(&self) -> &TcpStream;
    /// True when bytes are already buffered above the socket (TLS plaintext).
    fn has_buffered(&mut self) -> bool;
    /// The worker is draining: it closes instead of parking.
    fn draining(&self) -> bool;
    /// Its idle timeout (sets how often the lot sweeps).
    fn idle_timeout(&self) -> Duration;
    /// Counts it in (`true`) or out of the parked gauge.
    fn count(&self, parked: bool);
}

/// The worker's drain, as the lot sees it.
pub(super) trait Drain {
    /// While draining: when the idle connections that are left are closed.
    fn linger_until(&self) -> Option<Instant>;
    /// Notified (to every waiter) when draining starts.
    fn signal(&self) -> &tokio::sync::Notify;
}

struct Entry<P> {
    parked: P,
    deadline: Instant,
}

struct Slot<P> {
    entry: Option<Entry<P>>,
    waker: Arc<SlotWaker>,
}

thread_local! {
    /// Slots woken by readiness on this worker's thread, and its lot task's waker.
    /// Thread-local rather than locked: a worker is one current-thread runtime, whose
    /// reactor runs (and calls wakers) on that thread only.
    static READY: RefCell<Vec<(u32, u32)>> = const { RefCell::new(Vec::new()) };
    static TASK: RefCell<Option<Waker>> = const { RefCell::new(None) };
}

fn wake_task() {
    if let Some(w) = TASK.with(|t| t.borrow_mut().take()) {
        w.wake();
    }
}

/// The readiness waker of one slot: queues the slot (with the generation of the
/// connection parked in it when the waker was handed to tokio).
struct SlotWaker {
    index: u32,
    generation: AtomicU32,
}

impl Wake for SlotWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let entry = (self.index, self.generation.load(Relaxed));
        READY.with(|r| r.borrow_mut().push(entry));
        wake_task();
    }
}

/// One worker's parked connections.
pub(super) struct Lot<P: Parked> {
    slots: RefCell<Vec<Slot<P>>>,
    /// Serves a connection that became readable.
    resume: fn(P, Instant),
    free: RefCell<Vec<u32>>,
    count: Cell<usize>,
    sweep_every: Cell<Duration>,
}

impl<P: Parked> Lot<P> {
    pub(super) fn new(resume: fn(P, Instant)) -> Rc<Lot<P>> {
        Rc::new(Lot {
            slots: RefCell::new(Vec::new()),
            resume,
            free: RefCell::new(Vec::new()),
            count: Cell::new(0),
            sweep_every: Cell::new(Duration::from_secs(1)),
        })
    }

    /// Parks `parked` until its socket is readable (then `resume` serves it),
    /// `deadline` passes or the worker drains (then it closes).
    pub(super) fn park(self: &Rc<Self>, mut parked: P, deadline: Instant) {
        if parked.draining() {
            return;
        }
        if parked.has_buffered() {
            (self.resume)(parked, deadline);
            return;
        }
        let idle = parked.idle_timeout();
        self.sweep_every
            .set((idle / 8).clamp(Duration::from_millis(10), Duration::from_secs(1)));
        let index = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let mut slots = self.slots.borrow_mut();
            let index = slots.len() as u32;
            slots.push(Slot {
                entry: None,
                waker: Arc::new(SlotWaker {
                    index,
                    generation: AtomicU32::new(0),
                }),
            });
            index
        });
        let waker = {
            let slots = self.slots.borrow();
            let slot = &slots[index as usize];
            slot.waker.generation.fetch_add(1, Relaxed);
            Waker::from(Arc::clone(&slot.waker))
        };
        // Hands tokio this slot's waker in place of the last task's (whose memory
        // then goes). Ready already: serve it now.
        let ready = parked
            .socket()
            .poll_read_ready(&mut Context::from_waker(&waker));
        if let Poll::Ready(r) = ready {
            self.free.borrow_mut().push(index);
            if r.is_ok() {
                (self.resume)(parked, deadline);
            }
            return;
        }
        parked.count(true);
        self.slots.borrow_mut()[index as usize].entry = Some(Entry { parked, deadline });
        let was_empty = self.count.get() == 0;
        self.count.set(self.count.get() + 1);
        if was_empty {
            // The lot task may be waiting without a sweep timer.
            wake_task();
        }
    }

    /// Takes the connection parked in slot `index`, if it is still generation
    /// `generation`.
    fn take(&self, index: u32, generation: Option<u32>) -> Option<Entry<P>> {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(index as usize)?;
        if generation.is_some_and(|g| g != slot.waker.generation.load(Relaxed)) {
            return None;
        }
        let entry = slot.entry.take()?;
        drop(slots);
        self.free.borrow_mut().push(index);
        self.count.set(self.count.get() - 1);
        entry.parked.count(false);
        Some(entry)
    }

    /// Moves every deadline to `at` at the latest.
    fn cap_deadlines(&self, at: Instant) {
        for slot in self.slots.borrow_mut().iter_mut() {
            if let Some(e) = slot.entry.as_mut() {
                e.deadline = e.deadline.min(at);
            }
        }
    }

    /// Closes the connections whose deadline passed (or all of them).
    fn sweep(&self, all: bool) {
        let now = Instant::now();
        let due: Vec<u32> = self
            .slots
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, s)| s.entry.as_ref().is_some_and(|e| all || e.deadline <= now))
            .map(|(i, _)| i as u32)
            .collect();
        for index in due {
            drop(self.take(index, None));
        }
    }

    /// The lot's task: resumes woken connections, closes expired ones, and closes all
    /// of them when the worker drains.
    pub(super) async fn run<D: Drain>(self: Rc<Self>, conns: Rc<D>) {
        let mut next_sweep = Instant::now();
        loop {
            let woken = std::future::poll_fn(|cx| {
                TASK.with(|t| *t.borrow_mut() = Some(cx.waker().clone()));
                match READY.with(|r| r.borrow().is_empty()) {
                    false => Poll::Ready(()),
                    true => Poll::Pending,
                }
            });
            let sweep = async {
                // Looked at on every poll: a park wakes this task.
                std::future::poll_fn(|_| match self.count.get() {
                    0 => Poll::Pending,
                    _ => Poll::Ready(()),
                })
                .await;
                tokio::time::sleep_until(next_sweep).await;
            };
            tokio::select! {
                _ = woken => {}
                _ = sweep => {
                    self.sweep(false);
                    next_sweep = Instant::now() + self.sweep_every.get();
                }
                _ = conns.signal().notified() => {
                    // Each parked connection may still send one request until the
                    // linger ends; the sweep then closes the rest.
                    match conns.linger_until() {
                        Some(at) => {
                            self.cap_deadlines(at);
                            next_sweep = at;
                        }
                        None => self.sweep(true),
                    }
                    continue;
                }
            }
            let woken: Vec<(u32, u32)> = READY.with(|r| std::mem::take(&mut *r.borrow_mut()));
            for (index, generation) in woken {
                if let Some(e) = self.take(index, Some(generation)) {
                    (self.resume)(e.parked, e.deadline);
                }
            }
            if next_sweep <= Instant::now() {
                next_sweep = Instant::now() + self.sweep_every.get();
            }
        }
    }
}

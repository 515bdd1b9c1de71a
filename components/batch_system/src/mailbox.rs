use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use parking_lot::Mutex;

/// A state machine driven by the batch system.
pub trait Fsm: Send + 'static {
    type Message: Send + 'static;

    /// A stopped FSM is dropped by the poller instead of being released.
    fn is_stopped(&self) -> bool;
}

const IDLE: u8 = 0;
const NOTIFIED: u8 = 1;
const DROPPED: u8 = 2;

/// Why a message could not be delivered; the message is handed back.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError<M> {
    /// The mailbox is at capacity: the receiver is overloaded.
    Full(M),
    /// The FSM has stopped; its mailbox is closed.
    Disconnected(M),
    /// No mailbox is registered under that address.
    NotFound(M),
}

impl<M> SendError<M> {
    pub fn into_inner(self) -> M {
        match self {
            SendError::Full(m) | SendError::Disconnected(m) | SendError::NotFound(m) => m,
        }
    }
}

/// Where scheduled FSMs go; implemented by the poller pool.
pub(crate) trait Schedule<F: Fsm>: Send + Sync {
    fn schedule(&self, cell: FsmCell<F>);
}

pub(crate) struct MailboxInner<F: Fsm> {
    /// Bounded by `capacity`, checked on send: a preallocated bounded
    /// channel would cost `capacity` slots of memory per idle region.
    tx: Sender<F::Message>,
    capacity: usize,
    rx: Receiver<F::Message>,
    /// Internal lane for messages whose volume the sender bounds itself
    /// (e.g. apply tasks, bounded by raft's in-flight window); see `force_send`.
    force_tx: Sender<F::Message>,
    force_rx: Receiver<F::Message>,
    status: AtomicU8,
    /// Holds the FSM while it is idle; empty while a poller owns it.
    slot: Mutex<Option<Box<F>>>,
    scheduler: Arc<dyn Schedule<F>>,
}

/// The address of one FSM. Cloning is cheap; all clones share one queue.
pub struct Mailbox<F: Fsm> {
    inner: Arc<MailboxInner<F>>,
}

impl<F: Fsm> Clone for Mailbox<F> {
    fn clone(&self) -> Self {
        Mailbox { inner: self.inner.clone() }
    }
}

impl<F: Fsm> Mailbox<F> {
    /// Creates a mailbox holding `fsm` idle, with room for `capacity` messages.
    pub(crate) fn new(fsm: Box<F>, capacity: usize, scheduler: Arc<dyn Schedule<F>>) -> Self {
        assert!(capacity > 0, "mailbox capacity must be positive");
        let (tx, rx) = channel::unbounded();
        let (force_tx, force_rx) = channel::unbounded();
        Mailbox {
            inner: Arc::new(MailboxInner {
                tx,
                capacity,
                rx,
                force_tx,
                force_rx,
                status: AtomicU8::new(IDLE),
                slot: Mutex::new(Some(fsm)),
                scheduler,
            }),
        }
    }

    /// Queues `msg` and schedules the FSM if it was idle.
    pub fn send(&self, msg: F::Message) -> Result<(), SendError<F::Message>> {
        if self.inner.status.load(Ordering::Acquire) == DROPPED {
            return Err(SendError::Disconnected(msg));
        }
        // Concurrent senders may overshoot by a few messages; the bound
        // is about overload, not exact accounting.
        if self.inner.rx.len() >= self.inner.capacity {
            return Err(SendError::Full(msg));
        }
        match self.inner.tx.try_send(msg) {
            Ok(()) => {
                self.notify();
                Ok(())
            }
            Err(TrySendError::Full(m)) => Err(SendError::Full(m)),
            Err(TrySendError::Disconnected(m)) => Err(SendError::Disconnected(m)),
        }
    }

    /// Queues `msg` without the capacity check. Only for internal messages
    /// whose volume the sender already bounds (one apply task per raft ready,
    /// one apply result per apply round), where dropping is not an option and
    /// blocking could deadlock two pools waiting on each other.
    pub fn force_send(&self, msg: F::Message) -> Result<(), SendError<F::Message>> {
        if self.inner.status.load(Ordering::Acquire) == DROPPED {
            return Err(SendError::Disconnected(msg));
        }
        self.inner.force_tx.send(msg).map_err(|e| SendError::Disconnected(e.into_inner()))?;
        self.notify();
        Ok(())
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_closed(&self) -> bool {
        self.inner.status.load(Ordering::Acquire) == DROPPED
    }

    /// Schedules the FSM even with no new message (e.g. to resume work).
    pub fn notify(&self) {
        self.inner.notify();
    }

    pub(crate) fn close(&self) {
        self.inner.status.store(DROPPED, Ordering::Release);
        self.inner.slot.lock().take();
    }
}

impl<F: Fsm> MailboxInner<F> {
    fn len(&self) -> usize {
        self.rx.len() + self.force_rx.len()
    }

    fn notify(self: &Arc<Self>) {
        if self
            .status
            .compare_exchange(IDLE, NOTIFIED, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Already scheduled (a poller will see the message) or dropped.
            return;
        }
        let fsm = self.slot.lock().take().expect("idle mailbox must hold its fsm");
        self.scheduler.schedule(FsmCell { fsm, mailbox: self.clone(), reschedule: false });
    }
}

/// An FSM taken out of its mailbox by a poller for one round.
pub struct FsmCell<F: Fsm> {
    pub fsm: Box<F>,
    mailbox: Arc<MailboxInner<F>>,
    reschedule: bool,
}

impl<F: Fsm> FsmCell<F> {
    /// Takes the next queued message, if any; internal messages come first.
    pub fn try_recv(&self) -> Option<F::Message> {
        self.mailbox.force_rx.try_recv().or_else(|_| self.mailbox.rx.try_recv()).ok()
    }

    /// Number of messages still queued.
    pub fn pending(&self) -> usize {
        self.mailbox.len()
    }

    /// Asks for the FSM to be polled again after this round even if no
    /// message arrives (it has work left, e.g. a new raft ready).
    pub fn schedule_again(&mut self) {
        self.reschedule = true;
    }

    /// Returns the FSM to its mailbox, or drops it if it stopped. If messages
    /// arrived while the poller owned it, the FSM is scheduled again; this
    /// re-check after publishing IDLE is what prevents lost wake-ups.
    pub(crate) fn release(self) {
        let FsmCell { fsm, mailbox, reschedule } = self;
        if fsm.is_stopped() {
            mailbox.status.store(DROPPED, Ordering::Release);
            return;
        }
        *mailbox.slot.lock() = Some(fsm);
        mailbox.status.store(IDLE, Ordering::SeqCst);
        if reschedule || mailbox.len() > 0 {
            mailbox.notify();
        }
    }
}

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam::channel::{self, Receiver, Sender};
use tracing::info;

use crate::mailbox::{Fsm, FsmCell, Mailbox, Schedule};
use crate::metrics::{FSMS_PER_POLL, POLL_DURATION};
use crate::router::Router;

/// Limits of one batch system.
#[derive(Clone, Debug)]
pub struct Config {
    /// Poller threads.
    pub pool_size: usize,
    /// At most this many FSMs are handled in one poll round (`max_batch_size`).
    pub max_batch_size: usize,
    /// Queued messages per mailbox before senders get `Full`.
    pub mailbox_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { pool_size: 2, max_batch_size: 256, mailbox_capacity: 4096 }
    }
}

/// Hooks a poller calls every round, in this order: `begin`,
/// `handle_control` (if the control FSM is in the batch), `handle_normal`
/// for every normal FSM, and finally `end` with all normal FSMs of the round.
pub trait PollHandler<N: Fsm, C: Fsm>: Send + 'static {
    fn begin(&mut self, batch_size: usize);
    fn handle_control(&mut self, control: &mut FsmCell<C>);
    fn handle_normal(&mut self, normal: &mut FsmCell<N>);
    fn end(&mut self, normals: &mut [FsmCell<N>]);
    /// Called once when the poller thread exits.
    fn shutdown(&mut self) {}
}

/// Builds one handler per poller thread.
pub trait HandlerBuilder<N: Fsm, C: Fsm>: Send {
    type Handler: PollHandler<N, C>;
    fn build(&mut self) -> Self::Handler;
}

enum Task<N: Fsm, C: Fsm> {
    Normal(FsmCell<N>),
    Control(FsmCell<C>),
    Stop,
}

/// The scheduling queue. It is unbounded in type but bounded in practice:
/// each FSM is in it at most once (a mailbox schedules only on IDLE -> NOTIFIED).
struct Scheduler<N: Fsm, C: Fsm> {
    tx: Sender<Task<N, C>>,
}

impl<N: Fsm, C: Fsm> Schedule<N> for Scheduler<N, C> {
    fn schedule(&self, cell: FsmCell<N>) {
        // Fails only after shutdown; the FSM is dropped then.
        let _ = self.tx.send(Task::Normal(cell));
    }
}

struct ControlScheduler<N: Fsm, C: Fsm> {
    tx: Sender<Task<N, C>>,
}

impl<N: Fsm, C: Fsm> Schedule<C> for ControlScheduler<N, C> {
    fn schedule(&self, cell: FsmCell<C>) {
        let _ = self.tx.send(Task::Control(cell));
    }
}

/// A named pool of pollers plus its router.
pub struct BatchSystem<N: Fsm, C: Fsm> {
    name: String,
    cfg: Config,
    router: Router<N, C>,
    tx: Sender<Task<N, C>>,
    rx: Receiver<Task<N, C>>,
    workers: Vec<JoinHandle<()>>,
}

impl<N: Fsm, C: Fsm> BatchSystem<N, C> {
    /// Creates the system with its control FSM; no thread runs until [`spawn`](Self::spawn).
    pub fn new(name: &str, cfg: Config, control: Box<C>) -> Self {
        assert!(cfg.pool_size > 0 && cfg.max_batch_size > 0, "invalid batch config {cfg:?}");
        let (tx, rx) = channel::unbounded();
        let control_mb = Mailbox::new(
            control,
            cfg.mailbox_capacity,
            Arc::new(ControlScheduler { tx: tx.clone() }),
        );
        let router =
            Router::new(control_mb, Arc::new(Scheduler { tx: tx.clone() }), cfg.mailbox_capacity);
        BatchSystem { name: name.to_owned(), cfg, router, tx, rx, workers: vec![] }
    }

    pub fn router(&self) -> Router<N, C> {
        self.router.clone()
    }

    /// Starts `pool_size` poller threads.
    pub fn spawn<B: HandlerBuilder<N, C>>(&mut self, mut builder: B) {
        for i in 0..self.cfg.pool_size {
            let mut poller = Poller {
                rx: self.rx.clone(),
                handler: builder.build(),
                max_batch_size: self.cfg.max_batch_size,
                pool: self.name.clone(),
            };
            let h = std::thread::Builder::new()
                .name(format!("{}-{}", self.name, i))
                .spawn(move || poller.run())
                .expect("spawn poller thread");
            self.workers.push(h);
        }
    }

    /// Stops every poller after its current round and drops all FSMs.
    pub fn shutdown(&mut self) {
        if self.workers.is_empty() {
            return;
        }
        info!(pool = %self.name, "shutting down batch system");
        self.router.close_all();
        for _ in &self.workers {
            let _ = self.tx.send(Task::Stop);
        }
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        // Drop whatever was scheduled but never polled.
        while self.rx.try_recv().is_ok() {}
    }
}

impl<N: Fsm, C: Fsm> Drop for BatchSystem<N, C> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Poller<N: Fsm, C: Fsm, H> {
    rx: Receiver<Task<N, C>>,
    handler: H,
    max_batch_size: usize,
    pool: String,
}

impl<N: Fsm, C: Fsm, H: PollHandler<N, C>> Poller<N, C, H> {
    fn run(&mut self) {
        let mut normals: Vec<FsmCell<N>> = Vec::with_capacity(self.max_batch_size);
        let mut control: Option<FsmCell<C>> = None;
        let fsms_per_poll = FSMS_PER_POLL.with_label_values(&[&self.pool]);
        let poll_duration = POLL_DURATION.with_label_values(&[&self.pool]);
        'outer: loop {
            // Block for the first task, then take what is ready up to the limit.
            let mut stop = false;
            match self.rx.recv() {
                Ok(t) => stop |= self.push(t, &mut normals, &mut control),
                Err(_) => break,
            }
            while !stop && normals.len() + usize::from(control.is_some()) < self.max_batch_size {
                match self.rx.try_recv() {
                    Ok(t) => stop |= self.push(t, &mut normals, &mut control),
                    Err(_) => break,
                }
            }
            let start = Instant::now();
            let size = normals.len() + usize::from(control.is_some());
            if size > 0 {
                self.handler.begin(size);
                if let Some(c) = control.as_mut() {
                    self.handler.handle_control(c);
                }
                for n in normals.iter_mut() {
                    self.handler.handle_normal(n);
                }
                self.handler.end(&mut normals);
                if let Some(c) = control.take() {
                    c.release();
                }
                for n in normals.drain(..) {
                    n.release();
                }
                fsms_per_poll.observe(size as f64);
                poll_duration.observe(start.elapsed().as_secs_f64());
            }
            if stop {
                break 'outer;
            }
        }
        self.handler.shutdown();
    }

    /// Adds a task to the round; returns true on `Stop`.
    fn push(
        &self,
        t: Task<N, C>,
        normals: &mut Vec<FsmCell<N>>,
        control: &mut Option<FsmCell<C>>,
    ) -> bool {
        match t {
            Task::Normal(n) => normals.push(n),
            Task::Control(c) => {
                assert!(control.is_none(), "control fsm scheduled twice");
                *control = Some(c);
            }
            Task::Stop => return true,
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::SendError;

    struct Counter {
        count: Arc<AtomicUsize>,
        stopped: bool,
    }

    #[derive(Debug, PartialEq)]
    enum Msg {
        Inc,
        Stop,
    }

    impl Fsm for Counter {
        type Message = Msg;
        fn is_stopped(&self) -> bool {
            self.stopped
        }
    }

    struct Handler {
        rounds: Arc<AtomicUsize>,
        max_seen: Arc<AtomicUsize>,
    }

    impl PollHandler<Counter, Counter> for Handler {
        fn begin(&mut self, size: usize) {
            self.max_seen.fetch_max(size, Ordering::SeqCst);
        }
        fn handle_control(&mut self, c: &mut FsmCell<Counter>) {
            self.handle_normal(c)
        }
        fn handle_normal(&mut self, n: &mut FsmCell<Counter>) {
            while let Some(m) = n.try_recv() {
                match m {
                    Msg::Inc => {
                        n.fsm.count.fetch_add(1, Ordering::SeqCst);
                    }
                    Msg::Stop => n.fsm.stopped = true,
                }
            }
        }
        fn end(&mut self, _: &mut [FsmCell<Counter>]) {
            self.rounds.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Builder(Arc<AtomicUsize>, Arc<AtomicUsize>);
    impl HandlerBuilder<Counter, Counter> for Builder {
        type Handler = Handler;
        fn build(&mut self) -> Handler {
            Handler { rounds: self.0.clone(), max_seen: self.1.clone() }
        }
    }

    fn counter() -> (Box<Counter>, Arc<AtomicUsize>) {
        let c = Arc::new(AtomicUsize::new(0));
        (Box::new(Counter { count: c.clone(), stopped: false }), c)
    }

    fn system(cfg: Config) -> (BatchSystem<Counter, Counter>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let (ctrl, _) = counter();
        let mut sys = BatchSystem::new("test", cfg, ctrl);
        let rounds = Arc::new(AtomicUsize::new(0));
        let max_seen = Arc::new(AtomicUsize::new(0));
        sys.spawn(Builder(rounds.clone(), max_seen.clone()));
        (sys, rounds, max_seen)
    }

    fn wait_until(mut f: impl FnMut() -> bool) {
        for _ in 0..2000 {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("condition not reached in time");
    }

    #[test]
    fn messages_reach_their_fsm() {
        let (sys, _, _) = system(Config::default());
        let router = sys.router();
        let mut counts = vec![];
        for id in 0..10 {
            let (fsm, c) = counter();
            router.register(id, fsm);
            counts.push(c);
        }
        for id in 0..10u64 {
            for _ in 0..=id {
                router.send(id, Msg::Inc).unwrap();
            }
        }
        wait_until(|| counts.iter().enumerate().all(|(i, c)| c.load(Ordering::SeqCst) == i + 1));
        assert!(matches!(router.send(99, Msg::Inc), Err(SendError::NotFound(_))));
    }

    /// Many threads race sends against pollers releasing the FSM; every
    /// message must be handled (a lost wake-up would leave some queued forever).
    #[test]
    fn no_lost_wakeup_under_contention() {
        let (sys, _, _) =
            system(Config { pool_size: 2, max_batch_size: 4, mailbox_capacity: 1 << 16 });
        let router = sys.router();
        let mut counts = vec![];
        for id in 0..8 {
            let (fsm, c) = counter();
            router.register(id, fsm);
            counts.push(c);
        }
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let r = router.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let id = (i + t) % 8;
                        loop {
                            match r.send(id, Msg::Inc) {
                                Ok(()) => break,
                                Err(SendError::Full(_)) => std::thread::yield_now(),
                                Err(e) => panic!("unexpected {:?}", e.into_inner().is_stop()),
                            }
                        }
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        wait_until(|| counts.iter().map(|c| c.load(Ordering::SeqCst)).sum::<usize>() == 80_000);
        // All mailboxes drained and idle.
        wait_until(|| (0..8).all(|id| router.mailbox(id).unwrap().is_empty()));
    }

    impl Msg {
        fn is_stop(&self) -> bool {
            matches!(self, Msg::Stop)
        }
    }

    #[test]
    fn batches_respect_max_batch_size() {
        let (sys, rounds, max_seen) =
            system(Config { pool_size: 1, max_batch_size: 3, mailbox_capacity: 16 });
        let router = sys.router();
        let mut counts = vec![];
        for id in 0..20 {
            let (fsm, c) = counter();
            router.register(id, fsm);
            counts.push(c);
        }
        for id in 0..20 {
            router.send(id, Msg::Inc).unwrap();
        }
        wait_until(|| counts.iter().all(|c| c.load(Ordering::SeqCst) == 1));
        assert!(max_seen.load(Ordering::SeqCst) <= 3);
        assert!(rounds.load(Ordering::SeqCst) >= 7, "20 fsms need >= 7 rounds of 3");
    }

    #[test]
    fn full_mailbox_rejects_and_returns_message() {
        let (ctrl, _) = counter();
        // No pollers: messages stay queued.
        let sys: BatchSystem<Counter, Counter> = BatchSystem::new(
            "idle",
            Config { pool_size: 1, max_batch_size: 1, mailbox_capacity: 2 },
            ctrl,
        );
        let router = sys.router();
        let (fsm, _) = counter();
        router.register(1, fsm);
        router.send(1, Msg::Inc).unwrap();
        router.send(1, Msg::Inc).unwrap();
        assert!(matches!(router.send(1, Msg::Inc), Err(SendError::Full(Msg::Inc))));
    }

    #[test]
    fn stopped_fsm_is_dropped_and_control_works() {
        let (sys, _, _) = system(Config::default());
        let router = sys.router();
        let (fsm, c) = counter();
        let mb = router.register(7, fsm);
        router.send(7, Msg::Inc).unwrap();
        router.send(7, Msg::Stop).unwrap();
        wait_until(|| mb.is_closed());
        assert_eq!(c.load(Ordering::SeqCst), 1);
        assert!(matches!(mb.send(Msg::Inc), Err(SendError::Disconnected(_))));
        router.send_control(Msg::Inc).unwrap();
    }

    #[test]
    fn force_send_bypasses_capacity_and_comes_first() {
        let (ctrl, _) = counter();
        let sys: BatchSystem<Counter, Counter> = BatchSystem::new(
            "idle",
            Config { pool_size: 1, max_batch_size: 1, mailbox_capacity: 1 },
            ctrl,
        );
        let router = sys.router();
        let (fsm, _) = counter();
        let mb = router.register(1, fsm);
        router.send(1, Msg::Inc).unwrap();
        assert!(matches!(router.send(1, Msg::Inc), Err(SendError::Full(_))));
        router.force_send(1, Msg::Stop).unwrap();
        router.force_send(1, Msg::Stop).unwrap();
        assert_eq!(mb.len(), 3);
    }

    #[test]
    fn shutdown_joins_pollers() {
        let (mut sys, _, _) = system(Config::default());
        let router = sys.router();
        let (fsm, _) = counter();
        router.register(1, fsm);
        sys.shutdown();
        assert!(router.send(1, Msg::Inc).is_err());
    }
}

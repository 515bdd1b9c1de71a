use std::sync::Arc;

use dashmap::DashMap;

use crate::mailbox::{Fsm, Mailbox, Schedule, SendError};

/// Maps addresses (region ids) to the mailboxes of normal FSMs, plus the one
/// control mailbox. Cloning shares the same table.
pub struct Router<N: Fsm, C: Fsm> {
    normals: Arc<DashMap<u64, Mailbox<N>>>,
    control: Mailbox<C>,
    normal_scheduler: Arc<dyn Schedule<N>>,
    mailbox_capacity: usize,
}

impl<N: Fsm, C: Fsm> Clone for Router<N, C> {
    fn clone(&self) -> Self {
        Router {
            normals: self.normals.clone(),
            control: self.control.clone(),
            normal_scheduler: self.normal_scheduler.clone(),
            mailbox_capacity: self.mailbox_capacity,
        }
    }
}

impl<N: Fsm, C: Fsm> Router<N, C> {
    pub(crate) fn new(
        control: Mailbox<C>,
        normal_scheduler: Arc<dyn Schedule<N>>,
        mailbox_capacity: usize,
    ) -> Self {
        Router { normals: Arc::new(DashMap::new()), control, normal_scheduler, mailbox_capacity }
    }

    /// Registers `fsm` under `addr`, replacing (and closing) any previous mailbox.
    pub fn register(&self, addr: u64, fsm: Box<N>) -> Mailbox<N> {
        let mailbox = Mailbox::new(fsm, self.mailbox_capacity, self.normal_scheduler.clone());
        if let Some(old) = self.normals.insert(addr, mailbox.clone()) {
            old.close();
        }
        mailbox
    }

    /// Registers `fsm` and schedules it once so it can initialise itself.
    pub fn register_and_notify(&self, addr: u64, fsm: Box<N>) {
        self.register(addr, fsm).notify();
    }

    /// Removes the mailbox under `addr`; later sends get `NotFound`.
    pub fn unregister(&self, addr: u64) {
        if let Some((_, mb)) = self.normals.remove(&addr) {
            mb.close();
        }
    }

    pub fn mailbox(&self, addr: u64) -> Option<Mailbox<N>> {
        self.normals.get(&addr).map(|m| m.clone())
    }

    /// Sends `msg` to the FSM at `addr`.
    pub fn send(&self, addr: u64, msg: N::Message) -> Result<(), SendError<N::Message>> {
        match self.normals.get(&addr) {
            Some(mb) => mb.send(msg),
            None => Err(SendError::NotFound(msg)),
        }
    }

    /// Like [`Mailbox::force_send`], addressed by region.
    pub fn force_send(&self, addr: u64, msg: N::Message) -> Result<(), SendError<N::Message>> {
        match self.normals.get(&addr) {
            Some(mb) => mb.force_send(msg),
            None => Err(SendError::NotFound(msg)),
        }
    }

    pub fn force_send_control(&self, msg: C::Message) -> Result<(), SendError<C::Message>> {
        self.control.force_send(msg)
    }

    pub fn send_control(&self, msg: C::Message) -> Result<(), SendError<C::Message>> {
        self.control.send(msg)
    }

    /// Sends a message built by `f` to every normal FSM; full mailboxes are skipped.
    pub fn broadcast_normal(&self, mut f: impl FnMut() -> N::Message) {
        for mb in self.normals.iter() {
            let _ = mb.send(f());
        }
    }

    pub fn len(&self) -> usize {
        self.normals.len()
    }

    pub fn is_empty(&self) -> bool {
        self.normals.is_empty()
    }

    /// Addresses of all registered normal FSMs.
    pub fn addresses(&self) -> Vec<u64> {
        self.normals.iter().map(|e| *e.key()).collect()
    }

    /// Closes every mailbox so that pollers drop their FSMs.
    pub(crate) fn close_all(&self) {
        for mb in self.normals.iter() {
            mb.close();
        }
        self.normals.clear();
        self.control.close();
    }
}

//! The storage thread: the only place the [`Store`] is touched. Async code hands it jobs and
//! awaits the answers, so SQLite never blocks a tokio worker.
//!
//! Jobs run in arrival order. Appends that arrive together (from any channel) are written in
//! one transaction (group commit) and answered only after it committed: an `Ack` always means
//! archived. If a group fails, each of its appends is retried in its own transaction, so one
//! bad item cannot fail its neighbours ([`Store::append_groups`]).

use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;

use crate::error::{RelayError, Result};
use crate::store::{Append, Store};

/// Most jobs taken from the queue per round (bounds one group commit).
const MAX_ROUND: usize = 1024;

type Call = Box<dyn FnOnce(&mut dyn Store) + Send>;
/// What is done with the result of a group commit (answers the append's caller).
type Done = Box<dyn FnOnce(Result<Vec<Vec<u64>>>) + Send>;
/// A lookup that decides what to append in the same round.
type Plan = Box<dyn FnOnce(&mut dyn Store) -> Option<(Vec<Append>, Done)> + Send>;

enum Job {
    Call(Call),
    Append(Vec<Append>, Done),
    Plan(Plan),
}

/// Handle of the storage thread (cheap to clone).
#[derive(Clone)]
pub struct Storage {
    tx: std_mpsc::Sender<Job>,
}

fn gone() -> RelayError {
    RelayError::Storage("storage thread stopped".to_string())
}

impl Storage {
    /// Starts the storage thread owning `store`.
    pub fn start(store: Box<dyn Store>) -> Result<Storage> {
        let (tx, rx) = std_mpsc::channel();
        std::thread::Builder::new().name("skytale-storage".to_string()).spawn(move || run(store, rx))?;
        Ok(Storage { tx })
    }

    /// Runs `f` on the storage thread (after every job queued before it) and returns its result.
    pub async fn call<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Store) -> Result<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job = Job::Call(Box::new(move |s: &mut dyn Store| {
            let _ = tx.send(f(s));
        }));
        self.tx.send(job).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Archives `items` (group-committed with whatever else is queued); returns the welcome ids
    /// per item once the transaction committed.
    pub async fn append(&self, items: Vec<Append>) -> Result<Vec<Vec<u64>>> {
        let (tx, rx) = oneshot::channel();
        let done: Done = Box::new(move |res| {
            let _ = tx.send(res);
        });
        self.tx.send(Job::Append(items, done)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Runs `plan` on the storage thread (after every job queued before it, like
    /// [`Storage::call`]) and archives the appends it returns in the same round, group-committed
    /// with whatever else is queued: one hand-off to this thread and one answer, instead of a
    /// lookup round and an append round. Returns the plan's answer with the append's result
    /// (the welcome ids per item once committed; empty when the plan appended nothing). An
    /// error of the plan itself is returned as is, and nothing is appended.
    pub async fn plan_append<R, F>(&self, plan: F) -> Result<(R, Result<Vec<Vec<u64>>>)>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Store) -> Result<(R, Vec<Append>)> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<(R, Result<Vec<Vec<u64>>>)>>();
        let job = Job::Plan(Box::new(move |s: &mut dyn Store| match plan(s) {
            Err(e) => {
                let _ = tx.send(Err(e));
                None
            }
            Ok((r, appends)) if appends.is_empty() => {
                let _ = tx.send(Ok((r, Ok(Vec::new()))));
                None
            }
            Ok((r, appends)) => {
                let done: Done = Box::new(move |res| {
                    let _ = tx.send(Ok((r, res)));
                });
                Some((appends, done))
            }
        }));
        self.tx.send(job).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

type Pending = Vec<(Vec<Append>, Done)>;

fn run(mut store: Box<dyn Store>, rx: std_mpsc::Receiver<Job>) {
    let mut pending: Pending = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut job = Some(first);
        let mut taken = 0;
        while let Some(j) = job.take() {
            match j {
                Job::Append(items, tx) => pending.push((items, tx)),
                Job::Call(f) => {
                    flush(store.as_mut(), &mut pending);
                    f(store.as_mut());
                }
                Job::Plan(f) => {
                    flush(store.as_mut(), &mut pending);
                    if let Some(planned) = f(store.as_mut()) {
                        pending.push(planned);
                    }
                }
            }
            taken += 1;
            if taken < MAX_ROUND {
                job = rx.try_recv().ok();
            }
        }
        flush(store.as_mut(), &mut pending);
        if let Err(e) = store.maintain() {
            tracing::warn!(error = %e, "storage upkeep failed");
        }
    }
    tracing::debug!("storage thread stopped");
}

/// Writes all pending appends (one group commit; see [`Store::append_groups`]) and answers them.
fn flush(store: &mut dyn Store, pending: &mut Pending) {
    if pending.is_empty() {
        return;
    }
    let results = {
        let groups: Vec<&[Append]> = pending.iter().map(|(items, _)| items.as_slice()).collect();
        store.append_groups(&groups)
    };
    let mut results = results.into_iter();
    for (_, done) in pending.drain(..) {
        let res = results.next().unwrap_or_else(|| Err(RelayError::Storage("group commit lost an answer".to_string())));
        done(res);
    }
}

//! The storage thread: the [`Store`] is touched by one thread at a time, never by two, and
//! never by an async task waiting for another's turn. Async code hands jobs over and awaits the
//! answers.
//!
//! Jobs run in arrival order. Appends that arrive together (from any channel) are written in
//! one transaction (group commit) and answered only after it committed: an `Ack` always means
//! archived. If a group fails, each of its appends is retried in its own transaction, so one
//! bad item cannot fail its neighbours ([`Store::append_groups`]).
//!
//! **Plans join the round's group commit.** A channel's sends are decided by a plan (dedupe,
//! epoch, quota) that reads the store and returns what to append. Plans of several channels
//! that queue up together are all run before the round's one commit, so a burst across many
//! channels costs one transaction, not one per channel. A plan reads through [`PlanReads`]: the
//! store as it will be once the round's pending appends are written. An org's usage counts
//! the pending payload bytes of that org (a quota is never overrun by sends decided in the same
//! round), and a read of a channel that has appends pending commits them first (a channel's
//! sequence is always read from what is written; its actor never has two plans in one round
//! anyway, since it awaits each).
//!
//! **An idle store is written in place.** Handing a job to the thread and its answer back
//! costs two thread wake-ups, each as dear as the write itself on a virtual machine whose idle
//! vCPUs halt (~20–60 µs each on the 2-vCPU benchmark hosts, see `BENCHMARKS.md`). So when a
//! small planned append (a channel's sends, at most [`MAX_INLINE_ITEMS`] items and
//! [`MAX_INLINE_BYTES`] of payload) finds the store idle
//! (nobody holds it and nothing is queued) and the backend says its writes are short
//! ([`Store::writes_inline`]: SQLite with the WAL in the page cache, not the NATS cluster
//! store), the caller runs it itself, on its own thread, and answers at once. It
//! never waits: if the store is busy it queues the job as before, and whoever holds the store
//! (the thread, or another caller writing in place) takes it in the next round with whatever
//! else queued up, so appends that arrive together are still committed together. Upkeep
//! ([`Store::maintain`], which may sync files) stays on the thread: a write in place that leaves
//! upkeep due hands it over.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::error::{RelayError, Result};
use crate::store::{Append, ChannelRow, Dup, OrgUsage, Store};

/// Most jobs taken from the queue per round (bounds one group commit).
const MAX_ROUND: usize = 1024;
/// Most items a planned append may have to be written in place: a few sends commit in about
/// 0.1 ms; a channel's flood batch (hundreds) or a commit with its welcome for hundreds of
/// recipients would hold the tokio worker for milliseconds, so those go to the thread.
pub const MAX_INLINE_ITEMS: usize = 16;
/// Most payload bytes a planned append may have to be written in place (a few frames of the
/// largest size would hold the worker for milliseconds too).
pub const MAX_INLINE_BYTES: usize = 64 * 1024;

type Call = Box<dyn FnOnce(&mut dyn Store) + Send>;
/// What is done with the result of a group commit (answers the append's caller).
type Done = Box<dyn FnOnce(Result<Vec<Vec<u64>>>) + Send>;
/// A lookup that decides what to append in the same round.
type Plan = Box<dyn FnOnce(&mut dyn PlanReads) -> Option<(Vec<Append>, Done)> + Send>;

/// What a plan ([`Storage::plan_append`]) may read: the store as it will be once the appends
/// pending in the plan's round are committed (see the module docs). Reads only: a plan decides,
/// the round writes.
pub trait PlanReads {
    /// A channel's state; commits the round's pending appends first if any is for `name`.
    fn channel(&mut self, name: &str) -> Result<Option<ChannelRow>>;
    /// An org's usage, including the payload bytes (items and welcomes) of the org's appends
    /// pending in the round.
    fn org_usage(&mut self, org: &str) -> Result<OrgUsage>;
    /// An archived item by its dedupe key ([`Store::find_dup`]); commits the round's pending
    /// appends first if any is for `channel`.
    fn find_dup(&mut self, channel: &str, sender: &str, client_msg_id: &str) -> Result<Option<Dup>>;
}

/// The store seen by a plan in a round with `pending` appends not yet written.
struct RoundView<'a> {
    store: &'a mut dyn Store,
    pending: &'a mut Pending,
}

impl RoundView<'_> {
    /// Commits the pending appends if one of them is for `channel`.
    fn settle(&mut self, channel: &str) {
        if self.pending.channels.contains(channel) {
            flush(self.store, self.pending);
        }
    }
}

impl PlanReads for RoundView<'_> {
    fn channel(&mut self, name: &str) -> Result<Option<ChannelRow>> {
        self.settle(name);
        self.store.channel(name)
    }

    fn org_usage(&mut self, org: &str) -> Result<OrgUsage> {
        let mut usage = self.store.org_usage(org)?;
        let pending = self.pending.org_bytes.get(org).copied().unwrap_or(0);
        usage.archive_bytes = usage.archive_bytes.saturating_add(pending);
        Ok(usage)
    }

    fn find_dup(&mut self, channel: &str, sender: &str, client_msg_id: &str) -> Result<Option<Dup>> {
        self.settle(channel);
        self.store.find_dup(channel, sender, client_msg_id)
    }
}

enum Job {
    Call(Call),
    Append(Vec<Append>, Done),
    Plan(Plan),
}

/// What the thread waits for.
#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Upkeep is due (a write in place left it to the thread).
    upkeep: bool,
    /// Every handle is gone: the thread stops once the queue is empty.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    store: Mutex<Box<dyn Store>>,
    /// The backend allows writes in place ([`Store::writes_inline`]).
    inline: bool,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A job that panicked left the store as SQLite left it (an unfinished transaction is
    // rolled back when the next one begins); the queue is always consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn enqueue(&self, job: Job) -> Result<()> {
        let mut q = lock(&self.queue);
        if q.closed {
            return Err(gone());
        }
        q.jobs.push_back(job);
        drop(q);
        self.ready.notify_one();
        Ok(())
    }

    /// The store, if it is idle: nobody holds it and nothing is queued (so a job run now keeps
    /// the arrival order).
    fn idle_store(&self) -> Option<MutexGuard<'_, Box<dyn Store>>> {
        if !self.inline {
            return None;
        }
        let store = self.store.try_lock().ok()?;
        if !lock(&self.queue).jobs.is_empty() {
            return None;
        }
        Some(store)
    }

    /// After a write in place: hands due upkeep to the thread.
    fn after_inline(&self, store: &dyn Store) {
        if store.upkeep_due() {
            lock(&self.queue).upkeep = true;
            self.ready.notify_one();
        }
    }
}

/// Stops the thread when the last handle is dropped (after the queued jobs).
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        lock(&self.0.queue).closed = true;
        self.0.ready.notify_one();
    }
}

/// Handle of the storage thread (cheap to clone).
#[derive(Clone)]
pub struct Storage {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

fn gone() -> RelayError {
    RelayError::Storage("storage thread stopped".to_string())
}

impl Storage {
    /// Starts the storage thread owning `store`.
    pub fn start(store: Box<dyn Store>) -> Result<Storage> {
        let inline = store.writes_inline();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            store: Mutex::new(store),
            inline,
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new().name("skytale-storage".to_string()).spawn(move || run(&thread_shared))?;
        Ok(Storage { _closer: Arc::new(Closer(shared.clone())), shared })
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
        self.shared.enqueue(job)?;
        rx.await.map_err(|_| gone())?
    }

    /// Archives `items` (group-committed with whatever else is queued); returns the welcome ids
    /// per item once the transaction committed.
    pub async fn append(&self, items: Vec<Append>) -> Result<Vec<Vec<u64>>> {
        let (tx, rx) = oneshot::channel();
        let done: Done = Box::new(move |res| {
            let _ = tx.send(res);
        });
        self.shared.enqueue(Job::Append(items, done))?;
        rx.await.map_err(|_| gone())?
    }

    /// Runs `plan` on the storage thread (after every job queued before it, like
    /// [`Storage::call`]) and archives the appends it returns in the same round, group-committed
    /// with whatever else is queued, other channels' plans included: one hand-off to this thread
    /// and one answer, instead of a lookup round and an append round. The plan reads the store
    /// through [`PlanReads`], as it will be once what is pending in the round is written.
    /// Returns the plan's answer with the append's result
    /// (the welcome ids per item once committed; empty when the plan appended nothing). An
    /// error of the plan itself is returned as is, and nothing is appended. Runs in place when
    /// the store is idle and the plan is for at most [`MAX_INLINE_ITEMS`] `items` with at most
    /// [`MAX_INLINE_BYTES`] of payload `bytes` (see the module docs).
    pub async fn plan_append<R, F>(&self, items: usize, bytes: usize, plan: F) -> Result<(R, Result<Vec<Vec<u64>>>)>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn PlanReads) -> Result<(R, Vec<Append>)> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<(R, Result<Vec<Vec<u64>>>)>>();
        let job = Job::Plan(Box::new(move |s: &mut dyn PlanReads| match plan(s) {
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
        if items <= MAX_INLINE_ITEMS && bytes <= MAX_INLINE_BYTES {
            self.submit(job)?;
        } else {
            self.shared.enqueue(job)?;
        }
        rx.await.map_err(|_| gone())?
    }

    /// Runs a job in place if the store is idle, else queues it for the thread.
    fn submit(&self, job: Job) -> Result<()> {
        let Some(mut store) = self.shared.idle_store() else { return self.shared.enqueue(job) };
        let mut pending = Pending::default();
        take(store.as_mut(), &mut pending, job);
        flush(store.as_mut(), &mut pending);
        self.shared.after_inline(store.as_ref());
        Ok(())
    }

    /// Jobs queued for the thread right now (for tests).
    #[cfg(test)]
    fn queued(&self) -> usize {
        lock(&self.shared.queue).jobs.len()
    }
}

/// The appends of a round waiting for its group commit, with what plans look up in them kept
/// as they are added (so a plan's reads cost the same however full the round is).
#[derive(Default)]
struct Pending {
    groups: Vec<(Vec<Append>, Done)>,
    /// Channels with an append among them.
    channels: HashSet<String>,
    /// Payload bytes (items and welcomes) per org.
    org_bytes: HashMap<String, u64>,
}

impl Pending {
    fn push(&mut self, items: Vec<Append>, done: Done) {
        for a in &items {
            if !self.channels.contains(&a.channel) {
                self.channels.insert(a.channel.clone());
            }
            let bytes = (a.payload.len() + a.welcome.as_ref().map_or(0, |(_, w)| w.len())) as u64;
            match self.org_bytes.get_mut(&a.org) {
                Some(n) => *n = n.saturating_add(bytes),
                None => {
                    self.org_bytes.insert(a.org.clone(), bytes);
                }
            }
        }
        self.groups.push((items, done));
    }

    fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Runs one job in a round: appends, and the appends plans decide, wait in `pending` for the
/// round's group commit; a call first commits what is pending (arrival order).
fn take(store: &mut dyn Store, pending: &mut Pending, job: Job) {
    match job {
        Job::Append(items, tx) => pending.push(items, tx),
        Job::Call(f) => {
            flush(store, pending);
            f(store);
        }
        Job::Plan(f) => {
            let planned = f(&mut RoundView { store, pending });
            if let Some((items, done)) = planned {
                pending.push(items, done);
            }
        }
    }
}

/// Closes the queue when the thread ends, even by a panic: queued jobs are dropped, so their
/// callers get "storage thread stopped" instead of waiting for ever.
struct Ending<'a>(&'a Shared);

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        let mut q = lock(&self.0.queue);
        q.closed = true;
        q.jobs.clear();
    }
}

fn run(shared: &Shared) {
    let _ending = Ending(shared);
    let mut pending = Pending::default();
    loop {
        {
            let mut q = lock(&shared.queue);
            while q.jobs.is_empty() && !q.upkeep {
                if q.closed {
                    tracing::debug!("storage thread stopped");
                    return;
                }
                q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        }
        // The store first, then the jobs: a job leaves the queue only under the store's lock,
        // so a caller that finds the store free and the queue empty runs after every job.
        let mut store = lock(&shared.store);
        let jobs: Vec<Job> = {
            let mut q = lock(&shared.queue);
            q.upkeep = false;
            let n = q.jobs.len().min(MAX_ROUND);
            q.jobs.drain(..n).collect()
        };
        for job in jobs {
            take(store.as_mut(), &mut pending, job);
        }
        flush(store.as_mut(), &mut pending);
        if let Err(e) = store.maintain() {
            tracing::warn!(error = %e, "storage upkeep failed");
        }
    }
}

/// Writes all pending appends (one group commit; see [`Store::append_groups`]) and answers them.
fn flush(store: &mut dyn Store, pending: &mut Pending) {
    if pending.is_empty() {
        return;
    }
    let results = {
        let groups: Vec<&[Append]> = pending.groups.iter().map(|(items, _)| items.as_slice()).collect();
        let res = store.append_groups(&groups);
        skytale_proto::probe::mark_n("relay.committed", groups.iter().map(|g| g.len()).sum());
        res
    };
    let mut results = results.into_iter();
    pending.channels.clear();
    pending.org_bytes.clear();
    for (_, done) in pending.groups.drain(..) {
        let res = results.next().unwrap_or_else(|| Err(RelayError::Storage("group commit lost an answer".to_string())));
        done(res);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use skytale_proto::frames::{Deliver, Welcome};

    use super::*;
    use crate::store::{ChannelRow, Dup, InviteRow, OrgUsage, PruneCutoffs, Pruned};

    /// What the fake store saw.
    #[derive(Default)]
    struct Seen {
        /// Thread name of every append, in order, with its seqs.
        appends: Mutex<Vec<(String, Vec<u64>)>>,
        /// Transactions (group commits).
        commits: AtomicUsize,
        /// `maintain` runs that found upkeep due.
        upkeeps: AtomicUsize,
        /// Upkeep due.
        due: AtomicBool,
        /// Whether a commit leaves upkeep due (as a WAL past its restart size does).
        commits_leave_upkeep: AtomicBool,
    }

    /// A store that records who wrote what (only what the storage thread itself calls works).
    struct Fake {
        seen: Arc<Seen>,
        inline: bool,
    }

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or("?").to_string()
    }

    impl Store for Fake {
        fn channel(&self, _: &str) -> Result<Option<ChannelRow>> {
            Ok(Some(ChannelRow::default()))
        }
        fn create_channel(&mut self, _: &str, _: &str, _: &str, _: u64) -> Result<bool> {
            unimplemented!()
        }
        fn roster(&self, _: &str) -> Result<Vec<(String, u64)>> {
            unimplemented!()
        }
        fn member(&self, _: &str, _: &str) -> Result<Option<u64>> {
            unimplemented!()
        }
        fn org_usage(&self, _: &str) -> Result<OrgUsage> {
            Ok(OrgUsage { archive_bytes: STORED_BYTES, ..OrgUsage::default() })
        }
        fn find_dup(&self, _: &str, _: &str, _: &str) -> Result<Option<Dup>> {
            Ok(None)
        }
        fn append_batch(&mut self, items: &[Append]) -> Result<Vec<Vec<u64>>> {
            self.seen.commits.fetch_add(1, Ordering::SeqCst);
            self.seen.appends.lock().unwrap().push((thread_name(), items.iter().map(|a| a.seq).collect()));
            if self.seen.commits_leave_upkeep.load(Ordering::SeqCst) {
                self.seen.due.store(true, Ordering::SeqCst);
            }
            Ok(items.iter().map(|_| Vec::new()).collect())
        }
        fn read_range(&self, _: &str, _: u64, _: u64, _: &str, _: usize, _: usize) -> Result<Vec<Deliver>> {
            unimplemented!()
        }
        fn pending_welcomes(&self, _: &str, _: &str) -> Result<u64> {
            unimplemented!()
        }
        fn welcomes_for(&self, _: &str, _: &str) -> Result<Vec<Welcome>> {
            unimplemented!()
        }
        fn delete_welcome(&mut self, _: &str, _: &str, _: u64) -> Result<bool> {
            unimplemented!()
        }
        fn count_key_packages(&self, _: &str, _: &str) -> Result<u64> {
            unimplemented!()
        }
        fn add_key_packages(&mut self, _: &str, _: &str, _: &[Vec<u8>], _: u64) -> Result<()> {
            unimplemented!()
        }
        fn claim_key_package(&mut self, _: &str, _: &str) -> Result<Option<Vec<u8>>> {
            unimplemented!()
        }
        fn create_invite(&mut self, _: &InviteRow, _: &str, _: u64) -> Result<bool> {
            unimplemented!()
        }
        fn invite(&self, _: &str) -> Result<Option<InviteRow>> {
            unimplemented!()
        }
        fn update_invite(&mut self, _: &str, _: &[u8]) -> Result<()> {
            unimplemented!()
        }
        fn revoke_invite(&mut self, _: &str) -> Result<()> {
            unimplemented!()
        }
        fn invite_uses(&self, _: &str) -> Result<u32> {
            unimplemented!()
        }
        fn invite_used_by(&self, _: &str, _: &str) -> Result<bool> {
            unimplemented!()
        }
        fn add_invite_use(&mut self, _: &str, _: &str, _: u64) -> Result<()> {
            unimplemented!()
        }
        fn prune(&mut self, _: &PruneCutoffs) -> Result<Pruned> {
            unimplemented!()
        }
        fn archive_stats(&self) -> Result<(u64, u64)> {
            unimplemented!()
        }
        fn maintain(&mut self) -> Result<()> {
            if self.seen.due.swap(false, Ordering::SeqCst) {
                self.seen.upkeeps.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        }
        fn upkeep_due(&self) -> bool {
            self.seen.due.load(Ordering::SeqCst)
        }
        fn writes_inline(&self) -> bool {
            self.inline
        }
    }

    /// Archive bytes every org has in the fake store.
    const STORED_BYTES: u64 = 100;

    fn start(inline: bool) -> (Storage, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let storage = Storage::start(Box::new(Fake { seen: seen.clone(), inline })).unwrap();
        (storage, seen)
    }

    fn item(seq: u64) -> Append {
        item_in("acme/c/k", seq)
    }

    fn item_in(channel: &str, seq: u64) -> Append {
        Append {
            channel: channel.into(),
            org: "acme".into(),
            seq,
            epoch: 0,
            new_epoch: 0,
            kind: 1,
            sender: "alice".into(),
            client_msg_id: format!("m{seq}"),
            payload: Bytes::from_static(b"x"),
            now_ms: 0,
            welcome: None,
            added: Vec::new(),
            removed: Vec::new(),
        }
    }

    /// A plan that appends `seq` and says on which thread it ran.
    async fn plan(storage: &Storage, seq: u64) -> String {
        let (who, res) = storage.plan_append(1, 1, move |_| Ok((thread_name(), vec![item(seq)]))).await.unwrap();
        res.unwrap();
        who
    }

    async fn wait_for(what: &str, cond: impl Fn() -> bool) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !cond() {
            assert!(std::time::Instant::now() < until, "timed out waiting for {what}");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_append_to_an_idle_store_is_written_in_place_and_upkeep_goes_to_the_thread() {
        let (storage, seen) = start(true);
        let me = thread_name();
        assert_ne!(me, "skytale-storage");
        for seq in 1..=3 {
            // no hand-off: planned and committed on the caller's thread
            assert_eq!(plan(&storage, seq).await, me);
            assert_eq!(seen.appends.lock().unwrap().last().unwrap(), &(me.clone(), vec![seq]));
        }
        // A commit that leaves upkeep due: the thread does it (the caller never runs it).
        seen.commits_leave_upkeep.store(true, Ordering::SeqCst);
        assert_eq!(plan(&storage, 4).await, me);
        wait_for("the thread's upkeep", || !seen.due.load(Ordering::SeqCst)).await;
        assert_eq!(seen.upkeeps.load(Ordering::SeqCst), 1);
        let (_, res) = storage.plan_append(1, 1, |_| Ok(((), Vec::new()))).await.unwrap();
        assert!(res.unwrap().is_empty(), "a plan that appends nothing commits nothing");
        assert_eq!(seen.commits.load(Ordering::SeqCst), 4);
        // Larger batches and plain appends (commits, join requests) always go to the thread.
        let big: Vec<Append> = (5..5 + MAX_INLINE_ITEMS as u64 + 1).map(item).collect();
        let (who, res) = storage.plan_append(big.len(), big.len(), move |_| Ok((thread_name(), big))).await.unwrap();
        res.unwrap();
        assert_eq!(who, "skytale-storage");
        wait_for("the thread to let go of the store", || storage.shared.store.try_lock().is_ok()).await;
        let mut large = item(30);
        large.payload = Bytes::from(vec![0u8; MAX_INLINE_BYTES + 1]);
        let (who, res) =
            storage.plan_append(1, large.payload.len(), move |_| Ok((thread_name(), vec![large]))).await.unwrap();
        res.unwrap();
        assert_eq!(who, "skytale-storage");
        wait_for("the thread to let go of the store", || storage.shared.store.try_lock().is_ok()).await;
        storage.append(vec![item(100)]).await.unwrap();
        assert_eq!(seen.appends.lock().unwrap().last().unwrap().0, "skytale-storage");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_backend_that_does_not_allow_it_is_never_written_in_place() {
        let (storage, seen) = start(false);
        for seq in 1..=3 {
            assert_eq!(plan(&storage, seq).await, "skytale-storage");
        }
        assert!(seen.appends.lock().unwrap().iter().all(|(t, _)| t == "skytale-storage"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_behind_a_busy_store_wait_their_turn_and_commit_together() {
        let (storage, seen) = start(true);
        // The thread holds the store in a slow call.
        let (release_tx, slow) = hold(&storage).await;
        // A planned append and a plain one arrive meanwhile: neither waits for the store on its
        // own thread; both queue and are committed by the thread, after the call, in arrival
        // order, in one transaction.
        let a = {
            let storage = storage.clone();
            tokio::spawn(async move { plan(&storage, 1).await })
        };
        wait_for("the first append to queue", || storage.queued() == 1).await;
        let b = {
            let storage = storage.clone();
            tokio::spawn(async move {
                storage.append(vec![item(2)]).await.unwrap();
            })
        };
        wait_for("the second append to queue", || storage.queued() == 2).await;
        assert_eq!(seen.commits.load(Ordering::SeqCst), 0, "nothing was written past the busy store");
        release_tx.send(()).unwrap();
        slow.await.unwrap().unwrap();
        assert_eq!(a.await.unwrap(), "skytale-storage");
        b.await.unwrap();
        let appends = seen.appends.lock().unwrap().clone();
        assert_eq!(appends, vec![("skytale-storage".to_string(), vec![1, 2])], "one group commit, in order");
        // Idle again once the thread let go of the store (nothing wakes it afterwards): the
        // next append is written in place.
        wait_for("the thread to let go of the store", || storage.shared.store.try_lock().is_ok()).await;
        assert_ne!(plan(&storage, 3).await, "skytale-storage");
    }

    /// Makes the thread hold the store in a call until the returned sender is used.
    async fn hold(storage: &Storage) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<Result<()>>) {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (held_tx, held_rx) = tokio::sync::oneshot::channel::<()>();
        let slow = {
            let storage = storage.clone();
            tokio::spawn(async move {
                storage
                    .call(move |_| {
                        let _ = held_tx.send(());
                        release_rx.recv().map_err(|_| RelayError::Storage("released".into()))
                    })
                    .await
            })
        };
        held_rx.await.unwrap();
        (release_tx, slow)
    }

    /// Queues `plan` behind what is queued now (the thread is held) and waits until it is.
    async fn queue_plan<R, F>(storage: &Storage, plan: F) -> tokio::task::JoinHandle<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn PlanReads) -> Result<(R, Vec<Append>)> + Send + 'static,
    {
        let before = storage.queued();
        let task = {
            let storage = storage.clone();
            tokio::spawn(async move {
                let (r, res) = storage.plan_append(1, 1, plan).await.unwrap();
                res.unwrap();
                r
            })
        };
        wait_for("the plan to queue", || storage.queued() == before + 1).await;
        task
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plans_of_several_channels_that_queue_together_commit_in_one_transaction() {
        let (storage, seen) = start(true);
        let (release, slow) = hold(&storage).await;
        let mut plans = Vec::new();
        for (seq, channel) in [(1, "acme/a"), (2, "acme/b"), (3, "acme/c")] {
            plans.push(queue_plan(&storage, move |_| Ok(((), vec![item_in(channel, seq)]))).await);
        }
        release.send(()).unwrap();
        slow.await.unwrap().unwrap();
        for p in plans {
            p.await.unwrap();
        }
        let appends = seen.appends.lock().unwrap().clone();
        assert_eq!(appends, vec![("skytale-storage".to_string(), vec![1, 2, 3])], "one group commit, in order");
        assert_eq!(seen.commits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plan_counts_its_orgs_pending_bytes_and_reads_a_channel_with_pending_appends_after_they_commit() {
        let (storage, seen) = start(true);
        let (release, slow) = hold(&storage).await;
        // 10 bytes of acme pending (channel a), and a welcome of 5 …
        let first = queue_plan(&storage, |_| {
            let mut a = item_in("acme/a", 1);
            a.payload = Bytes::from(vec![0u8; 10]);
            a.welcome = Some((vec!["bob".into()], Bytes::from(vec![0u8; 5])));
            Ok(((), vec![a]))
        })
        .await;
        // … are counted for acme and not for another org; another channel's read commits nothing …
        let s2 = seen.clone();
        let second = queue_plan(&storage, move |r| {
            let acme = r.org_usage("acme")?.archive_bytes;
            let other = r.org_usage("other")?.archive_bytes;
            r.channel("acme/b")?;
            r.find_dup("acme/b", "alice", "m")?;
            Ok(((acme, other, s2.commits.load(Ordering::SeqCst)), vec![item_in("acme/b", 2)]))
        })
        .await;
        // … and reading channel a (or its dedupe keys) commits what is pending first.
        let s3 = seen.clone();
        let third = queue_plan(&storage, move |r| {
            r.channel("acme/a")?;
            let after_channel = s3.commits.load(Ordering::SeqCst);
            Ok((after_channel, vec![item_in("acme/a", 3)]))
        })
        .await;
        let s4 = seen.clone();
        let fourth = queue_plan(&storage, move |r| {
            r.find_dup("acme/a", "alice", "m")?;
            Ok((s4.commits.load(Ordering::SeqCst), vec![item_in("acme/a", 4)]))
        })
        .await;
        release.send(()).unwrap();
        slow.await.unwrap().unwrap();
        first.await.unwrap();
        assert_eq!(second.await.unwrap(), (STORED_BYTES + 15, STORED_BYTES, 0));
        assert_eq!(third.await.unwrap(), 1, "channel a's pending append was committed before the read");
        assert_eq!(fourth.await.unwrap(), 2, "channel a's pending append was committed before the lookup");
        let appends: Vec<Vec<u64>> = seen.appends.lock().unwrap().iter().map(|(_, s)| s.clone()).collect();
        assert_eq!(appends, vec![vec![1, 2], vec![3], vec![4]]);
    }

    #[tokio::test]
    async fn dropping_the_last_handle_stops_the_thread_after_the_queued_jobs() {
        let (storage, seen) = start(false);
        let pending = {
            let storage = storage.clone();
            tokio::spawn(async move { plan(&storage, 1).await })
        };
        assert_eq!(pending.await.unwrap(), "skytale-storage");
        let weak = Arc::downgrade(&storage.shared);
        drop(storage);
        // the thread lets go of the store once it has seen the queue closed
        wait_for("the thread to stop", || weak.upgrade().is_none()).await;
        assert_eq!(seen.commits.load(Ordering::SeqCst), 1);
    }
}

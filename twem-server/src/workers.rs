//! The worker event loops: one thread per core, each a single-threaded
//! tokio runtime, and no work stealing on the request path.
//!
//! Why: on tokio's work-stealing runtime a client's session ran on one
//! thread and the backend connection it wrote to on another, so every
//! request paid a cross-thread wake-up each way (measured: twem at its
//! default flags at 0.72-0.74x predixy's throughput and 1.5x its CPU per
//! request, while one event loop was as cheap as predixy). Here the accept
//! loops, signals, reload and drain run on the control runtime (the main
//! thread); each accepted client is handed to the least busy worker, where
//! its session runs and where the pool's connection set for that worker
//! runs too ([`twem_core::worker`]), so a request never leaves its thread.
//! pingora's `NoSteal` runtime is the public model.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

/// Work handed to a worker: run on its thread, inside its runtime.
pub type Job = Box<dyn FnOnce() + Send>;

/// One worker: its runtime's handle, where its jobs go, the thread that
/// drives it and how many clients it serves now.
#[derive(Debug)]
struct Worker {
    handle: Handle,
    jobs: mpsc::UnboundedSender<Job>,
    clients: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The running worker event loops.
#[derive(Debug)]
pub struct Workers {
    workers: Vec<Worker>,
}

/// A client placed on a worker: where to hand its setup, and a guard that
/// counts it there until dropped.
#[derive(Debug)]
pub struct Placement {
    jobs: mpsc::UnboundedSender<Job>,
    guard: ClientOnWorker,
}

impl Placement {
    /// Run `job` on the worker's thread, inside its runtime: the client's
    /// socket is registered and its session spawned there, so the session's
    /// task and buffers are allocated by the thread that uses them (spawned
    /// from the accepting thread, they cost 0.2 KiB more per client, the
    /// memory spread over two threads' allocator arenas). `job` gets the
    /// guard that counts the client on the worker, to keep while the client
    /// lives. Lost only if the worker has stopped (shutdown).
    pub fn run(self, job: impl FnOnce(ClientOnWorker) + Send + 'static) {
        let Placement { jobs, guard } = self;
        let _ = jobs.send(Box::new(move || job(guard)));
    }
}

/// A client counted on its worker ([`Workers::place`]); the count drops
/// with it.
#[derive(Debug)]
pub struct ClientOnWorker(Arc<AtomicUsize>);

impl Drop for ClientOnWorker {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Workers {
    /// Start `n` worker threads (named `twem-worker-<i>`), each with its own
    /// current-thread runtime, and declare them to twem-core so that pools
    /// built from now on keep a connection set per worker.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        twem_core::worker::set_count(n);
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            let (stop, mut stopped) = oneshot::channel::<()>();
            let (jobs, mut incoming) = mpsc::unbounded_channel::<Job>();
            let thread = std::thread::Builder::new()
                .name(format!("twem-worker-{i}"))
                .spawn(move || {
                    twem_core::worker::enter(i);
                    // Tasks spawned here or through the handle run while
                    // this thread drives the runtime: until told to stop.
                    rt.block_on(async {
                        loop {
                            tokio::select! {
                                job = incoming.recv() => match job {
                                    Some(job) => job(),
                                    None => break,
                                },
                                _ = &mut stopped => break,
                            }
                        }
                    });
                    // Whatever is left (sessions past the grace period,
                    // connection tasks) is dropped now.
                    rt.shutdown_timeout(std::time::Duration::from_millis(100));
                })?;
            workers.push(Worker {
                handle,
                jobs,
                clients: Arc::new(AtomicUsize::new(0)),
                stop: Some(stop),
                thread: Some(thread),
            });
        }
        Ok(Workers { workers })
    }

    /// Every worker's runtime handle.
    pub fn handles(&self) -> Vec<Handle> {
        self.workers.iter().map(|w| w.handle.clone()).collect()
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether no worker runs.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The worker a new client goes to: the one serving the fewest clients
    /// now (a long-lived client stays where it landed, so round robin would
    /// drift), the lowest index on a tie.
    pub fn place(&self) -> Option<Placement> {
        let at = least_busy(self.workers.iter().map(|w| w.clients.load(Relaxed)))?;
        let w = self.workers.get(at)?;
        w.clients.fetch_add(1, Relaxed);
        Some(Placement {
            jobs: w.jobs.clone(),
            guard: ClientOnWorker(Arc::clone(&w.clients)),
        })
    }

    /// Run `make()`'s future on every worker (e.g. a pool's `preconnect`,
    /// which must run where the connections will live).
    pub fn on_each<F, Fut>(&self, make: F)
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        for w in &self.workers {
            w.handle.spawn(make());
        }
    }

    /// Stop every worker and wait for its thread: tasks still running
    /// there are dropped.
    pub fn stop(mut self) {
        for w in &mut self.workers {
            if let Some(tx) = w.stop.take() {
                let _ = tx.send(());
            }
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// The index of the smallest count, the first on a tie; pure.
fn least_busy(counts: impl Iterator<Item = usize>) -> Option<usize> {
    counts
        .enumerate()
        .min_by_key(|&(i, n)| (n, i))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_go_to_the_least_busy_worker() {
        assert_eq!(least_busy([3, 1, 2].into_iter()), Some(1));
        assert_eq!(least_busy([2, 2, 2].into_iter()), Some(0));
        assert_eq!(least_busy([5, 0, 0].into_iter()), Some(1));
        assert_eq!(least_busy(std::iter::empty()), None);
    }

    #[test]
    fn sessions_spread_and_run_on_their_worker_threads() {
        let workers = Workers::start(2).expect("workers");
        let a = workers.place().expect("a worker");
        let b = workers.place().expect("a worker");
        // One client each, then the first freed is chosen again.
        let names = |p: Placement| {
            let (tx, rx) = std::sync::mpsc::channel();
            p.run(move |_guard| {
                // On the worker, inside its runtime: a task spawned here
                // runs there too.
                tokio::spawn(async move {
                    let _ = tx.send((
                        std::thread::current().name().map(str::to_string),
                        twem_core::worker::current(),
                    ));
                });
            });
            rx.recv().expect("ran")
        };
        // The guard is dropped once the job has run: worker 0 is free again.
        let na = names(a);
        assert_eq!(na, (Some("twem-worker-0".into()), Some(0)));
        let c = workers.place().expect("a worker");
        assert_eq!(names(c).1, Some(0), "worker 0 was free again");
        let nb = names(b);
        assert_eq!(nb, (Some("twem-worker-1".into()), Some(1)));
        workers.stop();
    }
}

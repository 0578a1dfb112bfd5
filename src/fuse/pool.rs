//! The threads that wait on the store. FUSE request threads answer what the
//! cache can answer and hand everything that needs the store to this pool,
//! so that requests stuck on a slow or hung store can never occupy every
//! request thread: a cached read is answered at once whatever the store
//! does.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

/// One request's remaining work, answering its own reply.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of threads running jobs in the order they come.
pub struct Pool {
    jobs: Option<Sender<Job>>,
}

impl Pool {
    /// Starts `threads` threads (at least one). Should none start, jobs
    /// run on the calling thread.
    pub fn new(threads: usize) -> Self {
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("secretfs-store-{i}"))
                .spawn(move || work(&rx));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::warn!(error = %e, "cannot start a store thread"),
            }
        }
        if started == 0 {
            tracing::error!(
                "no store thread started: requests that need the store run on request threads"
            );
        }
        Pool {
            jobs: (started > 0).then_some(tx),
        }
    }

    /// Runs `job` on a pool thread (on this one if the pool is gone).
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let job: Job = Box::new(job);
        let job = match &self.jobs {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(returned) => returned.0,
            },
            None => job,
        };
        job();
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        match job {
            Ok(job) => job(),
            // The adapter (and its sender) is gone: the mount ended.
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn a_job_stuck_on_one_thread_leaves_the_others_working() {
        let pool = Pool::new(2);
        let (release, stuck) = channel::<()>();
        pool.run(move || {
            let _ = stuck.recv();
        });
        let done = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = channel();
        for _ in 0..10 {
            let (done, tx) = (done.clone(), tx.clone());
            pool.run(move || {
                done.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(());
            });
        }
        for _ in 0..10 {
            rx.recv_timeout(Duration::from_secs(5))
                .expect("jobs ran beside the stuck one");
        }
        assert_eq!(done.load(Ordering::SeqCst), 10);
        let _ = release.send(());
    }
}

//! Threads of one phase. Replay reads and normalises raw files on threads that end with the
//! reading: each hands its heap's free pages back as it ends ([`crate::memory::release_thread`]),
//! so the merge that follows starts from what is still in use, not from what the reading kept
//! for reuse on threads that would then sit idle (on tokio's blocking pool they stay, and with
//! them their memory: 300 MiB at ten million records).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::error::{Doing, Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// A few threads taking jobs in turn, until the pool is dropped.
pub struct Workers {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// `n` threads named `name`.
    pub fn new(name: &str, n: usize) -> Result<Workers> {
        let (jobs, inbox) = channel::<Job>();
        let inbox = Arc::new(Mutex::new(inbox));
        let threads = (0..n.max(1))
            .map(|i| {
                let inbox = inbox.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || work(&inbox))
                    .doing("starting a worker thread")
            })
            .collect::<Result<_>>()?;
        Ok(Workers {
            jobs: Some(jobs),
            threads,
        })
    }

    /// Runs `f` on one of the threads; its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        let gone = || Error::Internal("a worker thread stopped (panicked)".into());
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }
}

fn work(inbox: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only to take a job, never while running one.
        let job = match inbox.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => break,
        };
        match job {
            Ok(job) => job(),
            Err(_) => break,
        }
    }
    crate::memory::release_thread();
}

impl Drop for Workers {
    /// Ends the threads once the jobs sent are done.
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs run on the pool's threads and give their results; a job that panics fails alone,
    /// with an error, and the pool goes on.
    #[tokio::test]
    async fn jobs_give_their_results_and_a_panic_is_an_error() {
        let w = Workers::new("t", 2).unwrap();
        let names = futures::future::join_all((0..8).map(|i| {
            w.run(move || {
                Ok((
                    i * 2,
                    std::thread::current().name().unwrap_or("").to_string(),
                ))
            })
        }))
        .await;
        for (i, r) in names.into_iter().enumerate() {
            let (v, name) = r.unwrap();
            assert_eq!(v, i * 2);
            assert!(name.starts_with("t-"), "{name}");
        }
        let e = w.run(|| -> Result<()> { panic!("a bad file") }).await;
        assert!(matches!(e, Err(Error::Internal(m)) if m.contains("stopped")));
        assert_eq!(w.run(|| Ok(7)).await.unwrap(), 7);
        drop(w);
    }
}

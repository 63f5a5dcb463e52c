//! The fan-out's direct writes: a lean connection whose task has nothing in flight is not
//! woken for a push; the pushing thread writes its queue head into the socket once it holds no
//! lock (see the parent module).

use std::io::IoSlice;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard};

use bytes::Bytes;
use tokio::net::TcpStream;

use super::{Outbox, Outgoing, Queue, WriteState, Written};
use crate::ws::conn::MAX_IOV;

/// Lean connections that were pushed to without waking their task, to be written directly
/// once the pusher holds no lock ([`Outbox::push_shared`]).
#[derive(Debug, Default)]
pub(crate) struct Flushes(Vec<Arc<Outbox>>);

impl Flushes {
    /// Writes what each connection has queued straight into its socket, as much as the socket
    /// takes now; wakes the connection's task for the rest. (Dropping does the same, so a
    /// panic between the pushes and this cannot leave a connection's queue unattended.)
    pub(crate) fn run(self) {}
}

impl Drop for Flushes {
    fn drop(&mut self) {
        for outbox in self.0.drain(..) {
            outbox.flush_direct();
        }
    }
}

impl Outbox {
    /// Queues a push as a complete frame (compressed only if [`Outbox::deflate`]) shared with
    /// other connections — only for a connection with [`Outbox::frames`] — counted against the
    /// limit like [`Outbox::push`]. If the connection's task has nothing in flight, the frame
    /// is queued without waking it and the outbox joins `flushes`, whose [`Flushes::run`]
    /// (called once the caller holds no lock) writes it directly.
    pub(crate) fn push_shared(self: &Arc<Self>, frame: Bytes, flushes: &mut Flushes) -> bool {
        if !self.admit(frame.len()) {
            return false;
        }
        let state = match self.queue.lock() {
            Ok(mut queue) => {
                queue.items.push_back(Outgoing::Frame(frame));
                queue.state
            }
            Err(_) => return false,
        };
        match state {
            // Joins `flushes` unless a flush of this outbox is pending already (an earlier
            // event of the same batch, or another dispatcher's): that one writes this too.
            WriteState::Idle if self.socket.as_ref().is_some() => {
                if self.flush_pending.swap(true, Ordering::AcqRel) {
                    return true;
                }
                flushes.0.push(self.clone());
            }
            _ => self.waker.wake(),
        }
        true
    }

    /// Writes the queue's head into the socket without waiting, if the connection's task has
    /// nothing in flight; wakes the task for whatever is left.
    fn flush_direct(&self) {
        let Ok(mut queue) = self.queue.lock() else {
            return;
        };
        self.flush_pending.store(false, Ordering::Release);
        let mut written = Written::default();
        if queue.state == WriteState::Idle
            && let Some(socket) = self.socket.as_ref()
        {
            Self::write_head(&mut queue, socket, &mut written);
        }
        let rest = !queue.items.is_empty();
        if !rest {
            Self::release(&mut queue, false);
        }
        drop(queue);
        if rest {
            self.waker.wake();
        }
        self.settle(written);
    }

    /// Writes complete frames from the queue's head with vectored `try_write`s until the
    /// socket would block, the head is not a complete frame, or the queue is empty; adds what
    /// was fully written to `written`.
    fn write_head(queue: &mut MutexGuard<'_, Queue>, socket: &TcpStream, written: &mut Written) {
        loop {
            let mut frames = queue.items.iter().map_while(|item| match item {
                Outgoing::Frame(frame) => Some(frame),
                _ => None,
            });
            let result = match (frames.next(), frames.next()) {
                (None, _) => return,
                // One frame (a delivery to a subscriber that keeps up): a plain `send` is
                // cheaper for the kernel than a one-element `writev`, and needs no slices.
                (Some(frame), None) => socket.try_write(&frame[queue.front_written..]),
                (Some(first), Some(second)) => {
                    let mut slices = [IoSlice::new(&[]); MAX_IOV];
                    slices[0] = IoSlice::new(&first[queue.front_written..]);
                    slices[1] = IoSlice::new(second);
                    let mut n = 2;
                    for (slot, frame) in slices[2..].iter_mut().zip(frames) {
                        *slot = IoSlice::new(frame);
                        n += 1;
                    }
                    socket.try_write_vectored(&slices[..n])
                }
            };
            let Ok(mut done) = result else {
                // Would block (the caller wakes the task for the rest) or failed (the task's
                // own write will see it and close the connection).
                return;
            };
            if done == 0 {
                return;
            }
            while done > 0 {
                let Some(Outgoing::Frame(front)) = queue.items.front() else {
                    return;
                };
                let left = front.len() - queue.front_written;
                if done < left {
                    // The socket took part of a frame: it is full.
                    queue.front_written += done;
                    return;
                }
                done -= left;
                queue.front_written = 0;
                if let Some(item) = queue.items.pop_front() {
                    *written += item.budget();
                }
            }
        }
    }
}

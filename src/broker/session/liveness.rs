//! The session's side of an attached connection's liveness: waking its
//! task when deliveries wait (a waker slot and a flag, so the task's idle
//! wait holds no future), telling it to close (takeover, shutdown, single
//! sign-on: a waker slot in the owner record, no channel per connection),
//! and the deadlines the broker's once-a-second sweep enforces (keep-alive,
//! credential expiry), so no connection holds a timer.
//! Must never: take the session's lock on a connection's every wait (only
//! to register its task once, and to read why it must close).

use super::Session;
use crate::model::CloseReason;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

impl Session {
    /// Ready with the reason when connection `connection_id` must close:
    /// another connection took the session (or the session ended), or it
    /// was asked to close. Otherwise registers the task to be woken when
    /// that happens. `registered` is the connection's record of the waker it
    /// left: a task's waker stays the same, so the lock is taken on its
    /// first wait only.
    pub fn poll_close(
        &self,
        connection_id: u64,
        registered: &mut Option<Waker>,
        cx: &mut Context<'_>,
    ) -> Poll<CloseReason> {
        if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let mut st = self.state.lock();
            if let Some(owner) = st.owner.as_mut().filter(|o| o.connection_id == connection_id) {
                owner.waker = Some(cx.waker().clone());
            }
            *registered = Some(cx.waker().clone());
        }
        // Both are written under the lock before the waker is woken: a
        // change made after the registration wakes it, one made before is
        // seen here.
        if self.owner_id.load(Ordering::SeqCst) != connection_id {
            return Poll::Ready(CloseReason::TakenOver);
        }
        if self.close_asked.load(Ordering::SeqCst) {
            let st = self.state.lock();
            return match st.owner.as_ref().filter(|o| o.connection_id == connection_id) {
                Some(owner) => match &owner.close_reason {
                    Some(reason) => Poll::Ready((**reason).clone()),
                    None => Poll::Pending,
                },
                None => Poll::Ready(CloseReason::TakenOver),
            };
        }
        Poll::Pending
    }

    /// Records why the owner must close and wakes its task. Returns false
    /// if it was asked already. Called with the state lock held.
    pub(super) fn ask_owner_to_close(&self, owner: &mut super::Owner, reason: CloseReason) -> bool {
        if owner.close_reason.is_some() {
            return false;
        }
        owner.close_reason = Some(Box::new(reason));
        self.close_asked.store(true, Ordering::SeqCst);
        if let Some(waker) = &owner.waker {
            waker.wake_by_ref();
        }
        true
    }

    /// Takes the owner record away and wakes that connection's task, which
    /// then sees in `poll_close` that it is no longer the owner (takeover).
    /// Called with the state lock held.
    pub(super) fn displace_owner(&self, st: &mut super::SessionState) {
        if let Some(old) = st.owner.take() {
            self.owner_id.store(0, Ordering::SeqCst);
            if let Some(waker) = old.waker {
                waker.wake();
            }
        }
    }

    /// Ready when deliveries may be waiting for connection `connection_id`
    /// (registers the task to be woken otherwise). Never loses a wake-up: a
    /// wake that happens while nobody waits is kept for the next call.
    pub fn poll_deliveries(&self, connection_id: u64, cx: &mut Context<'_>) -> Poll<()> {
        if self.wake_pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.wake.register(cx.waker());
        // A connection that lost the session may have registered after the
        // new owner did, taking the slot from it: wake the new owner (which
        // registers again), and this task, to see in `poll_close` that it
        // must close (not to take the new owner's deliveries).
        if self.owner_id.load(Ordering::SeqCst) != connection_id {
            self.wake_pending.store(true, Ordering::Release);
            if let Some(waker) = self.state.lock().owner.as_ref().and_then(|o| o.waker.clone()) {
                waker.wake();
            }
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // A wake between the check and the registration is seen here.
        if self.wake_pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Marks deliveries as waiting and wakes the attached connection's task.
    pub(super) fn wake_writer(&self) {
        self.wake_pending.store(true, Ordering::Release);
        self.wake.wake();
    }

    /// The attached writer is waiting for the socket to take a write (set
    /// and cleared around the blocked write), so the stall guard does not
    /// mistake a slow reader for a lost wake-up.
    pub fn set_writer_blocked(&self, blocked: bool) {
        self.writer_blocked.store(blocked, Ordering::Relaxed);
    }

    /// The stall guard, run by the broker's once-a-second sweep: true (and
    /// the writer is woken) when a connection is attached, deliveries it may
    /// send wait, no wake is pending, its writer is not blocked on the
    /// socket, and it took nothing for `stalled_after_ms`. That is a lost
    /// wake-up (issue 23): counted, logged and healed, never expected.
    pub fn wake_if_stalled(&self, now_ms: u64, stalled_after_ms: u64) -> bool {
        if !self.may_be_stalled(now_ms, stalled_after_ms) {
            return false;
        }
        let sendable = {
            let st = self.state.lock();
            st.owner.as_ref().is_some_and(|o| o.attachment.transport != crate::auth::Transport::Bridge)
                && st.outbox.front().is_some_and(|front| {
                    front.qos == crate::model::QoS::AtMostOnce || st.inflight.len() < usize::from(st.send_window)
                })
        };
        if sendable {
            self.wake_writer();
        }
        sendable
    }

    /// The lock-free part of [`Session::wake_if_stalled`], for the sweep's
    /// pass over every session under the sessions lock.
    pub fn may_be_stalled(&self, now_ms: u64, stalled_after_ms: u64) -> bool {
        self.owner_id.load(Ordering::Relaxed) != 0
            && !self.wake_pending.load(Ordering::Acquire)
            && !self.writer_blocked.load(Ordering::Relaxed)
            && !self.is_draining(now_ms, stalled_after_ms)
    }

    /// The attached connection must send something before `at_ms` (Unix
    /// ms; 0: no keep-alive), or the broker's sweep closes it.
    pub fn set_silent_deadline_ms(&self, at_ms: u64) {
        self.silent_deadline_ms.store(at_ms, Ordering::Relaxed);
    }

    /// The attached connection's credentials expire at `at_ms` (0: never).
    pub fn set_credentials_expire_ms(&self, at_ms: u64) {
        self.credentials_expire_ms.store(at_ms, Ordering::Relaxed);
    }

    /// Why the attached connection must close at `now_ms`, if it must:
    /// expired credentials, or silence past its keep-alive.
    pub fn overdue(&self, now_ms: u64) -> Option<CloseReason> {
        let expire = self.credentials_expire_ms.load(Ordering::Relaxed);
        if expire != 0 && expire <= now_ms {
            return Some(CloseReason::CredentialsExpired);
        }
        let silent = self.silent_deadline_ms.load(Ordering::Relaxed);
        (silent != 0 && silent <= now_ms).then_some(CloseReason::KeepAliveTimeout)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{attachment, delivery, session};
    use crate::model::CloseReason;
    use crate::model::QoS;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    /// A task stand-in: counts how often it was woken.
    #[derive(Default)]
    struct Task(AtomicUsize);
    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn task() -> (Arc<Task>, Waker) {
        let task = Arc::new(Task::default());
        (task.clone(), Waker::from(task))
    }
    fn woken(task: &Task) -> usize {
        task.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_takeover_wakes_the_old_connection_and_tells_it_why() {
        let s = session();
        s.attach(1, 10, None, attachment());
        let (old_task, old_waker) = task();
        let mut registered = None;
        assert!(s.poll_close(1, &mut registered, &mut Context::from_waker(&old_waker)).is_pending());
        s.attach(2, 10, None, attachment());
        assert_eq!(woken(&old_task), 1, "the old connection's task is woken");
        assert_eq!(
            s.poll_close(1, &mut registered, &mut Context::from_waker(&old_waker)),
            Poll::Ready(CloseReason::TakenOver)
        );
        let (_, new_waker) = task();
        assert!(s.poll_close(2, &mut None, &mut Context::from_waker(&new_waker)).is_pending());
    }

    #[test]
    fn asking_to_close_wakes_the_owner_once_with_the_reason() {
        let s = session();
        s.attach(7, 10, None, attachment());
        let (t, waker) = task();
        let mut registered = None;
        assert!(s.poll_close(7, &mut registered, &mut Context::from_waker(&waker)).is_pending());
        assert!(s.ask_to_close(CloseReason::ServerShutdown));
        assert!(!s.ask_to_close(CloseReason::AdministrativeAction), "asked once");
        assert_eq!(woken(&t), 1);
        assert_eq!(
            s.poll_close(7, &mut registered, &mut Context::from_waker(&waker)),
            Poll::Ready(CloseReason::ServerShutdown)
        );
        // Asked before the connection ever waited: seen at its first wait.
        let s = session();
        s.attach(8, 10, None, attachment());
        assert!(s.ask_to_close(CloseReason::CredentialsExpired));
        assert_eq!(
            s.poll_close(8, &mut None, &mut Context::from_waker(&waker)),
            Poll::Ready(CloseReason::CredentialsExpired)
        );
    }

    #[test]
    fn an_old_connection_registering_late_gives_the_delivery_wake_back_to_the_new_owner() {
        let s = session();
        s.attach(1, 10, None, attachment());
        s.attach(2, 10, None, attachment());
        let (new_task, new_waker) = task();
        let mut new_cx = Context::from_waker(&new_waker);
        assert!(s.poll_close(2, &mut None, &mut new_cx).is_pending());
        let _ = s.poll_deliveries(2, &mut new_cx); // the attach left a wake pending
        assert!(s.poll_deliveries(2, &mut new_cx).is_pending());
        // The old connection's task, still running, registers after it.
        let (old_task, old_waker) = task();
        assert!(s.poll_deliveries(1, &mut Context::from_waker(&old_waker)).is_pending());
        assert_eq!(woken(&old_task), 1, "the old one is woken to see that it must close");
        assert_eq!(woken(&new_task), 1, "the new owner is woken to register again");
        assert!(s.poll_deliveries(2, &mut new_cx).is_ready(), "and finds the wake waiting");
    }

    #[test]
    fn the_stall_guard_wakes_a_writer_that_left_deliveries_behind() {
        let s = session();
        s.attach(1, 10, None, attachment());
        let (task, waker) = task();
        let mut cx = Context::from_waker(&waker);
        let _ = s.poll_deliveries(1, &mut cx); // the attach's wake
        s.enqueue(delivery(10, QoS::AtMostOnce));
        assert!(s.poll_deliveries(1, &mut cx).is_ready(), "the first delivery wakes");
        s.enqueue(delivery(10, QoS::AtMostOnce));
        let mut out = Vec::new();
        let drained_at = 10_000;
        let _ = s.drain(&mut out, 1, usize::MAX, drained_at); // takes one, leaves one, forgets to come back
        assert!(s.poll_deliveries(1, &mut cx).is_pending());
        assert!(!s.wake_if_stalled(drained_at, 2_000), "not yet: it drained just now");
        s.set_writer_blocked(true);
        assert!(!s.wake_if_stalled(drained_at + 5_000, 2_000), "a blocked write is a slow reader, not a stall");
        s.set_writer_blocked(false);
        let before = woken(&task);
        assert!(s.wake_if_stalled(drained_at + 5_000, 2_000), "deliveries left, no wake, no progress");
        assert_eq!(woken(&task), before + 1);
        assert!(s.poll_deliveries(1, &mut cx).is_ready());
    }
}

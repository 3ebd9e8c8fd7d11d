//! The session's side of an attached connection's liveness: waking its
//! task when deliveries wait (a waker slot and a flag, so the task's idle
//! wait holds no future), and the deadlines the broker's once-a-second sweep
//! enforces (keep-alive, credential expiry), so no connection holds a timer.
//! Must never: take the session's lock (everything here is atomics).

use super::Session;
use crate::model::CloseReason;
use std::sync::atomic::Ordering;

impl Session {
    /// Ready when deliveries may be waiting (registers the task to be woken
    /// otherwise). Never loses a wake-up: a wake that happens while nobody
    /// waits is kept for the next call.
    pub fn poll_deliveries(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.wake_pending.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        self.wake.register(cx.waker());
        // A wake between the check and the registration is seen here.
        if self.wake_pending.swap(false, Ordering::AcqRel) {
            return std::task::Poll::Ready(());
        }
        std::task::Poll::Pending
    }

    /// Marks deliveries as waiting and wakes the attached connection's task.
    pub(super) fn wake_writer(&self) {
        self.wake_pending.store(true, Ordering::Release);
        self.wake.wake();
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

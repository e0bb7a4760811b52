//! openraft's async runtime: tokio's, except that no timeout openraft sets is shorter than
//! [`RPC_TIMEOUT_FLOOR`].
//!
//! openraft 0.9 gives an AppendEntries (and the heartbeat round behind a linearizable read)
//! one heartbeat interval — 100 ms — to be answered, and then sends it again. A follower that
//! must fsync a batch under load takes longer than that, so the leader resent the same
//! appends while the follower was still writing them, the follower queued the copies, and no
//! write committed again (issue 13: 20,000 jobs on 3 servers; 10,000 with writes while they
//! fire). Heartbeats stay at 100 ms and elections as fast as before; only how long an
//! answer may take changes. The runtime is the one place openraft takes its timeouts from.

use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};

/// The shortest time an RPC openraft sends may take before it counts as lost.
pub const RPC_TIMEOUT_FLOOR: Duration = Duration::from_secs(1);

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Runtime;

type Tokio = TokioRuntime;

impl AsyncRuntime for Runtime {
    type JoinError = <Tokio as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <Tokio as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as AsyncRuntime>::Sleep;
    type Instant = <Tokio as AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = <Tokio as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = <Tokio as AsyncRuntime>::ThreadLocalRng;
    type OneshotSender<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiver<T: OptionalSend> = <Tokio as AsyncRuntime>::OneshotReceiver<T>;
    type OneshotReceiverError = <Tokio as AsyncRuntime>::OneshotReceiverError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(duration.max(RPC_TIMEOUT_FLOOR), future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        Tokio::thread_rng()
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        Tokio::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_heartbeat_long_timeout_waits_for_the_floor() {
        // What openraft asks of an append: one heartbeat interval.
        let heartbeat = Duration::from_millis(100);
        let slow_answer = tokio::time::sleep(Duration::from_millis(400));
        assert!(Runtime::timeout(heartbeat, slow_answer).await.is_ok());
        let lost = Runtime::timeout(heartbeat, std::future::pending::<()>());
        tokio::pin!(lost);
        let just_before = RPC_TIMEOUT_FLOOR - Duration::from_millis(1);
        assert!(
            tokio::time::timeout(just_before, &mut lost).await.is_err(),
            "given up before the floor"
        );
        assert!(lost.await.is_err(), "given up at the floor");
    }
}

//! Order executor tests: real shell runs through [`OrderExecutor`], and the decisions of its
//! [`Table`](super::table) on hand-made orders.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::rpc::wire::RunOrder;

pub(super) fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// An order for a shell `command` (run through the shell).
pub(super) fn shell_order(id: &str, resumed: bool, started_at: &str, command: &str) -> RunOrder {
    RunOrder {
        config: [
            ("command".to_string(), command.to_string()),
            ("shell".to_string(), "true".to_string()),
        ]
        .into(),
        ..order(id, resumed, started_at)
    }
}

pub(super) fn order(id: &str, resumed: bool, started_at: &str) -> RunOrder {
    RunOrder {
        job_name: "j".into(),
        executor: "shell".into(),
        config: BTreeMap::new(),
        execution_id: id.into(),
        scheduled_time: started_at.into(),
        fencing_token: 1,
        resumed,
        started_at: Some(ts(started_at)),
    }
}

pub(super) fn result(output: &str) -> RunResult {
    RunResult {
        success: true,
        output: output.into(),
        stopped: false,
    }
}

/// A node restarts: a resumed order for a run that finished in the previous process gets its
/// result from the journal; one for a run that started there and never finished is refused
/// as lost; one for a run that never started runs now, although it was due before this
/// process came up (the start journal says so).
#[tokio::test]
async fn after_a_restart_the_journal_tells_started_runs_from_never_started_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("started.redb");
    let marker = dir.path().join("runs");
    let t0 = ts("2026-01-01T00:00:00Z");
    let clock = crate::clock::ManualClock::starting_at(t0);
    let shared: SharedClock = clock.clone();
    let run = |id: &str, resumed: bool, due: Timestamp, then: &str| {
        shell_order(
            id,
            resumed,
            &due.to_string(),
            &format!("echo {id} >> {}{then}", marker.display()),
        )
    };
    let before = Arc::new(
        OrderExecutor::new(shared.clone())
            .with_journal(StartJournal::open(&path, shared.clone()).unwrap()),
    );
    let a_due = t0 + SignedDuration::from_secs(100);
    let a = before.execute(run("a", false, a_due, "; echo out-a")).await;
    assert!(a.unwrap().success);
    // Started, then the process dies before it finishes.
    let d_due = t0 + SignedDuration::from_secs(110);
    let running = tokio::spawn({
        let before = before.clone();
        let order = run("d", false, d_due, "; sleep 30");
        async move { before.execute(order).await }
    });
    let started = tokio::time::timeout(Duration::from_secs(10), async {
        while !std::fs::read_to_string(&marker)
            .unwrap_or_default()
            .contains('d')
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    started.await.expect("d starts");
    before.abort_all();
    let _ = running.await;
    before.close().await;
    drop(before);

    clock.set(t0 + SignedDuration::from_secs(200));
    let after = OrderExecutor::new(shared.clone())
        .with_journal(StartJournal::open(&path, shared.clone()).unwrap());
    let answered = after.execute(run("a", true, a_due, "")).await.unwrap();
    assert!(
        answered.success && answered.output.contains("out-a"),
        "{answered:?}"
    );
    let lost = after.execute(run("d", true, d_due, "")).await.unwrap_err();
    assert!(lost.reason.contains("started on this node"), "{lost:?}");
    let b_due = t0 + SignedDuration::from_secs(130);
    assert!(
        after
            .execute(run("b", true, b_due, ""))
            .await
            .unwrap()
            .success
    );
    // Due before the journal existed, or within its margin after: it cannot vouch, so lost.
    let c_due = t0 + SignedDuration::from_millis(500);
    let lost = after.execute(run("c", true, c_due, "")).await.unwrap_err();
    assert!(
        lost.reason.contains("restarted after the run was due"),
        "{lost:?}"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "a\nd\nb\n");
}

#[tokio::test]
async fn the_same_order_twice_runs_once_and_both_get_its_result() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let orders = OrderExecutor::new(crate::clock::system());
    let o = shell_order(
        "twice",
        false,
        "2026-01-01T00:00:00Z",
        &format!("echo ran >> {}; sleep 0.3; echo done", marker.display()),
    );
    let (a, b) = tokio::join!(orders.execute(o.clone()), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        orders.execute(o.clone()).await
    });
    assert_eq!(a, b);
    assert_eq!(a.unwrap().output, "done\n");
    // And once more after it finished.
    assert_eq!(orders.execute(o).await.unwrap().output, "done\n");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
}

#[tokio::test]
async fn a_stopped_run_ends_failed_with_the_reason() {
    let orders = OrderExecutor::new(crate::clock::system());
    let o = shell_order("stopped", false, "2026-01-01T00:00:00Z", "sleep 30");
    assert_eq!(
        orders.answer(o.clone(), Duration::from_millis(50)).await,
        OrderAnswer::Running
    );
    assert!(orders.stop("j", "stopped", "stopped: replaced".into()));
    let result = tokio::time::timeout(Duration::from_secs(5), orders.execute(o))
        .await
        .expect("the run ends at once")
        .unwrap();
    assert!(!result.success);
    assert_eq!(result.output, "dkron: stopped: replaced\n");
    assert!(
        !orders.stop("j", "stopped", "again".into()),
        "nothing left to stop"
    );
}

/// Shutting down, a node declines orders for runs it does not know (the leader may place
/// them elsewhere) but still answers for the ones it has.
#[tokio::test]
async fn a_closing_node_declines_new_orders_and_answers_known_ones() {
    let orders = OrderExecutor::new(crate::clock::system());
    let known = order("known", false, "2026-01-01T00:00:00Z");
    assert!(orders.execute(known.clone()).await.is_ok());
    orders.abort_all();
    let answer = orders
        .answer(
            order("new", false, "2026-01-01T00:00:00Z"),
            crate::rpc::wire::EXECUTE_HOLD,
        )
        .await;
    assert!(
        matches!(answer, OrderAnswer::NotStarted { ref reason } if reason.contains("shutting down")),
        "{answer:?}"
    );
    assert!(matches!(
        orders.answer(known, crate::rpc::wire::EXECUTE_HOLD).await,
        OrderAnswer::Done { .. }
    ));
}

#[tokio::test]
async fn draining_lets_runs_in_progress_finish_and_declines_new_ones() {
    let orders = OrderExecutor::new(crate::clock::system());
    let o = shell_order(
        "going",
        false,
        "2026-01-01T00:00:00Z",
        "sleep 0.3; echo finished",
    );
    assert_eq!(
        orders.answer(o.clone(), Duration::from_millis(10)).await,
        OrderAnswer::Running
    );
    assert_eq!(orders.drain(Duration::from_secs(10)).await, 0);
    assert!(matches!(
        orders
            .answer(
                order("new", false, "2026-01-01T00:00:00Z"),
                crate::rpc::wire::EXECUTE_HOLD
            )
            .await,
        OrderAnswer::NotStarted { .. }
    ));
    assert_eq!(orders.execute(o).await.unwrap().output, "finished\n");
}

/// A run longer than the grace is still going when drain gives up, after the whole grace and
/// no longer (timer-driven: paused time).
#[tokio::test(start_paused = true)]
async fn draining_gives_up_after_the_grace() {
    let long = shell_order("long", false, "2026-01-01T00:00:00Z", "sleep 3600");
    let orders = OrderExecutor::new(crate::clock::system());
    assert_eq!(
        orders.answer(long, Duration::from_millis(10)).await,
        OrderAnswer::Running
    );
    let started = crate::clock::monotonic();
    assert_eq!(orders.drain(SHUTDOWN_GRACE).await, 1, "one run still going");
    let waited = crate::clock::since(started);
    assert!(
        waited >= SHUTDOWN_GRACE && waited < SHUTDOWN_GRACE + Duration::from_millis(100),
        "{waited:?}"
    );
    orders.abort_all();
}

#[tokio::test]
async fn a_held_order_answers_running_then_the_result() {
    let orders = OrderExecutor::new(crate::clock::system());
    let o = shell_order(
        "held",
        false,
        "2026-01-01T00:00:00Z",
        "sleep 0.4; echo late",
    );
    let hold = Duration::from_millis(50);
    assert_eq!(orders.answer(o.clone(), hold).await, OrderAnswer::Running);
    let done = loop {
        match orders.answer(o.clone(), hold).await {
            OrderAnswer::Running => continue,
            other => break other,
        }
    };
    assert_eq!(
        done,
        OrderAnswer::Done {
            result: RunResult {
                success: true,
                output: "late\n".into(),
                stopped: false,
            }
        }
    );
}

#[tokio::test]
async fn output_is_readable_while_the_run_goes_and_not_after() {
    let orders = OrderExecutor::new(crate::clock::system());
    let o = shell_order(
        "live",
        false,
        "2026-01-01T00:00:00Z",
        "echo early; sleep 0.4; echo late",
    );
    let hold = Duration::from_millis(50);
    assert_eq!(orders.answer(o.clone(), hold).await, OrderAnswer::Running);
    let deadline = crate::clock::monotonic() + Duration::from_secs(5);
    while orders.output("j", "live").as_deref() != Some("early\n") {
        assert!(crate::clock::monotonic() < deadline, "no live output");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while orders.answer(o.clone(), hold).await == OrderAnswer::Running {}
    // Ended: the output is the leader's to publish, after the job's processors.
    assert_eq!(orders.output("j", "live"), None);
    assert_eq!(orders.output("j", "unknown"), None);
}

#[tokio::test]
async fn a_node_limited_to_some_executors_refuses_orders_for_others_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let orders = OrderExecutor::new(crate::clock::system()).with_executors(&["http".to_string()]);
    let o = shell_order(
        "limited",
        false,
        "2026-01-01T00:00:00Z",
        &format!("touch {}", marker.display()),
    );
    let refused = orders.execute(o).await.unwrap_err();
    assert!(refused.reason.contains("--executors"), "{}", refused.reason);
    assert!(!marker.exists(), "a refused order ran");
    // Without the limit the same order runs.
    let all = OrderExecutor::new(crate::clock::system());
    let o = shell_order(
        "limited",
        false,
        "2026-01-01T00:00:00Z",
        &format!("touch {}", marker.display()),
    );
    assert!(all.execute(o).await.unwrap().success);
    assert!(marker.exists());
}

#[tokio::test]
async fn a_resumed_order_after_the_result_left_memory_is_answered_from_the_journal_not_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("runs");
    let t0 = ts("2026-01-01T00:00:00Z");
    let clock = crate::clock::ManualClock::starting_at(t0);
    let shared: SharedClock = clock.clone();
    let orders = OrderExecutor::new(shared.clone()).with_journal(
        StartJournal::open(&dir.path().join("started.redb"), shared.clone()).unwrap(),
    );
    let due = t0 + SignedDuration::from_secs(100);
    let command = format!("echo ran >> {}; echo out", marker.display());
    clock.set(due);
    let first = orders
        .execute(shell_order("r", false, &due.to_string(), &command))
        .await;
    assert!(first.unwrap().success);
    // Leaders change: no order at all reaches the node until the result left memory.
    clock.advance(table::RESULT_IN_MEMORY + Duration::from_secs(5));
    let mut resumed = shell_order("r", true, &due.to_string(), &command);
    resumed.fencing_token = 4;
    let again = tokio::time::timeout(Duration::from_secs(10), orders.execute(resumed))
        .await
        .expect("answered");
    // From the journal: its result if already written there, else closed as lost.
    match again {
        Ok(result) => assert_eq!(result.output, "out\n"),
        Err(refusal) => assert!(refusal.reason.contains("started on this node before")),
    }
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "ran\n");
}

//! Admission into the replicated log when the leader falls behind.
//!
//! The leader's own work — claiming occurrences, starting, finishing, moving runs, recording
//! skips — always queues: refusing it would drop a scheduled occurrence or lose a result.
//! Client writes (jobs, ACLs, deleting executions) are refused with a retry delay once
//! `capacity` commands already wait, so an API caller gets a 503 with `Retry-After` instead
//! of a request that hangs behind a backlog it cannot see. Except what takes load off:
//! deleting a job, saving it disabled, pausing submissions (which Dkron always answers 200).
//! An overloaded cluster that refused those could not be brought back by its operator
//! (measured: 0 of 10,000 deletes in 180 s at 20,000 jobs).

use crate::command::Command;

/// What to do with one proposed command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Queue,
    /// Refused: ask again after this many seconds.
    Shed {
        retry_after_s: u64,
    },
}

/// The longest `Retry-After` given.
const MAX_RETRY_AFTER_S: u64 = 30;

/// Whether a command takes load off (deleting a job, saving it disabled, pausing
/// submissions): never refused, and proposed ahead of the work already queued, which it would
/// otherwise wait behind (measured: 21 deletes a second while 30,000 jobs `@every 5s` kept the
/// leader 3 to 7 s behind).
pub fn relieves(command: &Command) -> bool {
    match command {
        Command::DeleteJob { .. } | Command::SetPaused { .. } => true,
        Command::SetJob { job, .. } => job.disabled,
        Command::Batch { commands } => !commands.is_empty() && commands.iter().all(relieves),
        _ => false,
    }
}

/// Whether a client asked for this command (and may be told to come back later).
pub fn sheddable(command: &Command) -> bool {
    match command {
        command if relieves(command) => false,
        // (Always relieves, above.)
        Command::DeleteJob { .. } | Command::SetPaused { .. } => false,
        Command::SetJob { .. }
        | Command::ToggleJob { .. }
        | Command::DeleteExecutions { .. }
        | Command::Acl { .. } => true,
        Command::StartExecution { .. }
        | Command::MoveExecution { .. }
        | Command::ClaimOccurrence { .. }
        | Command::SkipOccurrences { .. }
        | Command::FinishExecution { .. } => false,
        // A batch is the client's only if everything in it is.
        Command::Batch { commands } => commands.iter().all(sheddable),
    }
}

/// How many log commands `command` carries (a batch, its members).
pub fn weight(command: &Command) -> usize {
    match command {
        Command::Batch { commands } => commands.iter().map(weight).sum::<usize>().max(1),
        _ => 1,
    }
}

/// Admits `command` while `pending` commands wait for the log, of at most `capacity` a
/// client may queue behind. The delay grows with the backlog: a second per `capacity`
/// commands waiting, at least 1 s, at most 30 s.
pub fn admit(command: &Command, pending: usize, capacity: usize) -> Admission {
    if pending < capacity || !sheddable(command) {
        return Admission::Queue;
    }
    let backlog = (pending / capacity.max(1)) as u64;
    Admission::Shed {
        retry_after_s: backlog.clamp(1, MAX_RETRY_AFTER_S),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create() -> Command {
        Command::SetJob {
            job: Box::new(crate::job::Job {
                name: "j".into(),
                ..Default::default()
            }),
            now: jiff::Timestamp::UNIX_EPOCH,
            refuse_when_paused: true,
        }
    }

    /// The leader's own work: a run moving to another node.
    fn finish() -> Command {
        Command::MoveExecution {
            job: "j".into(),
            execution_id: "e".into(),
            from: "a".into(),
            to: "b".into(),
        }
    }

    #[test]
    fn client_writes_queue_below_capacity_and_are_shed_at_it() {
        assert_eq!(admit(&create(), 0, 10), Admission::Queue);
        assert_eq!(admit(&create(), 9, 10), Admission::Queue);
        assert_eq!(
            admit(&create(), 10, 10),
            Admission::Shed { retry_after_s: 1 }
        );
        assert_eq!(
            admit(&create(), 55, 10),
            Admission::Shed { retry_after_s: 5 }
        );
        assert_eq!(
            admit(&create(), 10_000, 10),
            Admission::Shed { retry_after_s: 30 }
        );
        assert_eq!(admit(&create(), 0, 0), Admission::Shed { retry_after_s: 1 });
    }

    #[test]
    fn what_takes_load_off_is_never_shed() {
        let delete = Command::DeleteJob { name: "j".into() };
        assert_eq!(admit(&delete, 1_000_000, 10), Admission::Queue);
        let Command::SetJob {
            job,
            now,
            refuse_when_paused,
        } = create()
        else {
            unreachable!()
        };
        let disable = Command::SetJob {
            job: Box::new(crate::job::Job {
                disabled: true,
                ..*job
            }),
            now,
            refuse_when_paused,
        };
        assert_eq!(admit(&disable, 1_000_000, 10), Admission::Queue);
        for paused in [true, false] {
            let pause = Command::SetPaused { paused };
            assert_eq!(admit(&pause, 1_000_000, 10), Admission::Queue);
        }
        // ... and goes ahead of the queued work; an enabled job's save, a finish, a claim
        // and a batch with anything else in it wait their turn.
        assert!(relieves(&delete) && relieves(&disable));
        assert!(relieves(&Command::Batch {
            commands: vec![delete.clone(), disable.clone()]
        }));
        assert!(!relieves(&Command::Batch {
            commands: vec![delete.clone(), create()]
        }));
        assert!(!relieves(&Command::Batch { commands: vec![] }));
        assert!(!relieves(&create()) && !relieves(&finish()));
        // An enabled job's save is shed as before.
        assert!(sheddable(&create()));
    }

    #[test]
    fn the_leaders_own_work_is_never_shed() {
        assert!(!sheddable(&finish()));
        assert_eq!(admit(&finish(), 1_000_000, 1), Admission::Queue);
        let mixed = Command::Batch {
            commands: vec![create(), finish()],
        };
        assert!(!sheddable(&mixed));
        assert_eq!(weight(&mixed), 2);
        let clients = Command::Batch {
            commands: vec![create(), create(), create()],
        };
        assert!(sheddable(&clients));
        assert_eq!(weight(&clients), 3);
        assert_eq!(weight(&Command::Batch { commands: vec![] }), 1);
    }
}

//! Each rule of the judgement, with the defect it must catch planted in otherwise clean
//! evidence; and clean evidence judged clean.

use super::*;

const LOST: &str =
    "dkron: the run started on this node before it restarted; whether it finished is unknown";
const CUT: &str = "error sending request for url (http://sink/)";

fn jobs() -> Vec<String> {
    vec!["tick0".into(), "tick1".into()]
}

fn kill_on(node: &str) -> Phase {
    Phase {
        label: "leader SIGKILL + restart".into(),
        kind: FaultKind::Kill,
        node: node.into(),
        fault_secs: 2,
        from: 100,
        to: 110,
    }
}

fn run(job: &str, second: i64, success: bool, node: &str, output: &str) -> Run {
    Run {
        job: job.into(),
        id: format!("{second}000-{node}-{job}"),
        group: second * 1000,
        second,
        attempt: 1,
        running: false,
        success,
        node: node.into(),
        output: output.into(),
    }
}

/// Every occurrence of the window reached the sink once, except those listed.
fn hits_except(phase: &Phase, missing: &[(&str, i64)]) -> BTreeMap<(String, i64), usize> {
    let mut hits = BTreeMap::new();
    for job in jobs() {
        for s in phase.from..phase.to {
            if !missing.contains(&(job.as_str(), s)) {
                hits.insert((job.clone(), s), 1);
            }
        }
    }
    hits
}

fn ran(r: &Run) -> BTreeMap<(String, i64), Verdict> {
    [(
        (r.job.clone(), r.second),
        Verdict::Ran {
            ids: vec![r.id.clone()],
        },
    )]
    .into()
}

#[test]
fn clean_evidence_is_judged_clean() {
    let phase = kill_on("d1");
    let lost = run("tick0", 105, false, "d1", LOST);
    let f = judge_phase(
        &phase,
        &jobs(),
        &hits_except(&phase, &[("tick0", 105)]),
        std::slice::from_ref(&lost),
        &ran(&lost),
    );
    assert!(f.problems.is_empty(), "{:?}", f.problems);
    assert!(f.duplicates.is_empty() && f.silent.is_empty());
    assert_eq!(f.occurrences, 20);
    assert_eq!(f.failed_total(), 1);
}

#[test]
fn a_duplicate_at_the_sink_is_caught() {
    let phase = kill_on("d1");
    let mut hits = hits_except(&phase, &[]);
    hits.insert(("tick1".into(), 103), 2);
    let f = judge_phase(&phase, &jobs(), &hits, &[], &BTreeMap::new());
    assert_eq!(f.duplicates, [("tick1".to_string(), 103)]);
}

#[test]
fn a_miss_without_record_is_silent_and_one_still_running_is_in_flight() {
    let phase = kill_on("d1");
    let mut going = run("tick1", 104, false, "d1", "");
    going.running = true;
    let f = judge_phase(
        &phase,
        &jobs(),
        &hits_except(&phase, &[("tick0", 101), ("tick1", 104)]),
        &[going],
        &BTreeMap::new(),
    );
    assert_eq!(f.silent, [("tick0".to_string(), 101)]);
    assert_eq!(f.in_flight, 1);
}

#[test]
fn a_failure_without_its_verdict_is_a_problem() {
    let phase = kill_on("d1");
    let lost = run("tick0", 105, false, "d1", LOST);
    let hits = hits_except(&phase, &[("tick0", 105)]);
    for verdicts in [
        BTreeMap::new(),
        [(("tick0".to_string(), 105), Verdict::NoRecord)].into(),
        [(
            ("tick0".to_string(), 105),
            Verdict::Ran {
                ids: vec!["another".into()],
            },
        )]
        .into(),
    ] {
        let f = judge_phase(
            &phase,
            &jobs(),
            &hits,
            std::slice::from_ref(&lost),
            &verdicts,
        );
        assert!(
            f.problems.iter().any(|p| p.contains("/occurrences says")),
            "{verdicts:?}: {:?}",
            f.problems
        );
    }
}

#[test]
fn an_unknown_reason_a_success_that_never_arrived_or_a_skip_is_a_problem() {
    let phase = kill_on("d1");
    let hits = hits_except(&phase, &[("tick0", 105)]);
    let odd = run("tick0", 105, false, "d1", "exit status 1");
    let f = judge_phase(
        &phase,
        &jobs(),
        &hits,
        std::slice::from_ref(&odd),
        &ran(&odd),
    );
    assert!(f.problems[0].contains("does not know"), "{:?}", f.problems);
    let phantom = run("tick0", 105, true, "d1", "");
    let f = judge_phase(
        &phase,
        &jobs(),
        &hits,
        std::slice::from_ref(&phantom),
        &ran(&phantom),
    );
    assert!(
        f.problems[0].contains("never reached the sink"),
        "{:?}",
        f.problems
    );
    let skipped = [(
        ("tick0".to_string(), 105),
        Verdict::Skipped {
            reason: "past_deadline".into(),
        },
    )]
    .into();
    let f = judge_phase(&phase, &jobs(), &hits, &[], &skipped);
    assert!(f.problems[0].contains("skipped"), "{:?}", f.problems);
    assert!(f.silent.is_empty());
}

#[test]
fn a_failure_on_a_node_the_phase_did_not_touch_is_a_problem() {
    let phase = kill_on("d1");
    let elsewhere = run("tick0", 105, false, "d2", LOST);
    let f = judge_phase(
        &phase,
        &jobs(),
        &hits_except(&phase, &[("tick0", 105)]),
        std::slice::from_ref(&elsewhere),
        &ran(&elsewhere),
    );
    assert!(f.problems[0].contains("did not touch"), "{:?}", f.problems);
}

#[test]
fn more_scheduler_failures_than_jobs_fail_the_phase() {
    let phase = kill_on("d1");
    let lost: Vec<Run> = [("tick0", 101), ("tick0", 102), ("tick1", 103)]
        .iter()
        .map(|(j, s)| run(j, *s, false, "d1", LOST))
        .collect();
    let verdicts: BTreeMap<_, _> = lost.iter().flat_map(ran).collect();
    let missing: Vec<(&str, i64)> = lost.iter().map(|r| (r.job.as_str(), r.second)).collect();
    let f = judge_phase(
        &phase,
        &jobs(),
        &hits_except(&phase, &missing),
        &lost,
        &verdicts,
    );
    assert!(
        f.problems
            .iter()
            .any(|p| p.contains("more than the 2 jobs")),
        "{:?}",
        f.problems
    );
}

#[test]
fn a_jobs_own_failure_counts_only_where_a_node_was_cut_off() {
    let cut = run("tick1", 106, false, "d3", CUT);
    let hits = |p: &Phase| hits_except(p, &[("tick1", 106)]);
    let kill = kill_on("d3");
    let f = judge_phase(
        &kill,
        &jobs(),
        &hits(&kill),
        std::slice::from_ref(&cut),
        &ran(&cut),
    );
    assert!(
        f.problems[0].contains("no node was cut off"),
        "{:?}",
        f.problems
    );
    let partition = Phase {
        kind: FaultKind::Partition,
        label: "old leader partitioned".into(),
        fault_secs: 8,
        ..kill_on("d3")
    };
    let f = judge_phase(
        &partition,
        &jobs(),
        &hits(&partition),
        std::slice::from_ref(&cut),
        &ran(&cut),
    );
    assert!(f.problems.is_empty(), "{:?}", f.problems);
}

#[test]
fn the_ledger_catches_two_triggers_of_one_occurrence_seen_at_different_times() {
    let mut ledger = Ledger::default();
    let first = run("tick0", 105, true, "d1", "");
    ledger.record(std::slice::from_ref(&first));
    // A retry of the same trigger is not a duplicate ...
    let mut retry = run("tick0", 106, false, "d1", "x");
    let mut second_try = retry.clone();
    second_try.id = "retry".into();
    second_try.attempt = 2;
    second_try.success = true;
    retry.group = second_try.group;
    ledger.record(&[retry, second_try]);
    assert!(ledger.duplicates().is_empty(), "{:?}", ledger.duplicates());
    // ... a second trigger of an occurrence, recorded later, is.
    let mut again = run("tick0", 105, true, "d2", "");
    again.group += 1;
    ledger.record(&[again]);
    let found = ledger.duplicates();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("tick0 @ 105"), "{found:?}");
}

#[test]
fn the_final_sweep_catches_a_duplicate_that_arrived_after_its_phase() {
    let hits = vec![
        ("tick0".to_string(), 100),
        ("tick0".to_string(), 101),
        ("tick0".to_string(), 100),
    ];
    assert_eq!(
        late_duplicates(&hits, 100, 110),
        [("tick0".to_string(), 100)]
    );
    assert!(late_duplicates(&hits, 101, 110).is_empty());
}

/// Plays the writes the harness would make, all acknowledged.
fn played(n: usize) -> (Writes, Present) {
    let mut writes = Writes::default();
    let mut present = Present::new();
    for _ in 0..n {
        let (kind, name, version) = writes.plan();
        match kind {
            WriteKind::Create => {
                present.insert(name.clone(), (version, false));
            }
            WriteKind::Update => {
                present.get_mut(&name).unwrap().0 = version;
            }
            WriteKind::Toggle => {
                let d = &mut present.get_mut(&name).unwrap().1;
                *d = !*d;
            }
            WriteKind::Delete => {
                present.remove(&name);
            }
        }
        writes.acknowledged(kind, &name, version);
    }
    (writes, present)
}

#[test]
fn acknowledged_writes_of_every_kind_are_checked() {
    let (writes, present) = played(24);
    assert!(
        writes.check(&present, 3).is_empty(),
        "{:?}",
        writes.check(&present, 3)
    );
    assert!(writes.certain() >= 4);
    assert!(
        present.values().any(|(_, disabled)| *disabled),
        "toggles leave some disabled"
    );
    // A lost create, a lost update, a lost toggle, a resurrected delete.
    let deleted = writes
        .expected
        .iter()
        .find(|(_, e)| e.is_some_and(|e| !e.exists))
        .map(|(n, _)| n.clone())
        .unwrap();
    type Plant = Box<dyn Fn(&mut Present)>;
    let plants: Vec<(&str, Plant)> = vec![
        (
            "missing",
            Box::new(|p: &mut Present| {
                let first = p.keys().next().unwrap().clone();
                p.remove(&first);
            }),
        ),
        (
            "version",
            Box::new(|p: &mut Present| p.values_mut().next().unwrap().0 = 0),
        ),
        (
            "disabled",
            Box::new(|p: &mut Present| {
                let v = p.values_mut().next().unwrap();
                v.1 = !v.1;
            }),
        ),
        (
            "but present",
            Box::new(move |p: &mut Present| {
                p.insert(deleted.clone(), (1, false));
            }),
        ),
    ];
    for (says, plant) in plants {
        let mut p = present.clone();
        plant(&mut p);
        let problems = writes.check(&p, 3);
        assert!(
            problems.iter().any(|m| m.contains(says)),
            "{says}: {problems:?}"
        );
    }
}

#[test]
fn too_few_writes_or_an_unanswered_one_are_accounted_for() {
    let (writes, present) = played(5);
    let problems = writes.check(&present, 3);
    assert!(
        problems.iter().any(|p| p.contains("Delete")),
        "{problems:?}"
    );
    // A write without an answer makes its job uncertain: not asserted either way.
    let (mut writes, mut present) = played(12);
    let name = present.keys().next().unwrap().clone();
    writes.unanswered(&name, "timeout");
    present.remove(&name);
    assert!(
        writes.check(&present, 1).is_empty(),
        "{:?}",
        writes.check(&present, 1)
    );
    assert_eq!(writes.errors["timeout"], 1);
}

//! One test (or a few) per Raft rule, named after the rule. Cluster tests run real cores in the
//! fault-free simulator with every safety checker on; the rest drive one core by hand.

use std::cell::Cell;
use std::rc::Rc;

use bytes::Bytes;
use ordo_common::client::{BusyCode, ClientResponse};
use ordo_common::{Entry, EntryPayload, HardState, LogId, Membership};
use ordo_core::{
    AppendResponse, Body, Config, ConflictHint, InvalidMessage, Message, Output, ProposalId,
    ProposeError, Raft, ReadId, RejectHint, ReplicationMode, Restored, Role, StartError,
    TransferError,
};
use ordo_sim::cluster::{Cluster, ClusterOptions};

fn cluster(nodes: usize, configure: impl Fn(&mut Config) + 'static) -> Cluster {
    let mut options = ClusterOptions::calm(nodes, 11);
    options.configure = Box::new(configure);
    Cluster::new(options)
}

fn settle(c: &mut Cluster) -> u64 {
    assert!(c.run_until(300, Cluster::converged), "{}", c.describe());
    assert!(c.violation().is_none(), "{}", c.violation().unwrap());
    c.leader().unwrap()
}

fn single_node() -> Raft {
    Raft::new(Config::new(1, vec![1]), Restored::default(), 1).unwrap()
}

fn drain(raft: &mut Raft) -> Vec<Output> {
    std::iter::from_fn(|| raft.poll_output()).collect()
}

fn last_persisted(outputs: &[Output]) -> Option<LogId> {
    outputs.iter().rev().find_map(|output| match output {
        Output::PersistEntries(entries) => entries.last().map(Entry::log_id),
        _ => None,
    })
}

// ----- election -----

#[test]
fn election_a_single_node_elects_itself_after_its_timeout() {
    let mut raft = single_node();
    for _ in 0..19 {
        raft.tick();
    }
    assert_eq!(raft.role(), Role::Leader);
    let outputs = drain(&mut raft);
    assert!(outputs.contains(&Output::PersistHardState(HardState {
        term: 1,
        vote: Some(1)
    })));
}

#[test]
fn election_exactly_one_leader_and_everyone_follows_it() {
    for nodes in [3, 5] {
        let mut c = cluster(nodes, |_| {});
        let leader = settle(&mut c);
        let term = c.node(leader).unwrap().term();
        for id in c.ids().to_vec() {
            let raft = c.node(id).unwrap();
            assert_eq!((raft.term(), raft.leader()), (term, Some(leader)));
            assert_eq!(raft.role() == Role::Leader, id == leader);
        }
    }
}

#[test]
fn election_pre_vote_keeps_an_isolated_node_from_raising_its_term() {
    let mut c = cluster(3, |_| {});
    let leader = settle(&mut c);
    let follower = c.ids().iter().copied().find(|id| *id != leader).unwrap();
    let term = c.node(follower).unwrap().term();
    c.isolate(follower);
    c.run(500);
    assert_eq!(c.node(follower).unwrap().term(), term);
    assert_eq!(c.node(follower).unwrap().role(), Role::PreCandidate);
}

#[test]
fn election_check_quorum_deposes_a_leader_that_hears_from_no_majority() {
    let mut c = cluster(3, |_| {});
    let leader = settle(&mut c);
    c.isolate(leader);
    c.run(2 * 10);
    assert_ne!(c.node(leader).unwrap().role(), Role::Leader);
}

#[test]
fn election_a_candidate_with_a_shorter_log_cannot_win() {
    let mut c = cluster(3, |_| {});
    let leader = settle(&mut c);
    let behind = c.ids().iter().copied().find(|id| *id != leader).unwrap();
    c.isolate(behind);
    for _ in 0..5 {
        c.propose(leader, 8).unwrap();
    }
    c.run(5);
    c.heal();
    c.crash(leader);
    c.run(300);
    assert_ne!(c.leader(), Some(behind), "{}", c.describe());
    assert!(c.leader().is_some());
}

#[test]
fn election_followers_that_hear_a_live_leader_ignore_vote_requests() {
    // Node 3 campaigns without pre-vote, so it really raises its term and asks for votes; the
    // others heard from the leader within the election timeout and ignore it.
    let mut c = cluster(3, |config| config.pre_vote = config.id != 3);
    c.campaign(1);
    let leader = settle(&mut c);
    assert_ne!(leader, 3, "seeded so that node 1 or 2 leads");
    let other = 3 - leader;
    let term = c.node(leader).unwrap().term();
    let other_vote = c.node(other).unwrap().hard_state();
    // Only the vote requests matter here: keep node 3's higher-term answers to the leader's
    // heartbeats (which do depose it, by design, so a rejoining node is not locked out) away.
    c.network.cut_one_way(3, leader);
    c.campaign(3);
    assert_eq!(c.node(3).unwrap().term(), term + 1);
    c.run(3);
    assert_eq!(
        c.node(other).unwrap().hard_state(),
        other_vote,
        "the follower ignored the vote"
    );
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(c.node(leader).unwrap().term(), term);
}

// ----- replication -----

#[test]
fn replication_many_entries_travel_in_one_message() {
    let appends = Rc::new(Cell::new(0u64));
    let entries = Rc::new(Cell::new(0u64));
    let mut c = cluster(3, |_| {});
    let leader = settle(&mut c);
    let (appends_seen, entries_seen) = (appends.clone(), entries.clone());
    c.set_filter(Some(Box::new(move |_, _, m: &Message| {
        if let Body::Append {
            entries: carried, ..
        } = &m.body
            && !carried.is_empty()
        {
            appends_seen.set(appends_seen.get() + 1);
            entries_seen.set(entries_seen.get() + carried.len() as u64);
        }
        false
    })));
    c.propose_batch(leader, 100, 16);
    settle(&mut c);
    assert_eq!(entries.get(), 200, "each follower receives each entry once");
    assert_eq!(
        appends.get(),
        2,
        "100 proposals made between polls go out as one append each"
    );
}

#[test]
fn replication_pipelines_within_a_bounded_window_to_a_silent_follower() {
    let sent = Rc::new(Cell::new(0u64));
    let mut c = cluster(3, |config| {
        config.append_entries_max = 1;
        config.inflight_messages_max = 4;
    });
    let leader = settle(&mut c);
    let follower = c.ids().iter().copied().find(|id| *id != leader).unwrap();
    // The follower hears everything but its answers are lost.
    c.network.cut_one_way(follower, leader);
    let counter = sent.clone();
    c.set_filter(Some(Box::new(move |from, to, m: &Message| {
        if from == leader
            && to == follower
            && matches!(&m.body, Body::Append { entries, .. } if !entries.is_empty())
        {
            counter.set(counter.get() + 1);
        }
        false
    })));
    for _ in 0..50 {
        c.propose(leader, 16).unwrap();
    }
    c.deliver_due();
    assert_eq!(sent.get(), 4, "pipelined up to the window, then paused");
    let (mode, _, _) = c
        .node(leader)
        .unwrap()
        .as_raft()
        .unwrap()
        .replication(follower)
        .unwrap();
    assert_eq!(mode, ReplicationMode::Replicate);
}

#[test]
fn replication_conflicting_suffix_is_repaired_in_a_few_round_trips() {
    let rejections = Rc::new(Cell::new(0u64));
    let mut c = cluster(3, |_| {});
    let old = settle(&mut c);
    // The old leader appends 200 entries nobody else gets, then loses leadership.
    c.isolate(old);
    for _ in 0..200 {
        c.propose(old, 8).unwrap();
    }
    c.run(60);
    let counter = rejections.clone();
    c.set_filter(Some(Box::new(move |_, _, m: &Message| {
        if matches!(
            m.body,
            Body::AppendResponse(AppendResponse::Rejected { .. })
        ) {
            counter.set(counter.get() + 1);
        }
        false
    })));
    let new = c.leader().expect("majority elected a leader");
    assert_ne!(new, old);
    for _ in 0..20 {
        c.propose(new, 8).unwrap();
    }
    c.heal();
    settle(&mut c);
    assert!(
        rejections.get() <= 4,
        "{} rejections: back-off skips whole terms",
        rejections.get()
    );
}

#[test]
fn replication_heartbeats_carry_the_commit_index_to_followers() {
    let mut c = cluster(3, |_| {});
    let leader = settle(&mut c);
    c.propose(leader, 8).unwrap();
    // Drop appends after the first delivery so only heartbeats can tell followers the commit.
    c.run(3);
    let last = c.node(leader).unwrap().last_log_id().index;
    c.set_filter(Some(Box::new(|_, _, m: &Message| {
        matches!(m.body, Body::Append { .. })
    })));
    c.run(10);
    for id in c.ids().to_vec() {
        assert_eq!(c.node(id).unwrap().commit_index(), last, "node {id}");
    }
}

// ----- commit -----

#[test]
fn commit_waits_for_the_leaders_own_durable_write() {
    let mut raft = single_node();
    raft.campaign();
    let outputs = drain(&mut raft);
    let noop = last_persisted(&outputs).unwrap();
    assert_eq!(raft.commit_index(), 0, "not durable yet, not committed");
    raft.handle_durable(noop);
    assert_eq!(raft.commit_index(), 1);
    let id = raft
        .propose(ProposalId(7), Bytes::from_static(b"x"))
        .unwrap();
    drain(&mut raft);
    assert_eq!(raft.commit_index(), 1);
    raft.handle_durable(id);
    let outputs = drain(&mut raft);
    assert_eq!(raft.commit_index(), 2);
    let applied = outputs
        .iter()
        .position(|o| matches!(o, Output::Apply(_)))
        .unwrap();
    let replied = outputs
        .iter()
        .position(|o| {
            *o == Output::ProposalResult {
                id: ProposalId(7),
                result: Ok(id),
            }
        })
        .unwrap();
    assert!(applied < replied, "the reply comes after the apply");
}

#[test]
fn commit_ignores_stale_durable_reports() {
    let mut raft = single_node();
    raft.campaign();
    drain(&mut raft);
    raft.handle_durable(LogId::new(7, 1));
    assert_eq!(
        raft.commit_index(),
        0,
        "a report for an entry this log does not hold"
    );
}

#[test]
fn commit_proposals_beyond_the_uncommitted_budget_are_refused() {
    let mut config = Config::new(1, vec![1]);
    config.uncommitted_bytes_max = 1000;
    config.proposal_bytes_max = 600;
    let mut raft = Raft::new(config, Restored::default(), 1).unwrap();
    assert_eq!(
        raft.propose(ProposalId(1), Bytes::new()),
        Err(ProposeError::NotLeader { leader_hint: None })
    );
    raft.campaign();
    drain(&mut raft);
    assert_eq!(
        raft.propose(ProposalId(1), Bytes::from(vec![0; 601])),
        Err(ProposeError::TooLarge {
            bytes: 601,
            limit: 600
        })
    );
    raft.propose(ProposalId(2), Bytes::from(vec![0; 500]))
        .unwrap();
    assert_eq!(
        raft.propose(ProposalId(3), Bytes::from(vec![0; 500])),
        Err(ProposeError::Backpressure { limit: 1000 })
    );
    let outputs = drain(&mut raft);
    raft.handle_durable(last_persisted(&outputs).unwrap());
    raft.propose(ProposalId(4), Bytes::from(vec![0; 500]))
        .expect("room again after commit");
}

#[test]
fn commit_follower_redirects_proposals_to_the_leader() {
    let mut c = cluster(3, |_| {});
    let leader = settle(&mut c);
    let follower = c.ids().iter().copied().find(|id| *id != leader).unwrap();
    let address = format!("sim-node-{leader}:7000");
    assert_eq!(
        c.propose(follower, 8),
        Err(ClientResponse::NotLeader {
            leader: Some(leader),
            leader_address: Some(address)
        })
    );
}

// ----- read index -----

#[test]
fn read_index_is_served_after_a_quorum_round_at_the_commit_index() {
    let mut c = cluster(3, |_| {});
    let leader = settle(&mut c);
    c.propose(leader, 8).unwrap();
    settle(&mut c);
    let commit = c.node(leader).unwrap().commit_index();
    c.read(leader).unwrap();
    assert_eq!(
        c.batches.statuses_served, 0,
        "not before the heartbeat round"
    );
    c.run(3);
    assert_eq!(c.batches.statuses_served, 1);
    assert!(c.node(leader).unwrap().applied_index() >= commit);
}

#[test]
fn read_index_on_a_follower_names_the_leader() {
    let mut c = cluster(3, |_| {});
    let leader = settle(&mut c);
    let follower = c.ids().iter().copied().find(|id| *id != leader).unwrap();
    let address = format!("sim-node-{leader}:7000");
    assert_eq!(
        c.read(follower),
        Err(ClientResponse::NotLeader {
            leader: Some(leader),
            leader_address: Some(address)
        })
    );
}

#[test]
fn read_index_on_a_new_leader_waits_for_its_no_op_to_commit() {
    let mut raft = single_node();
    raft.campaign();
    let outputs = drain(&mut raft);
    raft.read_index(ReadId(1)).unwrap();
    assert!(
        drain(&mut raft)
            .iter()
            .all(|o| !matches!(o, Output::ReadResult { .. }))
    );
    raft.handle_durable(last_persisted(&outputs).unwrap());
    let outputs = drain(&mut raft);
    assert!(outputs.contains(&Output::ReadResult {
        id: ReadId(1),
        result: Ok(1)
    }));
}

// ----- leader transfer -----

#[test]
fn transfer_to_a_named_follower_happens_within_an_election_timeout() {
    let mut c = cluster(5, |_| {});
    let leader = settle(&mut c);
    let target = c.ids().iter().copied().find(|id| *id != leader).unwrap();
    c.transfer(leader, Some(target)).unwrap();
    assert!(
        matches!(
            c.propose(leader, 8),
            Err(ClientResponse::Busy {
                code: BusyCode::TransferInProgress,
                ..
            })
        ),
        "proposals wait while leadership moves"
    );
    assert!(
        c.run_until(9, |c| c.leader() == Some(target)),
        "{}",
        c.describe()
    );
    settle(&mut c);
}

#[test]
fn transfer_without_a_target_picks_the_most_up_to_date_follower() {
    let mut c = cluster(3, |_| {});
    let leader = settle(&mut c);
    let mut others = c.ids().iter().copied().filter(|id| *id != leader);
    let (behind, ahead) = (others.next().unwrap(), others.next().unwrap());
    c.network.cut_both_ways(leader, behind);
    c.propose(leader, 8).unwrap();
    c.run(3);
    assert_eq!(c.transfer(leader, None), Ok(ahead));
}

#[test]
fn transfer_refuses_bad_targets() {
    let mut c = cluster(3, |_| {});
    let leader = settle(&mut c);
    assert_eq!(
        c.transfer(leader, Some(leader)),
        Err(TransferError::TargetIsSelf)
    );
    assert_eq!(
        c.transfer(leader, Some(9)),
        Err(TransferError::UnknownNode(9))
    );
    let follower = c.ids().iter().copied().find(|id| *id != leader).unwrap();
    assert_eq!(
        c.transfer(follower, None),
        Err(TransferError::NotLeader {
            leader_hint: Some(leader)
        })
    );
    assert_eq!(
        single_node_leader().transfer_leadership(None),
        Err(TransferError::NoFollower)
    );
}

fn single_node_leader() -> Raft {
    let mut raft = single_node();
    raft.campaign();
    drain(&mut raft);
    raft
}

// ----- bad input and restarts -----

#[test]
fn malformed_and_foreign_messages_are_refused_without_panicking() {
    let restored = Restored {
        membership: Some(Membership {
            voters: [1, 2, 3].into(),
            retired: [9].into(),
            ..Membership::default()
        }),
        ..Restored::default()
    };
    let mut raft = Raft::new(Config::new(1, vec![1, 2, 3]), restored, 3).unwrap();
    let heartbeat = Message {
        term: 1,
        body: Body::Heartbeat {
            commit_index: 99,
            read_round: 0,
        },
    };
    assert_eq!(
        raft.handle_message(9, heartbeat.clone()),
        Err(InvalidMessage::RetiredSender(9))
    );
    assert_eq!(
        raft.handle_message(1, heartbeat),
        Err(InvalidMessage::FromSelf)
    );
    let gap = Message {
        term: 2,
        body: Body::Append {
            prev_log_id: LogId::new(0, 0),
            entries: vec![Entry {
                term: 2,
                index: 5,
                payload: EntryPayload::Noop,
            }],
            commit_index: 0,
        },
    };
    assert!(matches!(
        raft.handle_message(2, gap),
        Err(InvalidMessage::MalformedAppend(_))
    ));
    let future = Message {
        term: 2,
        body: Body::Append {
            prev_log_id: LogId::new(0, 0),
            entries: vec![Entry {
                term: 3,
                index: 1,
                payload: EntryPayload::Noop,
            }],
            commit_index: 0,
        },
    };
    assert!(matches!(
        raft.handle_message(2, future),
        Err(InvalidMessage::MalformedAppend(_))
    ));
    assert_eq!(raft.term(), 0, "refused messages change nothing");
}

/// Mostly a plausible value below `bound`, sometimes a hostile one at the top of the range.
fn extreme(rng: &mut ordo_core::rng::Prng, bound: u64) -> u64 {
    match rng.below(20) {
        0 => u64::MAX,
        1 => u64::MAX - 1,
        2 => u64::MAX / 2 + 1,
        _ => rng.below(bound),
    }
}

#[test]
fn arbitrary_message_storms_never_panic_the_core() {
    let mut rng = ordo_core::rng::Prng::new(99);
    for round in 0..200 {
        let mut raft =
            Raft::new(Config::new(1, vec![1, 2, 3]), Restored::default(), round).unwrap();
        for _ in 0..200 {
            // Mostly plausible values, sometimes hostile ones at the top of the range.
            let term = extreme(&mut rng, 5);
            let index = extreme(&mut rng, 8);
            let far = extreme(&mut rng, 10);
            let body = match rng.below(8) {
                0 => Body::Vote {
                    last_log_id: LogId::new(rng.below(5), index),
                    pre_vote: rng.chance_percent(50),
                    leader_transfer: rng.chance_percent(20),
                },
                1 => Body::VoteResponse {
                    pre_vote: rng.chance_percent(50),
                    granted: rng.chance_percent(50),
                },
                2 => {
                    let first_term = rng.below(term.saturating_add(1));
                    let entries = (0..rng.below(4))
                        .map(|k| Entry {
                            term: first_term,
                            index: index.wrapping_add(1 + k),
                            payload: EntryPayload::Noop,
                        })
                        .collect();
                    let prev_log_id = LogId::new(rng.below(first_term.saturating_add(1)), index);
                    Body::Append {
                        prev_log_id,
                        entries,
                        commit_index: rng.below(10),
                    }
                }
                3 => Body::AppendResponse(AppendResponse::Accepted { match_index: far }),
                6 => Body::AppendResponse(AppendResponse::Rejected {
                    rejected_prev_index: index,
                    hint: RejectHint {
                        last_index: far,
                        conflict: Some(ConflictHint {
                            term,
                            first_index: far,
                        }),
                    },
                }),
                4 => Body::Heartbeat {
                    commit_index: far,
                    read_round: rng.below(3),
                },
                5 => Body::HeartbeatResponse {
                    read_round: rng.below(3),
                },
                _ => Body::TimeoutNow,
            };
            let _ = raft.handle_message(2 + rng.below(2), Message { term, body });
            if rng.chance_percent(20) {
                raft.tick();
            }
            let outputs = drain(&mut raft);
            if let Some(last) = last_persisted(&outputs) {
                raft.handle_durable(last);
            }
            drain(&mut raft);
        }
    }
}

#[test]
fn restore_refuses_inconsistent_state() {
    let entry = |term, index| Entry {
        term,
        index,
        payload: EntryPayload::Noop,
    };
    let restore = |hard_state, entries| {
        Raft::new(
            Config::new(1, vec![1]),
            Restored {
                hard_state,
                prev_log_id: LogId::default(),
                entries,
                applied: 0,
                stored_first: 1,
                membership: None,
            },
            1,
        )
    };
    let hard_state = HardState {
        term: 3,
        vote: None,
    };
    assert!(matches!(
        restore(hard_state, vec![entry(1, 1), entry(1, 3)]),
        Err(StartError::Restore(_))
    ));
    assert!(matches!(
        restore(hard_state, vec![entry(2, 1), entry(1, 2)]),
        Err(StartError::Restore(_))
    ));
    assert!(matches!(
        restore(hard_state, vec![entry(4, 1)]),
        Err(StartError::Restore(_))
    ));
    assert!(restore(hard_state, vec![entry(1, 1), entry(3, 2)]).is_ok());
    // After a snapshot: the entries follow the applied one, storage holds from past it.
    let after_snapshot = |prev: LogId, entries: Vec<Entry>, stored_first| {
        Raft::new(
            Config::new(1, vec![1]),
            Restored {
                hard_state,
                prev_log_id: prev,
                entries,
                applied: prev.index,
                stored_first,
                membership: None,
            },
            1,
        )
    };
    assert!(after_snapshot(LogId::new(2, 7), vec![entry(3, 8)], 8).is_ok());
    assert!(matches!(
        after_snapshot(LogId::new(2, 7), vec![entry(3, 9)], 8),
        Err(StartError::Restore(_))
    ));
    assert!(matches!(
        after_snapshot(LogId::new(2, 7), vec![entry(1, 8)], 8),
        Err(StartError::Restore(_))
    ));
    assert!(matches!(
        after_snapshot(LogId::new(2, 7), vec![], 9),
        Err(StartError::Restore(_))
    ));
    let bad = Raft::new(Config::new(4, vec![1, 2, 3]), Restored::default(), 1);
    assert!(matches!(bad, Err(StartError::Config(_))));
}

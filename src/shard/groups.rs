//! Consumer-group coordination, Kafka's classic rebalance protocol
//! (docs/KAFKA.md, "Consumer groups"): members join, the group picks a
//! protocol and a leader, the leader's assignment is handed to every
//! member, heartbeats keep a member's session, and a new, leaving or
//! silent member starts a new generation.
//!
//! A group lives on one shard, the one [`coordinator_shard`] names from a
//! hash of its id; every request for it travels there over the mesh as a
//! [`GroupCall`] carrying its own reply channel. The state is a `RefCell`
//! on that shard's executor: no locks, and no borrow is held across an
//! await (there is none in here). Answers that must wait (a join until
//! every member has rejoined, a follower's sync until the leader's) keep
//! the call's reply sender and are sent by a later call or by
//! [`Groups::expire`], which the shard runs on a timer for session and
//! rebalance timeouts. Everything is bounded by `[groups]` settings.
//! Committed offsets are not kept here: they live in the partitions'
//! consumer-offset stores, shared with the native protocol. What is kept
//! is which member commits are being written: a commit checked against a
//! generation holds back the next generation until it is stored
//! ([`GroupOp::CheckCommit`]).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};

use async_channel::Sender;
use bytes::Bytes;

use super::ShardId;
use crate::config::GroupsConfig;

/// The shard that coordinates `group`.
pub fn coordinator_shard(group: &str, shards: usize) -> ShardId {
    (crc32fast::hash(group.as_bytes()) as usize) % shards.max(1)
}

/// Why a group request is refused; each is one Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The member id is not a member of the group.
    #[error("unknown member id")]
    UnknownMember,
    /// The generation is not the group's current one.
    #[error("illegal generation")]
    IllegalGeneration,
    /// The group is rebalancing: rejoin.
    #[error("rebalance in progress")]
    RebalanceInProgress,
    /// The session timeout is outside `groups.min/max_session_timeout_ms`.
    #[error("session timeout outside the configured range")]
    InvalidSessionTimeout,
    /// Protocol type or protocols shared by no other member.
    #[error("inconsistent group protocol")]
    InconsistentProtocol,
    /// `groups.max_members_per_group`, or `groups.max_group_metadata_bytes`.
    #[error("group is full")]
    GroupFull,
    /// `groups.max_groups` groups have members already.
    #[error("too many groups")]
    TooManyGroups,
    /// This node no longer coordinates: it stops, or may no longer write.
    #[error("not the coordinator")]
    NotCoordinator,
}

/// A JoinGroup.
#[derive(Debug)]
pub struct JoinArgs {
    /// Empty for a new member.
    pub member_id: String,
    /// The client's id (member ids start with it).
    pub client_id: String,
    /// Session timeout asked for.
    pub session_timeout_ms: u64,
    /// How long a rebalance may wait for this member to rejoin.
    pub rebalance_timeout_ms: u64,
    /// "consumer" for consumers.
    pub protocol_type: String,
    /// (protocol name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
}

/// A SyncGroup; the assignments are the leader's (empty from others).
#[derive(Debug)]
pub struct SyncArgs {
    /// Member.
    pub member_id: String,
    /// Generation.
    pub generation: i32,
    /// (member id, assignment).
    pub assignments: Vec<(String, Bytes)>,
}

/// A completed join as one member sees it.
#[derive(Debug, Clone)]
pub struct Joined {
    /// The new generation.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: String,
    /// The protocol chosen.
    pub protocol_name: String,
    /// The leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader only: every member's id and metadata for the protocol.
    pub members: Vec<(String, Bytes)>,
}

/// A member's assignment after SyncGroup.
#[derive(Debug, Clone)]
pub struct Synced {
    /// The group's protocol type.
    pub protocol_type: String,
    /// The protocol chosen.
    pub protocol_name: String,
    /// The assignment the leader gave this member.
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, Default)]
pub struct GroupDescription {
    /// Empty, PreparingRebalance, CompletingRebalance, Stable or Dead.
    pub state: &'static str,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen protocol (empty until the first join completes).
    pub protocol_name: String,
    /// (member id, client id, metadata, assignment).
    pub members: Vec<(String, String, Bytes, Bytes)>,
}

/// What is asked of a group's coordinator.
#[derive(Debug)]
pub enum GroupOp {
    /// JoinGroup.
    Join(JoinArgs),
    /// SyncGroup.
    Sync(SyncArgs),
    /// Heartbeat.
    Heartbeat {
        /// Member.
        member_id: String,
        /// Generation.
        generation: i32,
    },
    /// LeaveGroup of these members.
    Leave(Vec<String>),
    /// May this member commit offsets at this generation? Answered
    /// [`GroupAnswer::Commit`]: for a member's commit, a token that holds
    /// back the next generation's start (the end of the join phase) until
    /// [`GroupOp::CommitDone`] returns it, so a rebalance cannot hand the
    /// member's partitions to another member, who would read the offsets,
    /// while the commit is still being written and then lands over them.
    CheckCommit {
        /// Member (empty with generation -1: a commit outside group management).
        member_id: String,
        /// Generation.
        generation: i32,
    },
    /// The commit of this [`GroupOp::CheckCommit`] token is written (or
    /// failed): the next generation may start.
    CommitDone {
        /// The token CheckCommit answered.
        token: u64,
    },
    /// DescribeGroups.
    Describe,
    /// ListGroups of this shard (the call's group is ignored).
    List,
}

/// The coordinator's answer.
#[derive(Debug)]
pub enum GroupAnswer {
    /// To Join.
    Joined(Result<Joined, GroupError>),
    /// To Sync.
    Synced(Result<Synced, GroupError>),
    /// To Heartbeat and CommitDone.
    Done(Result<(), GroupError>),
    /// To CheckCommit: allowed (with the token to return when the commit
    /// is written, for a member's commit) or refused.
    Commit(Result<Option<u64>, GroupError>),
    /// To Leave: per member.
    Left(Vec<(String, Result<(), GroupError>)>),
    /// To Describe.
    Described(GroupDescription),
    /// To List: (group, protocol type, state).
    Listed(Vec<(String, String, &'static str)>),
}

/// One request for a group, sent to its coordinator shard.
#[derive(Debug)]
pub struct GroupCall {
    /// Group id.
    pub group: String,
    /// What to do.
    pub op: GroupOp,
    /// Where the answer goes (now or when the rebalance allows).
    pub reply: Sender<GroupAnswer>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// What a member's protocols count against `groups.max_group_metadata_bytes`:
/// names and metadata, plus what holding each entry costs (an entry with
/// an empty name and metadata is not free).
const PROTOCOL_OVERHEAD_BYTES: usize = 64;

fn protocols_bytes(protocols: &[(String, Bytes)]) -> usize {
    protocols.iter().map(|(name, metadata)| PROTOCOL_OVERHEAD_BYTES + name.len() + metadata.len()).sum()
}

#[derive(Debug)]
struct Member {
    client_id: String,
    session_timeout_ms: u64,
    rebalance_timeout_ms: u64,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    session_deadline_ms: u64,
    join_waiter: Option<Sender<GroupAnswer>>,
    sync_waiter: Option<Sender<GroupAnswer>>,
}

impl Member {
    /// What the member holds: protocols, assignment, and its client id
    /// (kept, and the start of its member id).
    fn metadata_bytes(&self) -> usize {
        protocols_bytes(&self.protocols) + self.assignment.len() + 2 * self.client_id.len()
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug)]
struct Group {
    state: State,
    generation: i32,
    protocol_type: String,
    protocol_name: String,
    leader: String,
    members: BTreeMap<String, Member>,
    rebalance_deadline_ms: u64,
    /// Member commits checked and not yet written (token → the deadline
    /// after which it no longer counts: the committing member's rebalance
    /// timeout). The join phase does not end while any counts, and a group
    /// whose members are all gone is kept, without members, until none
    /// does. At most one per request being served.
    commits_in_flight: BTreeMap<u64, u64>,
}

/// Every group this shard coordinates (`groups.max_groups` of them at
/// most: the bound is per shard).
#[derive(Debug, Default)]
pub struct Groups {
    groups: RefCell<HashMap<String, Group>>,
    next_member: Cell<u64>,
    next_commit_token: Cell<u64>,
    /// Set for good when the node stops: every call is refused.
    closed: Cell<bool>,
}

fn answer(reply: &Sender<GroupAnswer>, answer: GroupAnswer) {
    // The client may have gone; nothing waits for the answer then.
    let _ = reply.try_send(answer);
}

/// The answer refusing `op` with `error` (Describe and List: nothing).
fn refused(op: GroupOp, error: GroupError) -> GroupAnswer {
    match op {
        GroupOp::Join(_) => GroupAnswer::Joined(Err(error)),
        GroupOp::Sync(_) => GroupAnswer::Synced(Err(error)),
        GroupOp::Heartbeat { .. } | GroupOp::CommitDone { .. } => GroupAnswer::Done(Err(error)),
        GroupOp::CheckCommit { .. } => GroupAnswer::Commit(Err(error)),
        GroupOp::Leave(members) => GroupAnswer::Left(members.into_iter().map(|member| (member, Err(error))).collect()),
        GroupOp::Describe => GroupAnswer::Described(GroupDescription { state: "Dead", ..GroupDescription::default() }),
        GroupOp::List => GroupAnswer::Listed(Vec::new()),
    }
}

impl Groups {
    /// Serve one call at monotonic time `now_ms` under `limits`.
    pub fn serve(&self, call: GroupCall, limits: &GroupsConfig, now_ms: u64) {
        let GroupCall { group, op, reply } = call;
        if self.closed.get() {
            return answer(&reply, refused(op, GroupError::NotCoordinator));
        }
        match op {
            GroupOp::Join(args) => match self.join(&group, args, &reply, limits, now_ms) {
                Ok(()) => {}
                Err(error) => answer(&reply, GroupAnswer::Joined(Err(error))),
            },
            GroupOp::Sync(args) => {
                if let Err(error) = self.sync(&group, args, &reply, limits, now_ms) {
                    answer(&reply, GroupAnswer::Synced(Err(error)));
                }
            }
            GroupOp::Heartbeat { member_id, generation } => {
                answer(&reply, GroupAnswer::Done(self.heartbeat(&group, &member_id, generation, now_ms)));
            }
            GroupOp::Leave(members) => {
                let results = members.into_iter().map(|member| (member.clone(), self.leave(&group, &member, now_ms)));
                answer(&reply, GroupAnswer::Left(results.collect()));
            }
            GroupOp::CheckCommit { member_id, generation } => {
                answer(&reply, GroupAnswer::Commit(self.check_commit(&group, &member_id, generation, now_ms)));
            }
            GroupOp::CommitDone { token } => {
                self.commit_done(&group, token, now_ms);
                answer(&reply, GroupAnswer::Done(Ok(())));
            }
            GroupOp::Describe => answer(&reply, GroupAnswer::Described(self.describe(&group))),
            GroupOp::List => answer(&reply, GroupAnswer::Listed(self.list())),
        }
    }

    fn join(
        &self,
        group_id: &str,
        args: JoinArgs,
        reply: &Sender<GroupAnswer>,
        limits: &GroupsConfig,
        now_ms: u64,
    ) -> Result<(), GroupError> {
        if !(limits.min_session_timeout_ms..=limits.max_session_timeout_ms).contains(&args.session_timeout_ms) {
            return Err(GroupError::InvalidSessionTimeout);
        }
        if args.protocol_type.is_empty() || args.protocols.is_empty() {
            return Err(GroupError::InconsistentProtocol);
        }
        let mut groups = self.groups.borrow_mut();
        if !groups.contains_key(group_id) {
            if !args.member_id.is_empty() {
                return Err(GroupError::UnknownMember);
            }
            if groups.len() >= limits.max_groups {
                return Err(GroupError::TooManyGroups);
            }
        }
        let group = groups.entry(group_id.to_string()).or_insert_with(|| Group::new(&args.protocol_type));
        if group.members.is_empty() {
            // Kept only for its commits in flight: a new group that goes on
            // counting generations and still waits for them.
            group.revive(&args.protocol_type);
        }
        let result = group.join(args, reply, limits, now_ms, || self.new_member_id());
        if group.is_gone() {
            groups.remove(group_id);
        }
        result
    }

    fn new_member_id(&self) -> String {
        let sequence = self.next_member.get();
        self.next_member.set(sequence + 1);
        let random = crate::runtime::random::random_bytes(8).unwrap_or_default();
        let hex: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("{hex}{sequence:x}")
    }

    fn sync(
        &self,
        group_id: &str,
        args: SyncArgs,
        reply: &Sender<GroupAnswer>,
        limits: &GroupsConfig,
        now_ms: u64,
    ) -> Result<(), GroupError> {
        let SyncArgs { member_id, generation, assignments } = args;
        let member_id = member_id.as_str();
        let mut groups = self.groups.borrow_mut();
        let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMember)?;
        group.check_member(member_id, generation)?;
        group.touch(member_id, now_ms);
        match group.state {
            State::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            State::Stable => {
                answer(reply, GroupAnswer::Synced(Ok(group.synced(member_id))));
                Ok(())
            }
            State::CompletingRebalance => {
                if member_id == group.leader {
                    group.assign(assignments, limits)?;
                    group.state = State::Stable;
                    answer(reply, GroupAnswer::Synced(Ok(group.synced(member_id))));
                    for member in group.members.values_mut() {
                        if let Some(waiter) = member.sync_waiter.take() {
                            let synced = Synced {
                                protocol_type: group.protocol_type.clone(),
                                protocol_name: group.protocol_name.clone(),
                                assignment: member.assignment.clone(),
                            };
                            answer(&waiter, GroupAnswer::Synced(Ok(synced)));
                        }
                    }
                } else if let Some(member) = group.members.get_mut(member_id) {
                    member.sync_waiter = Some(reply.clone());
                }
                Ok(())
            }
        }
    }

    fn heartbeat(&self, group_id: &str, member_id: &str, generation: i32, now_ms: u64) -> Result<(), GroupError> {
        let mut groups = self.groups.borrow_mut();
        let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMember)?;
        group.check_member(member_id, generation)?;
        group.touch(member_id, now_ms);
        match group.state {
            State::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            State::CompletingRebalance | State::Stable => Ok(()),
        }
    }

    fn leave(&self, group_id: &str, member_id: &str, now_ms: u64) -> Result<(), GroupError> {
        let mut groups = self.groups.borrow_mut();
        let group = groups.get_mut(group_id).ok_or(GroupError::UnknownMember)?;
        let member = group.members.remove(member_id).ok_or(GroupError::UnknownMember)?;
        if let Some(waiter) = member.join_waiter {
            answer(&waiter, GroupAnswer::Joined(Err(GroupError::UnknownMember)));
        }
        group.member_gone(now_ms);
        if group.is_gone() {
            groups.remove(group_id);
        }
        Ok(())
    }

    fn check_commit(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        now_ms: u64,
    ) -> Result<Option<u64>, GroupError> {
        let mut groups = self.groups.borrow_mut();
        let Some(group) = groups.get_mut(group_id).filter(|group| !group.members.is_empty()) else {
            // No members: only a commit outside group management, which
            // no generation depends on.
            return match (member_id.is_empty(), generation) {
                (true, -1) => Ok(None),
                _ => Err(GroupError::IllegalGeneration),
            };
        };
        if member_id.is_empty() && generation == -1 {
            // Kafka refuses a "simple" commit into a group with members.
            return Err(GroupError::UnknownMember);
        }
        group.check_member(member_id, generation)?;
        group.touch(member_id, now_ms);
        match group.state {
            // As Kafka: the new generation's members know it from JoinGroup
            // but not their assignment until SyncGroup: a commit could be
            // for a partition its sender no longer owns.
            State::CompletingRebalance => Err(GroupError::RebalanceInProgress),
            // As Kafka too: members commit what they consumed when a
            // rebalance begins (before rejoining); the token holds the join
            // phase until the commit is written.
            State::PreparingRebalance | State::Stable => {
                let token = self.next_commit_token.get().wrapping_add(1);
                self.next_commit_token.set(token);
                let rebalance_timeout_ms = group.members.get(member_id).map_or(0, |member| member.rebalance_timeout_ms);
                group.commits_in_flight.insert(token, now_ms + rebalance_timeout_ms.max(1));
                Ok(Some(token))
            }
        }
    }

    /// A checked commit is written: a join phase it held back may end.
    fn commit_done(&self, group_id: &str, token: u64, now_ms: u64) {
        let mut groups = self.groups.borrow_mut();
        if let Some(group) = groups.get_mut(group_id) {
            group.commits_in_flight.remove(&token);
            group.maybe_complete_join(now_ms);
            if group.is_gone() {
                groups.remove(group_id);
            }
        }
    }

    fn describe(&self, group_id: &str) -> GroupDescription {
        let groups = self.groups.borrow();
        let Some(group) = groups.get(group_id).filter(|group| !group.members.is_empty()) else {
            return GroupDescription { state: "Dead", ..GroupDescription::default() };
        };
        let members = group
            .members
            .iter()
            .map(|(id, member)| {
                let metadata = member.metadata_for(&group.protocol_name);
                (id.clone(), member.client_id.clone(), metadata, member.assignment.clone())
            })
            .collect();
        GroupDescription {
            state: group.state.name(),
            protocol_type: group.protocol_type.clone(),
            protocol_name: group.protocol_name.clone(),
            members,
        }
    }

    fn list(&self) -> Vec<(String, String, &'static str)> {
        let groups = self.groups.borrow();
        let with_members = groups.iter().filter(|(_, group)| !group.members.is_empty());
        with_members.map(|(id, group)| (id.clone(), group.protocol_type.clone(), group.state.name())).collect()
    }

    /// Apply the timeouts due at `now_ms`: members whose session lapsed
    /// leave, and a rebalance past its deadline completes with the members
    /// that rejoined. Run by the shard on a short timer.
    pub fn expire(&self, now_ms: u64) {
        let mut groups = self.groups.borrow_mut();
        for group in groups.values_mut() {
            // A member waiting in JoinGroup or SyncGroup cannot heartbeat
            // (its connection serves one request at a time): its session
            // does not lapse. One that has not sent SyncGroup by the end of
            // the sync phase (the longest rebalance timeout) is dropped, so
            // a leader that never syncs cannot park the others for ever.
            let sync_over = group.state == State::CompletingRebalance && group.rebalance_deadline_ms <= now_ms;
            let lapsed: Vec<String> = group
                .members
                .iter()
                .filter(|(_, member)| {
                    let waiting = member.join_waiter.is_some() || member.sync_waiter.is_some();
                    !waiting && (member.session_deadline_ms <= now_ms || sync_over)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in lapsed {
                group.members.remove(&id);
                group.member_gone(now_ms);
            }
            group.commits_in_flight.retain(|_, deadline_ms| *deadline_ms > now_ms);
            if group.state == State::PreparingRebalance && group.rebalance_deadline_ms <= now_ms {
                group.complete_join(now_ms);
            }
            group.maybe_complete_join(now_ms);
        }
        groups.retain(|_, group| !group.is_gone());
    }

    /// Stop coordinating: every member parked in JoinGroup or SyncGroup is
    /// answered `NotCoordinator` at once (its client looks for the
    /// coordinator again, keeping its member id) and every group is
    /// forgotten. With `for_good` (the node stops) every later call is
    /// refused the same way, so nothing parks again.
    pub fn dismiss(&self, for_good: bool) {
        self.closed.set(self.closed.get() || for_good);
        let groups = std::mem::take(&mut *self.groups.borrow_mut());
        for member in groups.into_values().flat_map(|group| group.members.into_values()) {
            if let Some(waiter) = member.join_waiter {
                answer(&waiter, GroupAnswer::Joined(Err(GroupError::NotCoordinator)));
            }
            if let Some(waiter) = member.sync_waiter {
                answer(&waiter, GroupAnswer::Synced(Err(GroupError::NotCoordinator)));
            }
        }
    }

    /// Number of groups with members.
    pub fn len(&self) -> usize {
        self.groups.borrow().values().filter(|group| !group.members.is_empty()).count()
    }

    /// True when no group has members.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Group {
    fn new(protocol_type: &str) -> Group {
        Group {
            state: State::PreparingRebalance,
            generation: 0,
            protocol_type: protocol_type.to_string(),
            protocol_name: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            rebalance_deadline_ms: 0,
            commits_in_flight: BTreeMap::new(),
        }
    }

    fn join(
        &mut self,
        args: JoinArgs,
        reply: &Sender<GroupAnswer>,
        limits: &GroupsConfig,
        now_ms: u64,
        new_member_id: impl FnOnce() -> String,
    ) -> Result<(), GroupError> {
        if args.protocol_type != self.protocol_type || !self.shares_a_protocol(&args.member_id, &args.protocols) {
            return Err(GroupError::InconsistentProtocol);
        }
        let member_id = match args.member_id.is_empty() {
            true => format!("{}-{}", args.client_id, new_member_id()),
            false if self.members.contains_key(&args.member_id) => args.member_id.clone(),
            false => return Err(GroupError::UnknownMember),
        };
        let others = self.metadata_bytes_without(&member_id);
        let new = protocols_bytes(&args.protocols) + 2 * args.client_id.len();
        if others + new > limits.max_group_metadata_bytes {
            return Err(GroupError::GroupFull);
        }
        if !self.members.contains_key(&member_id) && self.members.len() >= limits.max_members_per_group {
            return Err(GroupError::GroupFull);
        }
        let member = self.members.entry(member_id).or_insert_with(|| Member {
            client_id: args.client_id.clone(),
            session_timeout_ms: 0,
            rebalance_timeout_ms: 0,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            session_deadline_ms: 0,
            join_waiter: None,
            sync_waiter: None,
        });
        member.session_timeout_ms = args.session_timeout_ms;
        member.rebalance_timeout_ms = args.rebalance_timeout_ms;
        member.protocols = args.protocols;
        member.session_deadline_ms = now_ms + args.session_timeout_ms;
        if let Some(previous) = member.join_waiter.replace(reply.clone()) {
            answer(&previous, GroupAnswer::Joined(Err(GroupError::RebalanceInProgress)));
        }
        self.prepare_rebalance(now_ms);
        self.maybe_complete_join(now_ms);
        Ok(())
    }

    /// Metadata bytes of every member but `member_id`.
    fn metadata_bytes_without(&self, member_id: &str) -> usize {
        self.members.iter().filter(|(id, _)| id.as_str() != member_id).map(|(_, member)| member.metadata_bytes()).sum()
    }

    /// Whether one of `protocols` is supported by every other member: each
    /// join keeps a protocol common to the whole group, so one can be chosen.
    fn shares_a_protocol(&self, member_id: &str, protocols: &[(String, Bytes)]) -> bool {
        protocols.iter().any(|(offered, _)| {
            self.members
                .iter()
                .filter(|(id, _)| id.as_str() != member_id)
                .all(|(_, member)| member.protocols.iter().any(|(name, _)| name == offered))
        })
    }

    fn check_member(&self, member_id: &str, generation: i32) -> Result<(), GroupError> {
        if !self.members.contains_key(member_id) {
            return Err(GroupError::UnknownMember);
        }
        if generation != self.generation {
            return Err(GroupError::IllegalGeneration);
        }
        Ok(())
    }

    fn touch(&mut self, member_id: &str, now_ms: u64) {
        if let Some(member) = self.members.get_mut(member_id) {
            member.session_deadline_ms = now_ms + member.session_timeout_ms;
        }
    }

    /// Start a rebalance (if none is running): members waiting for their
    /// assignment are told to rejoin.
    fn prepare_rebalance(&mut self, now_ms: u64) {
        if self.state == State::PreparingRebalance && self.rebalance_deadline_ms != 0 {
            return;
        }
        self.state = State::PreparingRebalance;
        let longest = self.members.values().map(|member| member.rebalance_timeout_ms).max().unwrap_or(0);
        self.rebalance_deadline_ms = now_ms + longest.max(1);
        for member in self.members.values_mut() {
            if let Some(waiter) = member.sync_waiter.take() {
                answer(&waiter, GroupAnswer::Synced(Err(GroupError::RebalanceInProgress)));
            }
        }
    }

    /// A member left or lapsed: the others rebalance.
    fn member_gone(&mut self, now_ms: u64) {
        if self.members.is_empty() {
            return;
        }
        self.prepare_rebalance(now_ms);
        self.maybe_complete_join(now_ms);
    }

    /// Neither members nor commits in flight: nothing to keep.
    fn is_gone(&self) -> bool {
        self.members.is_empty() && self.commits_in_flight.is_empty()
    }

    /// A group kept without members (for its commits in flight) that a
    /// member joins: a new group, whose generations go on from the old.
    fn revive(&mut self, protocol_type: &str) {
        self.protocol_type = protocol_type.to_string();
        self.protocol_name.clear();
        self.leader.clear();
        self.state = State::PreparingRebalance;
        self.rebalance_deadline_ms = 0;
    }

    /// End the join phase once every member rejoined and no commit checked
    /// in the old generation is still being written.
    fn maybe_complete_join(&mut self, now_ms: u64) {
        let everyone_joined = self.members.values().all(|member| member.join_waiter.is_some());
        let ready = everyone_joined && !self.members.is_empty() && self.commits_in_flight.is_empty();
        if self.state == State::PreparingRebalance && ready {
            self.complete_join(now_ms);
        }
    }

    /// End the join phase: members that did not rejoin are dropped, a new
    /// generation starts, and every joined member gets its answer.
    fn complete_join(&mut self, now_ms: u64) {
        self.members.retain(|_, member| member.join_waiter.is_some());
        self.rebalance_deadline_ms = 0;
        if self.members.is_empty() {
            return;
        }
        self.generation = self.generation.wrapping_add(1).max(1);
        self.state = State::CompletingRebalance;
        let longest = self.members.values().map(|member| member.rebalance_timeout_ms).max().unwrap_or(0);
        self.rebalance_deadline_ms = now_ms + longest.max(1);
        self.protocol_name = self.choose_protocol();
        if !self.members.contains_key(&self.leader) {
            self.leader = self.members.keys().next().cloned().unwrap_or_default();
        }
        let everyone: Vec<(String, Bytes)> =
            self.members.iter().map(|(id, member)| (id.clone(), member.metadata_for(&self.protocol_name))).collect();
        for (id, member) in self.members.iter_mut() {
            member.session_deadline_ms = now_ms + member.session_timeout_ms;
            member.assignment = Bytes::new();
            let Some(waiter) = member.join_waiter.take() else { continue };
            let joined = Joined {
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol_name: self.protocol_name.clone(),
                leader: self.leader.clone(),
                member_id: id.clone(),
                members: if *id == self.leader { everyone.clone() } else { Vec::new() },
            };
            answer(&waiter, GroupAnswer::Joined(Ok(joined)));
        }
    }

    /// The leader's most preferred protocol that every member supports
    /// (there is one: see `shares_a_protocol`).
    fn choose_protocol(&self) -> String {
        let leader = self.members.get(&self.leader).or_else(|| self.members.values().next());
        let candidates = leader.map(|member| member.protocols.clone()).unwrap_or_default();
        candidates
            .into_iter()
            .map(|(name, _)| name)
            .find(|name| self.members.values().all(|member| member.protocols.iter().any(|(own, _)| own == name)))
            .unwrap_or_default()
    }

    /// Store the leader's assignment (members it did not name get none).
    fn assign(&mut self, assignments: Vec<(String, Bytes)>, limits: &GroupsConfig) -> Result<(), GroupError> {
        let protocols: usize = self.members.values().map(|member| member.metadata_bytes()).sum();
        let assigned: usize = assignments.iter().map(|(_, assignment)| assignment.len()).sum();
        if protocols + assigned > limits.max_group_metadata_bytes {
            return Err(GroupError::GroupFull);
        }
        for (member_id, assignment) in assignments {
            if let Some(member) = self.members.get_mut(&member_id) {
                member.assignment = assignment;
            }
        }
        Ok(())
    }

    fn synced(&self, member_id: &str) -> Synced {
        Synced {
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            assignment: self.members.get(member_id).map(|member| member.assignment.clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> GroupsConfig {
        GroupsConfig { min_session_timeout_ms: 100, ..GroupsConfig::default() }
    }

    /// A consumer join of `member_id` offering `protocol`.
    fn join_args(member_id: &str, protocol: &str) -> JoinArgs {
        JoinArgs {
            member_id: member_id.to_string(),
            client_id: "c".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 1_000,
            protocol_type: "consumer".into(),
            protocols: vec![(protocol.into(), Bytes::from_static(b"m"))],
        }
    }

    fn join(groups: &Groups, member_id: &str, now_ms: u64) -> async_channel::Receiver<GroupAnswer> {
        let (reply, answer) = async_channel::bounded(1);
        let args = join_args(member_id, "range");
        groups.serve(GroupCall { group: "g".into(), op: GroupOp::Join(args), reply }, &limits(), now_ms);
        answer
    }

    fn joined(answer: &async_channel::Receiver<GroupAnswer>) -> Joined {
        match answer.try_recv() {
            Ok(GroupAnswer::Joined(Ok(joined))) => joined,
            other => panic!("not joined: {other:?}"),
        }
    }

    #[test]
    fn dismissing_answers_a_parked_join_not_coordinator_and_closing_refuses_later_calls() {
        let groups = Groups::default();
        joined(&join(&groups, "", 0));
        let parked = join(&groups, "", 10);
        assert!(parked.try_recv().is_err(), "parked until the first member rejoins");
        groups.dismiss(false);
        assert!(matches!(parked.try_recv(), Ok(GroupAnswer::Joined(Err(GroupError::NotCoordinator)))));
        assert!(groups.is_empty(), "membership is forgotten");
        assert_eq!(joined(&join(&groups, "", 20)).generation, 1, "dismissed, not closed: a new group starts");
        groups.dismiss(true);
        let refused = join(&groups, "", 30);
        assert!(matches!(refused.try_recv(), Ok(GroupAnswer::Joined(Err(GroupError::NotCoordinator)))));
        assert!(groups.is_empty(), "nothing parks once closed");
    }

    #[test]
    fn member_that_does_not_rejoin_by_the_rebalance_deadline_is_dropped() {
        let groups = Groups::default();
        let first = joined(&join(&groups, "", 0));
        let second = join(&groups, "", 10);
        assert!(second.try_recv().is_err(), "waits for the first member to rejoin");
        groups.expire(500);
        assert!(second.try_recv().is_err(), "the deadline (longest rebalance timeout) has not passed");
        groups.expire(1_010);
        let second = joined(&second);
        assert_eq!(second.generation, 2);
        assert_eq!(second.leader, second.member_id, "the old leader left the group: the new member leads");
        assert_eq!(groups.describe("g").members.len(), 1);
        let (reply, answer) = async_channel::bounded(1);
        let op = GroupOp::Heartbeat { member_id: first.member_id, generation: 1 };
        groups.serve(GroupCall { group: "g".into(), op, reply }, &limits(), 1_020);
        assert!(matches!(answer.try_recv(), Ok(GroupAnswer::Done(Err(GroupError::UnknownMember)))));
    }

    fn sync(groups: &Groups, member_id: &str, generation: i32, now_ms: u64) -> async_channel::Receiver<GroupAnswer> {
        let (reply, answer) = async_channel::bounded(1);
        let args = SyncArgs { member_id: member_id.to_string(), generation, assignments: Vec::new() };
        groups.serve(GroupCall { group: "g".into(), op: GroupOp::Sync(args), reply }, &limits(), now_ms);
        answer
    }

    #[test]
    fn a_leader_that_never_syncs_is_dropped_at_the_sync_deadline_and_waiting_followers_do_not_lapse() {
        let groups = Groups::default();
        let leader = joined(&join(&groups, "", 0));
        let follower = join(&groups, "", 10);
        let rejoined = join(&groups, &leader.member_id, 20);
        let (leader, follower) = (joined(&rejoined), joined(&follower));
        assert_eq!(leader.generation, 2);
        let waiting = sync(&groups, &follower.member_id, 2, 30);
        assert!(waiting.try_recv().is_err(), "a follower's SyncGroup waits for the leader's");
        groups.expire(500);
        assert!(waiting.try_recv().is_err(), "the sync phase lasts the longest rebalance timeout");
        // Past the sync deadline and past the follower's session: the leader
        // (not waiting) goes, the waiting follower stays and is told to rejoin.
        groups.expire(20_000);
        assert!(matches!(waiting.try_recv(), Ok(GroupAnswer::Synced(Err(GroupError::RebalanceInProgress)))));
        let members: Vec<String> = groups.describe("g").members.into_iter().map(|member| member.0).collect();
        assert_eq!(members, [follower.member_id], "the leader that never synced was dropped");
    }

    #[test]
    fn a_member_sharing_no_protocol_with_the_group_is_refused() {
        let groups = Groups::default();
        joined(&join(&groups, "", 0));
        let (reply, answer) = async_channel::bounded(1);
        let args = join_args("", "roundrobin");
        groups.serve(GroupCall { group: "g".into(), op: GroupOp::Join(args), reply }, &limits(), 1);
        assert!(matches!(answer.try_recv(), Ok(GroupAnswer::Joined(Err(GroupError::InconsistentProtocol)))));
        assert_eq!(groups.describe("g").members.len(), 1);
        assert_eq!(groups.describe("g").protocol_name, "range");
    }

    #[test]
    fn groups_beyond_max_groups_are_refused_and_the_last_member_leaving_forgets_the_group() {
        let groups = Groups::default();
        let one_group = GroupsConfig { max_groups: 1, ..limits() };
        let (reply, answer) = async_channel::bounded(1);
        let args = join_args("", "range");
        let member = joined(&join(&groups, "", 0)).member_id;
        groups.serve(GroupCall { group: "other".into(), op: GroupOp::Join(args), reply }, &one_group, 0);
        assert!(matches!(answer.try_recv(), Ok(GroupAnswer::Joined(Err(GroupError::TooManyGroups)))));
        let (reply, answer) = async_channel::bounded(1);
        groups.serve(GroupCall { group: "g".into(), op: GroupOp::Leave(vec![member]), reply }, &limits(), 1);
        assert!(matches!(answer.try_recv(), Ok(GroupAnswer::Left(results)) if results[0].1.is_ok()));
        assert!(groups.is_empty());
        assert_eq!(groups.describe("g").state, "Dead");
    }

    fn call(groups: &Groups, op: GroupOp, now_ms: u64) -> GroupAnswer {
        let (reply, answer) = async_channel::bounded(1);
        groups.serve(GroupCall { group: "g".into(), op, reply }, &limits(), now_ms);
        answer.try_recv().expect("answered at once")
    }

    /// A group of one member, synced and stable at generation 1.
    fn stable_group(groups: &Groups) -> Joined {
        let only = joined(&join(groups, "", 0));
        let synced = sync(groups, &only.member_id, only.generation, 1);
        assert!(matches!(synced.try_recv(), Ok(GroupAnswer::Synced(Ok(_)))));
        only
    }

    #[test]
    fn a_commit_being_written_holds_back_the_next_generation_until_it_is_done() {
        let groups = Groups::default();
        let first = stable_group(&groups);
        let check = GroupOp::CheckCommit { member_id: first.member_id.clone(), generation: 1 };
        let GroupAnswer::Commit(Ok(Some(token))) = call(&groups, check, 2) else { panic!("a member's commit") };
        let second = join(&groups, "", 3);
        let rejoined = join(&groups, &first.member_id, 4);
        assert!(
            rejoined.try_recv().is_err() && second.try_recv().is_err(),
            "everyone rejoined, the commit is unwritten"
        );
        assert!(matches!(call(&groups, GroupOp::CommitDone { token }, 5), GroupAnswer::Done(Ok(()))));
        assert_eq!(joined(&rejoined).generation, 2, "the commit is written: the new generation starts");
        assert_eq!(joined(&second).generation, 2);
        let stale = GroupOp::CheckCommit { member_id: first.member_id, generation: 1 };
        assert!(matches!(call(&groups, stale, 6), GroupAnswer::Commit(Err(GroupError::IllegalGeneration))));
    }

    #[test]
    fn a_commit_that_never_reports_back_holds_the_group_only_until_the_rebalance_deadline() {
        let groups = Groups::default();
        let first = stable_group(&groups);
        let check = GroupOp::CheckCommit { member_id: first.member_id.clone(), generation: 1 };
        assert!(matches!(call(&groups, check, 2), GroupAnswer::Commit(Ok(Some(_)))));
        let rejoined = join(&groups, &first.member_id, 3);
        assert!(rejoined.try_recv().is_err());
        groups.expire(500);
        assert!(rejoined.try_recv().is_err(), "before the deadline (the rebalance timeout)");
        groups.expire(1_010);
        assert_eq!(joined(&rejoined).generation, 2, "a dropped commit request does not hold the group for ever");
        let simple = GroupOp::CheckCommit { member_id: String::new(), generation: -1 };
        assert!(matches!(call(&Groups::default(), simple, 0), GroupAnswer::Commit(Ok(None))), "no group, no token");
    }

    #[test]
    fn a_commit_as_a_rebalance_begins_is_accepted_and_holds_the_join_phase() {
        let groups = Groups::default();
        let first = stable_group(&groups);
        let second = join(&groups, "", 2);
        assert!(second.try_recv().is_err(), "PreparingRebalance: waits for the first member");
        let check = GroupOp::CheckCommit { member_id: first.member_id.clone(), generation: 1 };
        let GroupAnswer::Commit(Ok(Some(token))) = call(&groups, check, 3) else { panic!("accepted, as Kafka does") };
        let rejoined = join(&groups, &first.member_id, 4);
        assert!(rejoined.try_recv().is_err(), "held until the commit is written");
        call(&groups, GroupOp::CommitDone { token }, 5);
        assert_eq!(joined(&rejoined).generation, 2);
        let during_sync = GroupOp::CheckCommit { member_id: first.member_id, generation: 2 };
        let refused = call(&groups, during_sync, 6);
        assert!(matches!(refused, GroupAnswer::Commit(Err(GroupError::RebalanceInProgress))), "until SyncGroup");
    }

    #[test]
    fn a_group_whose_members_left_during_a_commit_is_kept_until_the_commit_is_written() {
        let groups = Groups::default();
        let first = stable_group(&groups);
        let check = GroupOp::CheckCommit { member_id: first.member_id.clone(), generation: 1 };
        let GroupAnswer::Commit(Ok(Some(token))) = call(&groups, check, 2) else { panic!("a member's commit") };
        let left = call(&groups, GroupOp::Leave(vec![first.member_id]), 3);
        assert!(matches!(left, GroupAnswer::Left(ref results) if results[0].1.is_ok()));
        assert!(groups.is_empty() && groups.list().is_empty(), "no members: not listed");
        assert_eq!(groups.describe("g").state, "Dead");
        let newcomer = join(&groups, "", 4);
        assert!(newcomer.try_recv().is_err(), "the old member's commit is still being written");
        call(&groups, GroupOp::CommitDone { token }, 5);
        assert_eq!(joined(&newcomer).generation, 2, "generations go on from the kept group");
        let done = call(&groups, GroupOp::CommitDone { token }, 6);
        assert!(matches!(done, GroupAnswer::Done(Ok(()))), "a token returned twice changes nothing");
    }

    #[test]
    fn a_kept_group_is_forgotten_once_its_commits_are_written_or_expire() {
        let groups = Groups::default();
        let first = stable_group(&groups);
        let check = GroupOp::CheckCommit { member_id: first.member_id.clone(), generation: 1 };
        assert!(matches!(call(&groups, check, 2), GroupAnswer::Commit(Ok(Some(_)))));
        call(&groups, GroupOp::Leave(vec![first.member_id]), 3);
        assert_eq!(groups.groups.borrow().len(), 1, "kept for its commit");
        groups.expire(500);
        assert_eq!(groups.groups.borrow().len(), 1, "the commit counts for the member's rebalance timeout");
        groups.expire(1_010);
        assert!(groups.groups.borrow().is_empty(), "forgotten once the commit no longer counts");
    }
}

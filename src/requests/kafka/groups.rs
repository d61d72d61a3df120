//! Kafka consumer groups, classic protocol: FindCoordinator, JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup, ListGroups and DescribeGroups, served
//! by the group's coordinator shard (`shard::groups`) reached over the
//! mesh. This node coordinates every group while it may write (standalone
//! or the cluster's leader), as it is the only node that can commit
//! offsets.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    ListGroupsRequest, ListGroupsResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{at_most, coordinator_broker, count_errors, distinct_within, respond, Access, KafkaOutcome};
use crate::protocol::kafka::{decode_body, KafkaRequest};
use crate::security::Operation;
use crate::shard::context::ShardContext;
use crate::shard::groups::{coordinator_shard, GroupAnswer, GroupCall, GroupError, GroupOp, JoinArgs, SyncArgs};
use crate::storage::offsets::MAX_GROUP_BYTES;

/// FindCoordinator key type of a consumer group (1 is a transaction).
const GROUP_KEY_TYPE: i8 = 0;

/// The Kafka error code of a coordinator's refusal.
pub fn group_error_code(error: GroupError) -> i16 {
    let kafka = match error {
        GroupError::UnknownMember => ResponseError::UnknownMemberId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::InconsistentProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::GroupFull => ResponseError::GroupMaxSizeReached,
        // Retriable: the client tries again until another group ends.
        GroupError::TooManyGroups => ResponseError::CoordinatorNotAvailable,
        GroupError::NotCoordinator => ResponseError::NotCoordinator,
    };
    kafka.code()
}

/// Why a group request is not served here at all: a user who may not use
/// groups (consumers and admins may), a bad group id, or a node that does not coordinate (a follower, or one shutting down).
pub fn refusal(context: &ShardContext, group: &str, access: Access<'_>) -> Option<i16> {
    if !access.allows(context, Operation::GroupMembership) {
        return Some(ResponseError::GroupAuthorizationFailed.code());
    }
    if group.is_empty() || group.len() > MAX_GROUP_BYTES {
        return Some(ResponseError::InvalidGroupId.code());
    }
    if context.write_epoch().is_err() {
        return Some(ResponseError::NotCoordinator.code());
    }
    None
}

/// Send `op` to `group`'s coordinator shard and wait for its answer;
/// `None` when the answer cannot come (the shard stops, or the member was
/// dropped while it waited): callers answer `NOT_COORDINATOR`, so the
/// client looks for the coordinator again and keeps its member id.
pub async fn call_group(context: &Rc<ShardContext>, group: &str, op: GroupOp) -> Option<GroupAnswer> {
    call_shard(context, coordinator_shard(group, context.shards), group, op).await
}

/// Send `op` for `group` to shard `owner`'s coordinator and wait for its answer.
async fn call_shard(context: &Rc<ShardContext>, owner: usize, group: &str, op: GroupOp) -> Option<GroupAnswer> {
    let (reply, answer) = async_channel::bounded(1);
    let call = GroupCall { group: group.to_string(), op, reply };
    if owner == context.shard {
        context.groups.serve(call, &context.config.groups, crate::runtime::clock::monotonic_ms());
    } else {
        context.mesh.post_group(owner, call).await.ok()?;
    }
    answer.recv().await.ok()
}

/// FindCoordinator: the node that may write coordinates every group:
/// this one, or (on a follower) the cluster's leader, so a client
/// bootstrapped at any node finds it.
pub fn find_coordinator(context: &Rc<ShardContext>, request: &KafkaRequest, access: Access<'_>) -> KafkaOutcome {
    let body: FindCoordinatorRequest = decode_body(request)?;
    let coordinator = coordinator_broker(context, &context.cluster.view());
    let allowed = access.allows(context, Operation::GroupMembership);
    let answer_for = |key: &StrBytes| {
        let answer = Coordinator::default().with_key(key.clone());
        match (body.key_type, &coordinator) {
            _ if !allowed => answer
                .with_error_code(ResponseError::GroupAuthorizationFailed.code())
                .with_node_id((-1).into())
                .with_host(StrBytes::default())
                .with_port(-1),
            (GROUP_KEY_TYPE, Some(broker)) => {
                answer.with_node_id(broker.node_id).with_host(broker.host.clone()).with_port(broker.port)
            }
            (key_type, _) => {
                let code = match key_type {
                    GROUP_KEY_TYPE => ResponseError::CoordinatorNotAvailable.code(),
                    _ => ResponseError::InvalidRequest.code(),
                };
                answer.with_error_code(code).with_node_id((-1).into()).with_host(StrBytes::default()).with_port(-1)
            }
        }
    };
    let response = match request.header.request_api_version {
        0..=3 => {
            let one = answer_for(&body.key);
            FindCoordinatorResponse::default()
                .with_error_code(one.error_code)
                .with_node_id(one.node_id)
                .with_host(one.host)
                .with_port(one.port)
        }
        _ => {
            let keys = distinct_within(&body.coordinator_keys, context.config.groups.max_groups, "coordinator keys")?;
            FindCoordinatorResponse::default().with_coordinators(keys.into_iter().map(answer_for).collect())
        }
    };
    let codes = std::iter::once(response.error_code).chain(response.coordinators.iter().map(|c| c.error_code));
    count_errors(context, ApiKey::FindCoordinator, codes);
    respond(request, &response).map(Some)
}

/// JoinGroup: waits until the rebalance completes (every member rejoined,
/// or the longest rebalance timeout passed).
pub async fn join_group(context: &Rc<ShardContext>, request: &KafkaRequest, access: Access<'_>) -> KafkaOutcome {
    let body: JoinGroupRequest = decode_body(request)?;
    let group = body.group_id.0.to_string();
    let failed = |code: i16| {
        JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_member_id(body.member_id.clone())
            .with_protocol_name(Some(StrBytes::default()))
    };
    let response = match refusal(context, &group, access).or_else(|| bad_protocols(context, &body)) {
        Some(code) => failed(code),
        None => {
            let longest_ms = context.config.groups.max_session_timeout_ms;
            let args = JoinArgs {
                member_id: body.member_id.to_string(),
                client_id: request.header.client_id.as_ref().map_or_else(String::new, ToString::to_string),
                session_timeout_ms: u64::try_from(body.session_timeout_ms).unwrap_or(0),
                // v0 has no rebalance timeout: the session timeout stands in.
                // At most the longest session timeout: one member that never
                // rejoins would otherwise hold the group's rebalance for weeks.
                rebalance_timeout_ms: u64::try_from(body.rebalance_timeout_ms)
                    .ok()
                    .filter(|_| request.header.request_api_version >= 1)
                    .unwrap_or(u64::try_from(body.session_timeout_ms).unwrap_or(0))
                    .min(longest_ms),
                protocol_type: body.protocol_type.to_string(),
                // Copied: a slice would keep the whole request frame alive
                // while the group holds the member.
                protocols: body
                    .protocols
                    .iter()
                    .map(|p| (p.name.to_string(), Bytes::copy_from_slice(&p.metadata)))
                    .collect(),
            };
            match call_group(context, &group, GroupOp::Join(args)).await {
                Some(GroupAnswer::Joined(Ok(joined))) => {
                    let members = joined.members.into_iter().map(|(member_id, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(StrBytes::from_string(member_id))
                            .with_metadata(metadata)
                    });
                    JoinGroupResponse::default()
                        .with_generation_id(joined.generation)
                        .with_protocol_type(Some(StrBytes::from_string(joined.protocol_type)))
                        .with_protocol_name(Some(StrBytes::from_string(joined.protocol_name)))
                        .with_leader(StrBytes::from_string(joined.leader))
                        .with_member_id(StrBytes::from_string(joined.member_id))
                        .with_members(members.collect())
                }
                Some(GroupAnswer::Joined(Err(error))) => failed(group_error_code(error)),
                _ => failed(group_error_code(GroupError::NotCoordinator)),
            }
        }
    };
    count_errors(context, ApiKey::JoinGroup, [response.error_code]);
    respond(request, &response).map(Some)
}

/// `INVALID_REQUEST` for a JoinGroup whose protocol list the coordinator
/// must not take: more than `groups.max_protocols_per_member` entries, an
/// empty name or a name twice. Checked here, before the coordinator
/// compares the list with every other member's.
fn bad_protocols(context: &ShardContext, body: &JoinGroupRequest) -> Option<i16> {
    let names: std::collections::HashSet<&str> = body.protocols.iter().map(|p| p.name.as_str()).collect();
    let too_many = body.protocols.len() > context.config.groups.max_protocols_per_member;
    let malformed = names.len() != body.protocols.len() || names.contains("");
    (too_many || malformed).then(|| ResponseError::InvalidRequest.code())
}

/// SyncGroup: the leader's assignment in, each member's assignment out
/// (a follower waits for the leader's).
pub async fn sync_group(context: &Rc<ShardContext>, request: &KafkaRequest, access: Access<'_>) -> KafkaOutcome {
    let body: SyncGroupRequest = decode_body(request)?;
    let group = body.group_id.0.to_string();
    let failed = |code: i16| SyncGroupResponse::default().with_error_code(code).with_assignment(Bytes::new());
    let too_many = body.assignments.len() > context.config.groups.max_members_per_group;
    let refused = refusal(context, &group, access).or(too_many.then(|| ResponseError::InvalidRequest.code()));
    let response = match refused {
        Some(code) => failed(code),
        None => {
            // Copied, for the reason JoinGroup's metadata is.
            let assignments = body
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), Bytes::copy_from_slice(&a.assignment)))
                .collect();
            let args = SyncArgs { member_id: body.member_id.to_string(), generation: body.generation_id, assignments };
            let op = GroupOp::Sync(args);
            match call_group(context, &group, op).await {
                Some(GroupAnswer::Synced(Ok(synced))) => SyncGroupResponse::default()
                    .with_protocol_type(Some(StrBytes::from_string(synced.protocol_type)))
                    .with_protocol_name(Some(StrBytes::from_string(synced.protocol_name)))
                    .with_assignment(synced.assignment),
                Some(GroupAnswer::Synced(Err(error))) => failed(group_error_code(error)),
                _ => failed(group_error_code(GroupError::NotCoordinator)),
            }
        }
    };
    count_errors(context, ApiKey::SyncGroup, [response.error_code]);
    respond(request, &response).map(Some)
}

/// Heartbeat: keeps the session; `REBALANCE_IN_PROGRESS` tells the member to rejoin.
pub async fn heartbeat(context: &Rc<ShardContext>, request: &KafkaRequest, access: Access<'_>) -> KafkaOutcome {
    let body: HeartbeatRequest = decode_body(request)?;
    let group = body.group_id.0.to_string();
    let code = match refusal(context, &group, access) {
        Some(code) => code,
        None => {
            let op = GroupOp::Heartbeat { member_id: body.member_id.to_string(), generation: body.generation_id };
            done_code(call_group(context, &group, op).await)
        }
    };
    count_errors(context, ApiKey::Heartbeat, [code]);
    respond(request, &HeartbeatResponse::default().with_error_code(code)).map(Some)
}

/// The error code of a `Done` answer.
pub fn done_code(answer: Option<GroupAnswer>) -> i16 {
    match answer {
        Some(GroupAnswer::Done(Ok(()))) => 0,
        Some(GroupAnswer::Done(Err(error))) => group_error_code(error),
        // The coordinator went away (its shard stops): not the member's
        // fault, so not UNKNOWN_MEMBER_ID, on which clients drop their id.
        _ => group_error_code(GroupError::NotCoordinator),
    }
}

/// LeaveGroup: one member (v0–2) or several (v3+); the rest rebalance.
pub async fn leave_group(context: &Rc<ShardContext>, request: &KafkaRequest, access: Access<'_>) -> KafkaOutcome {
    let body: LeaveGroupRequest = decode_body(request)?;
    at_most(body.members.len(), context.config.groups.max_members_per_group, "LeaveGroup members")?;
    let group = body.group_id.0.to_string();
    let batch = request.header.request_api_version >= 3;
    let members: Vec<String> = match batch {
        true => body.members.iter().map(|member| member.member_id.to_string()).collect(),
        false => vec![body.member_id.to_string()],
    };
    let (code, results) = match refusal(context, &group, access) {
        Some(code) => (code, Vec::new()),
        None => match call_group(context, &group, GroupOp::Leave(members.clone())).await {
            Some(GroupAnswer::Left(results)) => {
                let codes: Vec<(String, i16)> = results
                    .into_iter()
                    .map(|(member, result)| (member, result.err().map_or(0, group_error_code)))
                    .collect();
                // v0–2 name one member: its code is the answer's.
                let top = if batch { 0 } else { codes.first().map_or(0, |(_, code)| *code) };
                (top, codes)
            }
            _ => (group_error_code(GroupError::NotCoordinator), Vec::new()),
        },
    };
    let mut response = LeaveGroupResponse::default().with_error_code(code);
    if batch {
        response.members = results
            .iter()
            .map(|(member, code)| {
                MemberResponse::default().with_member_id(StrBytes::from_string(member.clone())).with_error_code(*code)
            })
            .collect();
    }
    let codes = std::iter::once(code).chain(response.members.iter().map(|member| member.error_code));
    count_errors(context, ApiKey::LeaveGroup, codes);
    respond(request, &response).map(Some)
}

/// ListGroups: the groups with members on every shard (v4+ by state).
pub async fn list_groups(context: &Rc<ShardContext>, request: &KafkaRequest, access: Access<'_>) -> KafkaOutcome {
    let body: ListGroupsRequest = decode_body(request)?;
    let allowed = access.allows(context, Operation::GroupMembership);
    let mut groups = Vec::new();
    if allowed && context.write_epoch().is_ok() {
        for shard in 0..context.shards {
            if let Some(GroupAnswer::Listed(listed)) = call_shard(context, shard, "", GroupOp::List).await {
                groups.extend(listed);
            }
        }
    }
    let wanted = |state: &str| body.states_filter.is_empty() || body.states_filter.iter().any(|s| s.as_str() == state);
    let listed = groups
        .into_iter()
        .filter(|(_, _, state)| wanted(state))
        .map(|(group, protocol_type, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group)))
                .with_protocol_type(StrBytes::from_string(protocol_type))
                .with_group_state(StrBytes::from_static_str(state))
                .with_group_type(StrBytes::from_static_str("classic"))
        })
        .collect();
    let code = match context.write_epoch() {
        _ if !allowed => ResponseError::GroupAuthorizationFailed.code(),
        Ok(_) => 0,
        Err(_) => ResponseError::NotCoordinator.code(),
    };
    count_errors(context, ApiKey::ListGroups, [code]);
    respond(request, &ListGroupsResponse::default().with_error_code(code).with_groups(listed)).map(Some)
}

/// DescribeGroups: state, protocol and members of each group ("Dead" for
/// a group without members).
pub async fn describe_groups(context: &Rc<ShardContext>, request: &KafkaRequest, access: Access<'_>) -> KafkaOutcome {
    let body: DescribeGroupsRequest = decode_body(request)?;
    let groups = distinct_within(&body.groups, context.config.groups.max_groups, "DescribeGroups groups")?;
    let mut described = Vec::with_capacity(groups.len());
    for group_id in groups {
        let group = group_id.0.to_string();
        let answer = DescribedGroup::default().with_group_id(group_id.clone()).with_authorized_operations(i32::MIN);
        if let Some(code) = refusal(context, &group, access) {
            described.push(answer.with_error_code(code).with_group_state(StrBytes::from_static_str("Dead")));
            continue;
        }
        let Some(GroupAnswer::Described(description)) = call_group(context, &group, GroupOp::Describe).await else {
            described.push(answer.with_error_code(group_error_code(GroupError::NotCoordinator)));
            continue;
        };
        let members = description.members.into_iter().map(|(member_id, client_id, metadata, assignment)| {
            DescribedGroupMember::default()
                .with_member_id(StrBytes::from_string(member_id))
                .with_client_id(StrBytes::from_string(client_id))
                .with_client_host(StrBytes::default())
                .with_member_metadata(metadata)
                .with_member_assignment(assignment)
        });
        described.push(
            answer
                .with_group_state(StrBytes::from_static_str(description.state))
                .with_protocol_type(StrBytes::from_string(description.protocol_type))
                .with_protocol_data(StrBytes::from_string(description.protocol_name))
                .with_members(members.collect()),
        );
    }
    count_errors(context, ApiKey::DescribeGroups, described.iter().map(|group| group.error_code));
    respond(request, &DescribeGroupsResponse::default().with_groups(described)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_never_comes_is_not_coordinator_never_unknown_member() {
        let not_coordinator = ResponseError::NotCoordinator.code();
        assert_eq!(done_code(None), not_coordinator);
        assert_eq!(group_error_code(GroupError::NotCoordinator), not_coordinator);
        assert_eq!(done_code(Some(GroupAnswer::Done(Ok(())))), 0);
    }
}

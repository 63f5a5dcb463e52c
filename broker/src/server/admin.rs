//! `POST /admin/members`: membership changes, sent to the leader, behind a bearer token.
//!
//! ```text
//!   {"action":"add_learner","id":4,"addr":"host:7000"}  → learner replicated to, not voting
//!   {"action":"promote","id":4}                         → learner becomes a voter
//!   {"action":"remove","id":4}                          → voter or learner leaves the cluster
//! ```
//!
//! Only the leader can change membership: a follower answers 421 with the leader's id and
//! address so the caller can retry there. openraft applies one change at a time (joint
//! consensus); a second one while the first is in progress gets 409.
//!
//! The token is compared in constant time (only its length can leak, which is not secret);
//! without `admin_token` in the config the endpoint answers 404.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use openraft::ChangeMembers;
use openraft::error::{ClientWriteError, RaftError};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::status::HttpState;
use crate::raft::{BrokerNode, NodeId};

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum MemberChange {
    /// Adds `id` at `addr` as a learner (it receives the log but does not vote).
    AddLearner {
        /// The new node's id.
        id: NodeId,
        /// Its QUIC address as the other brokers dial it.
        addr: String,
    },
    /// Makes learner `id` a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Removes voter or learner `id`.
    Remove {
        /// The node.
        id: NodeId,
    },
}

pub(super) async fn members(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(token) = state.admin_token.as_deref() else {
        return error(
            StatusCode::NOT_FOUND,
            "admin is disabled: no admin_token configured",
        );
    };
    if !authorized(&headers, token) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    let change: MemberChange = match serde_json::from_slice(&body) {
        Ok(change) => change,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    tracing::info!(?change, "membership change requested");
    let raft = state.node.raft();
    let outcome = match &change {
        MemberChange::AddLearner { id, addr } => {
            // Not blocking: answered once the change commits; the learner's catch-up shows as
            // its lag in /status.
            raft.add_learner(*id, BrokerNode::new(addr.clone()), false)
                .await
        }
        MemberChange::Promote { id } => {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([*id])), false)
                .await
        }
        MemberChange::Remove { id } => {
            let voter = state.node.status().await.voters.contains(id);
            let changes = if voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([*id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([*id]))
            };
            raft.change_membership(changes, false).await
        }
    };
    match outcome {
        Ok(response) => {
            let m = response.membership.as_ref();
            Json(json!({
                "log_index": response.log_id.index,
                "voters": m.map(|m| m.voter_ids().collect::<Vec<_>>()),
                "members": m.map(|m| m.nodes().map(|(id, n)| (id.to_string(), n.addr.clone()))
                    .collect::<std::collections::BTreeMap<_, _>>()),
            }))
            .into_response()
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => (
            StatusCode::MISDIRECTED_REQUEST,
            Json(json!({
                "error": "not the leader",
                "leader": f.leader_id,
                "leader_addr": f.leader_node.map(|n| n.addr),
            })),
        )
            .into_response(),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            error(StatusCode::CONFLICT, &e.to_string())
        }
        Err(RaftError::Fatal(e)) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}

/// Whether the request carries `Authorization: Bearer <token>` (one header, scheme in any case).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some((scheme, presented)) = value.as_bytes().split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") && bool::from(presented.ct_eq(token.as_bytes()))
}

fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn only_the_exact_bearer_token_is_accepted() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            h
        };
        assert!(authorized(&with("Bearer s3cret-token"), "s3cret-token"));
        assert!(authorized(&with("bearer s3cret-token"), "s3cret-token"));
        assert!(!authorized(&with("Bearer s3cret-toke"), "s3cret-token"));
        assert!(!authorized(&with("Basic s3cret-token"), "s3cret-token"));
        assert!(!authorized(&HeaderMap::new(), "s3cret-token"));
    }

    #[test]
    fn changes_parse_from_json() {
        let c: MemberChange =
            serde_json::from_str(r#"{"action":"add_learner","id":4,"addr":"b:7000"}"#).unwrap();
        assert_eq!(
            c,
            MemberChange::AddLearner {
                id: 4,
                addr: "b:7000".into()
            }
        );
        assert!(serde_json::from_str::<MemberChange>(r#"{"action":"promote"}"#).is_err());
    }
}

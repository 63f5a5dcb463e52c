//! One room's presence: members by connection, each owned by the edge that joined it, plus
//! per-user connection counts so `presence_stats` is exact without scanning (two tabs of one
//! user are two clients but one user).

use plaza_proto::cluster::{PresencePage, PresenceStats};
use plaza_proto::{ClientId, EdgeId, Member, UserId};
use serde::{Deserialize, Serialize};

use crate::small_map::SmallMap;

/// A member and the edge whose lease keeps it alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Joined {
    pub(super) member: Member,
    pub(super) edge: EdgeId,
}

/// What [`Presence::join`] did.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum JoinOutcome {
    /// A new member: announce it.
    New,
    /// The client was already a member; its info (and owner) were replaced silently. Carries
    /// the previous owner so the caller can move the member between edge indexes.
    Replaced {
        /// The edge that owned the member before.
        previous_edge: EdgeId,
        /// The member as it was before.
        previous: Member,
    },
}

/// The members of one room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Presence {
    /// Ordered by client id, so listings and leave events never depend on hashing.
    members: SmallMap<ClientId, Joined>,
    /// Connections per user; a user is present while their count is above zero.
    users: SmallMap<UserId, u64>,
}

impl Presence {
    /// Adds or replaces `member`, owned by `edge`.
    pub(super) fn join(&mut self, edge: EdgeId, member: Member) -> JoinOutcome {
        let user = member.user.clone();
        match self
            .members
            .insert(member.client.clone(), Joined { member, edge })
        {
            None => {
                *self.users.get_or_default(user) += 1;
                JoinOutcome::New
            }
            Some(previous) => {
                if previous.member.user != user {
                    self.forget_user(&previous.member.user);
                    *self.users.get_or_default(user) += 1;
                }
                JoinOutcome::Replaced {
                    previous_edge: previous.edge,
                    previous: previous.member,
                }
            }
        }
    }

    /// Removes `client`; returns it and its owner if it was a member.
    pub(super) fn leave(&mut self, client: &ClientId) -> Option<Joined> {
        let joined = self.members.remove(client)?;
        self.forget_user(&joined.member.user);
        Some(joined)
    }

    /// The owner of `client`, if it is a member.
    pub(super) fn owner(&self, client: &ClientId) -> Option<&EdgeId> {
        self.members.get(client).map(|j| &j.edge)
    }

    /// Every member, ordered by client id.
    #[cfg(test)]
    pub(super) fn members(&self) -> Vec<Member> {
        self.members.iter().map(|(_, j)| j.member.clone()).collect()
    }

    /// One page of members after `after`, ordered by client id: costs the page, not the room.
    pub(super) fn page(&self, after: Option<&ClientId>, limit: u32) -> PresencePage {
        PresencePage::of_sorted(
            self.members.after(after).map(|(_, j)| &j.member),
            None,
            limit,
        )
    }

    /// Exact client and distinct-user counts.
    pub(super) fn stats(&self) -> PresenceStats {
        PresenceStats {
            clients: self.members.len() as u64,
            users: self.users.len() as u64,
        }
    }

    /// How many of `user`'s connections are members.
    pub(super) fn connections_of(&self, user: &UserId) -> u64 {
        self.users.get(user).copied().unwrap_or(0)
    }

    /// Whether nobody is present.
    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn forget_user(&mut self, user: &UserId) {
        if let Some(count) = self.users.get_mut(user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.users.remove(user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(client: &str, user: &str) -> Member {
        Member {
            client: ClientId::new(client),
            user: UserId::new(user),
            info: None,
        }
    }

    #[test]
    fn two_connections_of_one_user_count_as_two_clients_and_one_user() {
        let mut p = Presence::default();
        let e = EdgeId::new("e");
        assert_eq!(p.join(e.clone(), member("c1", "u")), JoinOutcome::New);
        assert_eq!(p.join(e.clone(), member("c2", "u")), JoinOutcome::New);
        assert_eq!(p.join(e, member("c3", "v")), JoinOutcome::New);
        assert_eq!(
            p.stats(),
            PresenceStats {
                clients: 3,
                users: 2
            }
        );
        p.leave(&ClientId::new("c1"));
        assert_eq!(
            p.stats(),
            PresenceStats {
                clients: 2,
                users: 2
            }
        );
        p.leave(&ClientId::new("c2"));
        assert_eq!(
            p.stats(),
            PresenceStats {
                clients: 1,
                users: 1
            }
        );
    }

    #[test]
    fn rejoining_replaces_the_member_and_moves_its_user_count() {
        let mut p = Presence::default();
        p.join(EdgeId::new("a"), member("c", "u"));
        let outcome = p.join(EdgeId::new("b"), member("c", "v"));
        assert_eq!(
            outcome,
            JoinOutcome::Replaced {
                previous_edge: EdgeId::new("a"),
                previous: member("c", "u"),
            }
        );
        assert_eq!(p.members(), [member("c", "v")]);
        assert_eq!(p.owner(&ClientId::new("c")), Some(&EdgeId::new("b")));
        assert_eq!(
            p.stats(),
            PresenceStats {
                clients: 1,
                users: 1
            }
        );
    }

    #[test]
    fn leaving_an_unknown_client_changes_nothing() {
        let mut p = Presence::default();
        p.join(EdgeId::new("a"), member("c", "u"));
        assert_eq!(p.leave(&ClientId::new("x")), None);
        assert_eq!(
            p.stats(),
            PresenceStats {
                clients: 1,
                users: 1
            }
        );
    }
}

//! User-level presence reads (`presence` with `mode: "users"`, `subscribe` with
//! `presence: "users"`): the room's whole member list, read page by page from the broker tier.

use plaza_backend::EdgeLink;
use plaza_proto::client::UserMember;
use plaza_proto::{ErrorCode, Member, RoomName, UserId};

use super::Node;
use super::calls::CallResult;
use crate::metrics as m;
use crate::user_presence::aggregate;

impl<L: EdgeLink> Node<L> {
    /// Every member of `room`, in client id order, or 117 if there are more than
    /// `client.max_user_presence_members`.
    pub(crate) async fn all_members(&self, room: &RoomName) -> CallResult<Vec<Member>> {
        let max = self.config.client.max_user_presence_members;
        let page_size = self.config.client.max_presence_page;
        let mut members = Vec::new();
        let mut after = None;
        loop {
            let page = self.presence(room.clone(), after, page_size).await?;
            members.extend(page.members);
            if members.len() > max {
                metrics::counter!(m::LIMIT_HITS, "limit" => "user_presence_members").increment(1);
                return Err(ErrorCode::LimitExceeded.with(format!(
                    "room {room} has more than {max} members: too many for user-level presence \
                     (use presence_stats)"
                )));
            }
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(members),
            }
        }
    }

    /// One page of `room`'s users after `after`, in user id order: from this edge's user
    /// table when a local subscriber keeps one (so it matches the `user_*` pushes), else from
    /// a full member read.
    pub(crate) async fn presence_users(
        &self,
        room: &RoomName,
        after: Option<UserId>,
        limit: u32,
    ) -> CallResult<(Vec<UserMember>, Option<UserId>)> {
        let limit = limit as usize;
        let (users, more) = match self.hub.users_page(room, after.as_ref(), limit) {
            Some(page) => page,
            None => {
                let all = aggregate(self.all_members(room).await?);
                let mut rest = all
                    .into_values()
                    .filter(|u| after.as_ref().is_none_or(|a| u.user > *a));
                let page: Vec<UserMember> = rest.by_ref().take(limit).collect();
                let more = rest.next().is_some();
                (page, more)
            }
        };
        let next = more.then(|| users.last().map(|u| u.user.clone())).flatten();
        Ok((users, next))
    }
}

//! The connections of each user on this edge: enforces `limits.connections_per_user` and lets
//! the broker tier disconnect a user (server API `disconnect`) without scanning every session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use plaza_proto::{CloseCode, UserId};

use crate::hub::SessionId;
use crate::outbox::Outbox;

/// A session of a user, and its outbox (to close it).
type Session = (SessionId, Arc<Outbox>);

/// Sessions by user. Shared by every session of the edge.
#[derive(Debug, Default)]
pub struct Users {
    /// Held only for synchronous map updates, never across an `.await`.
    by_user: Mutex<HashMap<UserId, Vec<Session>>>,
}

/// A session's place in [`Users`]; leaving it (on drop) frees the slot.
#[derive(Debug)]
pub struct UserSlot {
    users: Arc<Users>,
    user: UserId,
    session: SessionId,
}

impl Users {
    fn map(&self) -> MutexGuard<'_, HashMap<UserId, Vec<Session>>> {
        // Every update is a single push/retain/remove, so a poisoned map is still consistent.
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `session` for `user` unless the user already has `max` connections here.
    pub fn admit(
        self: &Arc<Self>,
        user: &UserId,
        session: SessionId,
        outbox: Arc<Outbox>,
        max: usize,
    ) -> Option<UserSlot> {
        let mut map = self.map();
        let sessions = map.entry(user.clone()).or_default();
        if sessions.len() >= max {
            return None;
        }
        // One slot at a time: most users have one connection per edge, and a `Vec`
        // would otherwise start at four.
        sessions.reserve_exact(1);
        sessions.push((session, outbox));
        Some(UserSlot {
            users: self.clone(),
            user: user.clone(),
            session,
        })
    }

    /// Closes every connection of `user` on this edge; returns how many.
    pub fn disconnect(&self, user: &UserId, code: CloseCode, reason: &str) -> usize {
        let sessions = self.map().get(user).cloned().unwrap_or_default();
        for (_, outbox) in &sessions {
            outbox.close(code, reason);
        }
        sessions.len()
    }

    /// Open connections of `user`.
    pub fn count(&self, user: &UserId) -> usize {
        self.map().get(user).map_or(0, Vec::len)
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut map = self.users.map();
        if let Some(sessions) = map.get_mut(&self.user) {
            sessions.retain(|(s, _)| *s != self.session);
            if sessions.is_empty() {
                map.remove(&self.user);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_per_user_and_freed_on_drop() {
        let users = Arc::new(Users::default());
        let ann = UserId::new("ann");
        let a = users.admit(&ann, 1, Outbox::new(1024), 2).unwrap();
        let _b = users.admit(&ann, 2, Outbox::new(1024), 2).unwrap();
        assert!(users.admit(&ann, 3, Outbox::new(1024), 2).is_none());
        assert!(
            users
                .admit(&UserId::new("bob"), 4, Outbox::new(1024), 2)
                .is_some()
        );
        drop(a);
        assert_eq!(users.count(&ann), 1);
        assert!(users.admit(&ann, 5, Outbox::new(1024), 2).is_some());
    }

    #[test]
    fn disconnect_closes_every_session_of_the_user() {
        let users = Arc::new(Users::default());
        let ann = UserId::new("ann");
        let (c1, c2) = (Outbox::new(1024), Outbox::new(1024));
        let _s1 = users.admit(&ann, 1, c1.clone(), 10);
        let _s2 = users.admit(&ann, 2, c2.clone(), 10);
        assert_eq!(users.disconnect(&ann, CloseCode::Kicked, "bye"), 2);
        assert!(c1.is_closed() && c2.is_closed());
        assert_eq!(
            users.disconnect(&UserId::new("nobody"), CloseCode::Kicked, "bye"),
            0
        );
    }
}

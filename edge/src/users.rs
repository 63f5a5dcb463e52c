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

impl Users {
    fn map(&self) -> MutexGuard<'_, HashMap<UserId, Vec<Session>>> {
        // Every update is a single push/retain/remove, so a poisoned map is still consistent.
        self.by_user.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `session` for `user` unless the user already has `max` connections here;
    /// false if it has. An admitted session must be [released](Users::release) when it ends.
    pub fn admit(
        &self,
        user: &UserId,
        session: SessionId,
        outbox: Arc<Outbox>,
        max: usize,
    ) -> bool {
        let mut map = self.map();
        let sessions = map.entry(user.clone()).or_default();
        if sessions.len() >= max {
            if sessions.is_empty() {
                map.remove(user);
            }
            return false;
        }
        // One slot at a time: most users have one connection per edge, and a `Vec`
        // would otherwise start at four.
        sessions.reserve_exact(1);
        sessions.push((session, outbox));
        true
    }

    /// Frees the slot `session` of `user` holds (the session ended).
    pub fn release(&self, user: &UserId, session: SessionId) {
        let mut map = self.map();
        if let Some(sessions) = map.get_mut(user) {
            sessions.retain(|(s, _)| *s != session);
            if sessions.is_empty() {
                map.remove(user);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_limited_per_user_and_freed_on_release() {
        let users = Users::default();
        let ann = UserId::new("ann");
        assert!(users.admit(&ann, 1, Outbox::new(1024), 2));
        assert!(users.admit(&ann, 2, Outbox::new(1024), 2));
        assert!(!users.admit(&ann, 3, Outbox::new(1024), 2));
        assert!(users.admit(&UserId::new("bob"), 4, Outbox::new(1024), 2));
        users.release(&ann, 1);
        assert_eq!(users.count(&ann), 1);
        assert!(users.admit(&ann, 5, Outbox::new(1024), 2));
        users.release(&ann, 2);
        users.release(&ann, 5);
        assert_eq!(users.count(&ann), 0);
        assert!(
            users.map().get(&ann).is_none(),
            "a user with no session is forgotten"
        );
        assert!(!users.admit(&ann, 6, Outbox::new(1024), 0));
        assert!(
            users.map().get(&ann).is_none(),
            "a refused user leaves no entry"
        );
    }

    #[test]
    fn disconnect_closes_every_session_of_the_user() {
        let users = Users::default();
        let ann = UserId::new("ann");
        let (c1, c2) = (Outbox::new(1024), Outbox::new(1024));
        assert!(users.admit(&ann, 1, c1.clone(), 10));
        assert!(users.admit(&ann, 2, c2.clone(), 10));
        assert_eq!(users.disconnect(&ann, CloseCode::Kicked, "bye"), 2);
        assert!(c1.is_closed() && c2.is_closed());
        assert_eq!(
            users.disconnect(&UserId::new("nobody"), CloseCode::Kicked, "bye"),
            0
        );
    }
}

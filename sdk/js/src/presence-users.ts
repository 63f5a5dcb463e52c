// User-level presence computed from a room's connection-level member list: one entry per
// user with its connection count, and the users that appeared or disappeared between two
// lists (a user "joins" with their first connection and "leaves" with their last).

import type { Member } from "./types.js";

/** One user present in a room, however many connections (tabs, devices) they have. */
export interface PresenceUser<Info = unknown> {
  user: string;
  /** How many of the user's connections are members. */
  connections: number;
  /** The `info` of the user's first connection (by client id). */
  info: Info | null;
  /** The user's connections, ordered by client id. */
  clients: string[];
}

/** Groups `members` by user, in order of each user's first connection (by client id). */
export function groupMembersByUser<Info = unknown>(members: readonly Member<Info>[]): PresenceUser<Info>[] {
  const sorted = [...members].sort((a, b) => (a.client < b.client ? -1 : a.client > b.client ? 1 : 0));
  const byUser = new Map<string, PresenceUser<Info>>();
  for (const m of sorted) {
    const entry = byUser.get(m.user);
    if (entry) {
      entry.connections += 1;
      entry.clients.push(m.client);
    } else {
      byUser.set(m.user, { user: m.user, connections: 1, info: m.info, clients: [m.client] });
    }
  }
  return [...byUser.values()];
}

/** The users in `next` but not in `previous` (joined) and the reverse (left). */
export function diffUsers(
  previous: readonly PresenceUser[],
  next: readonly PresenceUser[],
): { joined: string[]; left: string[] } {
  const before = new Set(previous.map((u) => u.user));
  const after = new Set(next.map((u) => u.user));
  return {
    joined: [...after].filter((u) => !before.has(u)),
    left: [...before].filter((u) => !after.has(u)),
  };
}

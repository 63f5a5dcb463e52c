// "Last seen" per user, recorded from Plaza's `user.offline` lifecycle events (see
// app/api/plaza-events/route.ts). Kept in memory for the example; a real app writes it to its
// database, keyed by user, keeping the newest `time_ms` (deliveries are at least once and a
// retry may repeat an event — the event id makes that harmless).

const lastSeen = new Map<string, { at: number; eventId: string }>();

/** Records that `user` went offline at `at` (ms), unless a newer record exists. */
export function recordOffline(user: string, at: number, eventId: string): void {
  const current = lastSeen.get(user);
  if (!current || current.at < at) lastSeen.set(user, { at, eventId });
}

/** When `user` was last seen going offline, if ever. */
export function lastSeenOf(user: string): { at: number; eventId: string } | undefined {
  return lastSeen.get(user);
}

/** Value types of the Plaza protocol (docs/protocol.md §2.4). */

/** A point in a room's log. Compare epochs for equality only. */
export interface Position {
  epoch: string;
  offset: number;
}

/** The publishing user and connection of a publication. */
export interface Sender {
  user: string;
  client: string;
}

/** One publication of a room. `from` is `null` for server-side (HTTP API) publishes. */
export interface Publication<T = unknown> {
  room: string;
  offset: number;
  data: T;
  from: Sender | null;
}

/**
 * An ephemeral publication (protocol §11a): delivered at most once to whoever is subscribed,
 * in its publisher's order; no offset, never in history or recovery.
 */
export interface EphemeralMessage<T = unknown> {
  room: string;
  data: T;
  from: Sender | null;
}

/** One connection in a room's presence. */
export interface Member<Info = unknown> {
  client: string;
  user: string;
  info: Info | null;
}

/** Counts of a room's presence. */
export interface PresenceStats {
  clients: number;
  users: number;
}

/** The reply of `history`. */
export interface HistoryResult<T = unknown> {
  epoch: string;
  offset: number;
  publications: Publication<T>[];
  /** With `since`: whether every publication after it is still held (else none are returned). */
  complete: boolean;
}

/** Options of `history`. */
export interface HistoryOptions {
  /** Only publications after this position (oldest first). */
  since?: Position;
  /** At most this many (the edge caps it, default 1000). */
  limit?: number;
  /** Deadline in ms (default: the client's `requestTimeoutMs`). */
  timeoutMs?: number;
}

/** The reply of `publish`. Do not use it as a recovery position (protocol §10.3). */
export interface PublishResult {
  epoch: string;
  offset: number;
}

/** Options of `publish`. */
export interface PublishOptions {
  /**
   * Idempotency key (1–128 bytes). Default: a random UUID generated once per call, so the
   * client's own retries after a reconnect are never delivered twice.
   */
  idem?: string;
  /** Deadline in ms, including waiting for a connection (default `publishTimeoutMs`). */
  timeoutMs?: number;
}

/** What the edge says about the connection after `connect`. */
export interface ConnectionInfo {
  /** This connection's id (also its presence member id). */
  client: string;
  /** The token's `sub`. */
  user: string;
  /** Seconds until the token's `exp` at connect time, `null` if it has none. */
  expiresIn: number | null;
  /** Seconds between the edge's pings. */
  pingInterval: number;
}

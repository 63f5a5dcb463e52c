/**
 * Live-state rooms (protocol §11b): a room's map key → value, kept by the client from the
 * `subscribe` reply's `state` snapshot and the change records that follow as publications
 * (`{"key", "value"}` or `{"key", "deleted": true}`; the offset is the key's version).
 */

/** One key's value and version (the offset of the change that set it). */
export interface StateValue<T = unknown> {
  value: T;
  version: number;
}

/** A state room's map as the client holds it (read-only: change it with `set`/`delete`). */
export type RoomStateMap<T = unknown> = ReadonlyMap<string, StateValue<T>>;

/** Options of `client.set`. */
export interface SetOptions {
  /** Compare-and-set: only if the key's current version is this (0: only if absent). */
  version?: number;
  /** Seconds until the server deletes the key (unless set again). */
  ttl?: number;
  /** Delete the key when this connection's subscription ends (cursors, "I am here"). */
  tied?: boolean;
  timeoutMs?: number;
}

/** Options of `client.delete`. */
export interface DeleteOptions {
  /** Compare-and-delete: only if the key's current version is this. */
  version?: number;
  timeoutMs?: number;
}

/** The map of a `subscribe` reply's `state`. */
export function mapOf(entries: { key: string; value: unknown; version: number }[]): Map<string, StateValue> {
  return new Map(entries.map((e) => [e.key, { value: e.value, version: e.version }]));
}

/** Applies one change record at `offset`; returns false if `data` is not one. */
export function applyChange(map: Map<string, StateValue>, offset: number, data: unknown): boolean {
  if (!data || typeof data !== "object") return false;
  const change = data as { key?: unknown; value?: unknown; deleted?: unknown };
  if (typeof change.key !== "string") return false;
  if (change.deleted === true) {
    map.delete(change.key);
  } else if ("value" in change) {
    map.set(change.key, { value: change.value, version: offset });
  } else {
    return false;
  }
  return true;
}

/**
 * The connection state machine.
 *
 * ```text
 *             connect()                 connect ok
 * disconnected ─────────▶ connecting ──────────────▶ connected
 *      ▲  │                   │                         │
 *      │  │ (lost, retry)     │ lost                    │ lost (reconnectable code)
 *      │  ▼                   ▼                         ▼
 *      │ reconnecting ◀── disconnected ◀───────────────┘
 *      │      │ connect ok ──▶ connected
 *      └──────┴── close() or terminal code (4500–4999) ──▶ closed ── connect() ──▶ connecting
 * ```
 *
 * `disconnected` is also the state before the first `connect()`. A lost connection passes
 * through `disconnected` (event for the UI) and then `reconnecting`, which covers both the
 * backoff wait and the attempts; failed attempts stay in `reconnecting`.
 */

/** The states of a client's connection. */
export type ConnectionState = "connecting" | "connected" | "disconnected" | "reconnecting" | "closed";

const ALLOWED: Record<ConnectionState, readonly ConnectionState[]> = {
  disconnected: ["connecting", "reconnecting", "closed"],
  connecting: ["connected", "disconnected", "closed"],
  connected: ["disconnected", "closed"],
  reconnecting: ["connected", "disconnected", "closed"],
  closed: ["connecting"],
};

/** Whether the machine may move from `from` to `to`. */
export function canTransition(from: ConnectionState, to: ConnectionState): boolean {
  return ALLOWED[from].includes(to);
}

/** Checks a transition; throws on one the machine does not have (a client bug). */
export function assertTransition(from: ConnectionState, to: ConnectionState): void {
  if (!canTransition(from, to)) {
    throw new Error(`plaza: invalid connection state transition ${from} → ${to}`);
  }
}

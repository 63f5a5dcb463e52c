/**
 * The request queue: `publish`, `presence`, `presence_stats` and `history` calls wait here
 * until the client is connected, go out, are resent after a reconnect (every one of them is a
 * read or an idempotent publish, so resending is safe), and retry temporary errors with
 * backoff — all within one deadline per call.
 */

import { PlazaError, PlazaTimeoutError } from "./errors.js";
import { ConnectionLost } from "./internal.js";

interface Call {
  op: string;
  fields: Record<string, unknown>;
  /** Wait until this room's subscription is live before sending (publish needs it). */
  room: string | undefined;
  resolve: (value: never) => void;
  reject: (error: Error) => void;
  deadline: ReturnType<typeof setTimeout> | undefined;
  retryTimer: ReturnType<typeof setTimeout> | undefined;
  inFlight: boolean;
  done: boolean;
  attempts: number;
}

/** What the queue needs from the client. */
export interface CallQueueHooks {
  /** Whether commands can be sent now. */
  connected(): boolean;
  /** Whether calls for `room` must wait (its subscription is being made). */
  blocked(room: string): boolean;
  /** Sends one command on the current connection; rejects with `ConnectionLost` when it drops. */
  send(op: string, fields: Record<string, unknown>): Promise<unknown>;
}

/** Pending calls of one client. */
export class CallQueue {
  private readonly calls = new Set<Call>();

  constructor(private readonly hooks: CallQueueHooks) {}

  /** Queues a call; it settles with the reply, an error reply, or `PlazaTimeoutError` at the deadline. */
  add<T>(op: string, fields: Record<string, unknown>, opts: { timeoutMs: number; room?: string }): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const c: Call = {
        op,
        fields,
        room: opts.room,
        resolve: resolve as (v: never) => void,
        reject,
        deadline: undefined,
        retryTimer: undefined,
        inFlight: false,
        done: false,
        attempts: 0,
      };
      c.deadline = setTimeout(() => this.finish(c, new PlazaTimeoutError(op, opts.timeoutMs)), opts.timeoutMs);
      this.calls.add(c);
      this.pump();
    });
  }

  /** Fails every pending call (the client closed). */
  failAll(error: Error): void {
    for (const c of [...this.calls]) this.finish(c, error);
  }

  /** Sends every queued call that can go now. */
  pump(): void {
    if (!this.hooks.connected()) return;
    for (const c of this.calls) {
      if (c.inFlight || c.done || c.retryTimer !== undefined) continue;
      if (c.room !== undefined && this.hooks.blocked(c.room)) continue;
      c.inFlight = true;
      c.attempts += 1;
      this.hooks.send(c.op, c.fields).then(
        (ok) => this.finish(c, undefined, ok),
        (err: Error) => {
          c.inFlight = false;
          if (c.done || err instanceof ConnectionLost) return; // Resent after the reconnect.
          if (err instanceof PlazaError && err.temporary) {
            c.retryTimer = setTimeout(() => {
              c.retryTimer = undefined;
              this.pump();
            }, Math.min(5_000, 100 * 2 ** c.attempts));
            return;
          }
          this.finish(c, err);
        },
      );
    }
  }

  private finish(c: Call, error: Error | undefined, value?: unknown): void {
    if (c.done) return;
    c.done = true;
    if (c.deadline !== undefined) clearTimeout(c.deadline);
    if (c.retryTimer !== undefined) clearTimeout(c.retryTimer);
    this.calls.delete(c);
    if (error) c.reject(error);
    else c.resolve(value as never);
  }
}

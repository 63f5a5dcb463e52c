/**
 * Exponential backoff with full jitter: the n-th delay is uniformly random in
 * `[0, min(maxMs, baseMs · 2ⁿ))`. Full jitter spreads a crowd of clients that lost the same
 * edge at the same moment across the whole window, so they do not reconnect in waves.
 */

/** Backoff tuning. */
export interface BackoffOptions {
  /** The first window, in ms (default 500). */
  baseMs?: number;
  /** The largest window, in ms (default 30 000). */
  maxMs?: number;
  /** Random source in [0, 1), injectable for tests (default `Math.random`). */
  random?: () => number;
}

/** Counts failed attempts and hands out the next delay. */
export class Backoff {
  private attempt = 0;
  private readonly baseMs: number;
  private readonly maxMs: number;
  private readonly random: () => number;

  constructor(options: BackoffOptions = {}) {
    this.baseMs = options.baseMs ?? 500;
    this.maxMs = options.maxMs ?? 30_000;
    this.random = options.random ?? Math.random;
    if (!(this.baseMs > 0) || !(this.maxMs >= this.baseMs)) {
      throw new RangeError(`backoff needs 0 < baseMs <= maxMs, got ${this.baseMs} and ${this.maxMs}`);
    }
  }

  /** Attempts made since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  /** The upper bound of the window for the next delay, in ms. */
  window(): number {
    // 2^attempt overflows to Infinity for huge attempt counts; min() keeps it at maxMs.
    return Math.min(this.maxMs, this.baseMs * 2 ** this.attempt);
  }

  /** The delay before the next attempt, in ms; advances the attempt counter. */
  next(): number {
    const delay = Math.floor(this.random() * this.window());
    this.attempt += 1;
    return delay;
  }

  /** Starts over after a success. */
  reset(): void {
    this.attempt = 0;
  }
}

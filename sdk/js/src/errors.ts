/**
 * Errors and codes of the Plaza protocol (docs/protocol.md §7 and §8).
 *
 * Program against `code`; messages are for humans and may change.
 */

/** Error codes of command replies and `unsubscribed` pushes (protocol §7). */
export const ErrorCode = {
  internal: 100,
  unknownOp: 101,
  badRequest: 102,
  notConnected: 103,
  alreadyConnected: 104,
  invalidRoom: 105,
  permissionDenied: 106,
  alreadySubscribed: 107,
  notSubscribed: 108,
  messageTooLarge: 109,
  invalidToken: 110,
  tokenExpired: 111,
  rateLimited: 112,
  backendUnavailable: 113,
  presenceDisabled: 114,
  publishDisabled: 115,
  wrongUser: 116,
  limitExceeded: 117,
  notStateRoom: 118,
  stateConflict: 119,
} as const;

/** WebSocket close codes the edge uses (protocol §8). */
export const CloseCode = {
  shutdown: 4000,
  slowConsumer: 4001,
  tokenExpired: 4002,
  serverError: 4003,
  backendUnavailable: 4004,
  connectTimeout: 4005,
  idleTimeout: 4006,
  rateLimited: 4007,
  tooManyConnections: 4008,
  kicked: 4009,
  invalidToken: 4500,
  badRequest: 4501,
  forbidden: 4502,
  messageTooLarge: 4503,
  unsupportedVersion: 4504,
} as const;

/** Error codes whose command may succeed if retried unchanged (protocol §7). */
const TEMPORARY = new Set<number>([ErrorCode.internal, ErrorCode.rateLimited, ErrorCode.backendUnavailable]);

/** Whether an error code is temporary (retrying the same command later may succeed). */
export function isTemporaryCode(code: number): boolean {
  return TEMPORARY.has(code);
}

/**
 * Whether a close code is terminal: 4500–4999 must not be reconnected automatically (the
 * client or its token must change first). Everything else — 4000–4499, network drops (1006),
 * normal closes by a proxy, non-Plaza codes — is reconnectable.
 */
export function isTerminalCloseCode(code: number): boolean {
  return code >= 4500 && code <= 4999;
}

/** Whether a close code means the token must be replaced before reconnecting (4002). */
export function closeNeedsFreshToken(code: number): boolean {
  return code === CloseCode.tokenExpired;
}

/** An error reply from the edge, or a server-side end of a subscription. */
export class PlazaError extends Error {
  /** The protocol error code (§7), e.g. 106 for `permission_denied`. */
  readonly code: number;
  /** `true` if retrying the same command later may succeed. */
  readonly temporary: boolean;
  /** The command that failed (`publish`, `subscribe`, …), if any. */
  readonly op: string | undefined;

  constructor(code: number, message: string, temporary = isTemporaryCode(code), op?: string) {
    super(message);
    this.name = "PlazaError";
    this.code = code;
    this.temporary = temporary;
    this.op = op;
  }
}

/** A request got no reply in time (its deadline covers waiting for a connection too). */
export class PlazaTimeoutError extends Error {
  /** The command that timed out. */
  readonly op: string;

  constructor(op: string, timeoutMs: number) {
    super(`${op}: no reply within ${timeoutMs} ms`);
    this.name = "PlazaTimeoutError";
    this.op = op;
  }
}

/** The client is closed (by `close()` or a terminal close code); requests are refused. */
export class PlazaClosedError extends Error {
  /** The close code that ended the client, if the edge ended it. */
  readonly code: number | undefined;

  constructor(message: string, code?: number) {
    super(message);
    this.name = "PlazaClosedError";
    this.code = code;
  }
}

// Server-side helpers for Plaza's lifecycle webhooks (`@plaza/client/webhooks`): verify a
// delivery's signature and read its events. Uses only Web Crypto (`crypto.subtle`), so it runs
// in Node >= 20, Next.js route handlers (Node and Edge runtimes), Deno and workers.
//
// A delivery is a POST with the JSON body `{endpoint, events: [...]}` and the headers
// `Plaza-Timestamp: <unix seconds>` and `Plaza-Signature: v1=<hex HMAC-SHA256(secret,
// "<timestamp>.<raw body>")>`. Verify against the raw body text (before JSON parsing).

/** Lifecycle event types (see docs/webhooks.md). */
export type PlazaEventType =
  | "room.occupied"
  | "room.vacated"
  | "member.joined"
  | "member.left"
  | "user.joined"
  | "user.left"
  | "user.online"
  | "user.offline";

/** One lifecycle event, as delivered by webhooks and returned by `GET /v1/api/events`. */
export interface PlazaEvent {
  /** `"<epoch>:<seq>"`: the same on every delivery; use it to drop duplicates. */
  id: string;
  type: PlazaEventType;
  epoch: string;
  /** Increases by exactly one per event of the feed. */
  seq: number;
  /** When the broker tier decided it, milliseconds on its clock. */
  time_ms: number;
  room?: string;
  user?: string;
  client?: string;
  info?: unknown;
}

/** The body of one webhook delivery. */
export interface PlazaWebhookBatch {
  /** The endpoint's configured name. */
  endpoint: string;
  /** Events in feed order (so in order per room and per user). */
  events: PlazaEvent[];
}

/** Why a delivery was refused by {@link verifyWebhook}. */
export class WebhookVerificationError extends Error {
  override name = "WebhookVerificationError";
}

export interface VerifyOptions {
  /** The `[webhooks] secret` of the edges. */
  secret: string;
  /** The raw request body, exactly as received. */
  body: string;
  /** The `Plaza-Signature` header. */
  signature: string | null | undefined;
  /** The `Plaza-Timestamp` header. */
  timestamp: string | null | undefined;
  /** Refuse deliveries signed longer ago (or further ahead) than this; default 300 s. */
  toleranceSeconds?: number;
  /** Current time in unix seconds (tests). */
  now?: number;
}

const encoder = new TextEncoder();

/** `v1=<hex>` for `body` signed at `timestamp` with `secret`. */
export async function signWebhook(secret: string, timestamp: string, body: string): Promise<string> {
  const key = await crypto.subtle.importKey(
    "raw",
    encoder.encode(secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const mac = await crypto.subtle.sign("HMAC", key, encoder.encode(`${timestamp}.${body}`));
  return "v1=" + Array.from(new Uint8Array(mac), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Compares two strings in time independent of where they differ. */
function equalConstantTime(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/**
 * Verifies a delivery and returns its parsed body; throws {@link WebhookVerificationError}
 * when the signature is missing or wrong, or the timestamp is outside the tolerance (a
 * replayed delivery). Answer 2xx only after you have stored what you need: Plaza retries
 * anything else.
 */
export async function verifyWebhook(options: VerifyOptions): Promise<PlazaWebhookBatch> {
  const { secret, body, signature, timestamp } = options;
  if (!signature || !timestamp) {
    throw new WebhookVerificationError("missing Plaza-Signature or Plaza-Timestamp header");
  }
  if (!/^\d{1,12}$/.test(timestamp)) {
    throw new WebhookVerificationError("malformed Plaza-Timestamp");
  }
  const tolerance = options.toleranceSeconds ?? 300;
  const now = options.now ?? Math.floor(Date.now() / 1000);
  if (Math.abs(now - Number(timestamp)) > tolerance) {
    throw new WebhookVerificationError("Plaza-Timestamp is outside the tolerance (replayed?)");
  }
  const expected = await signWebhook(secret, timestamp, body);
  if (!equalConstantTime(expected, signature.trim())) {
    throw new WebhookVerificationError("signature mismatch");
  }
  return JSON.parse(body) as PlazaWebhookBatch;
}

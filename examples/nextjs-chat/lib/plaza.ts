// Server-only helpers: mint Plaza tokens and publish through the edge's HTTP API.
import { createHmac } from "node:crypto";
import { plazaApiKey, plazaSecret, plazaUrl } from "./config";
import type { User } from "./session";

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");

/**
 * An HS256 token for `user`, valid `ttlSeconds`: read the chat rooms and their presence, plus a
 * personal notification room `user:<id>`. No `publish` on the chat rooms: messages go through
 * the `sendMessage` server action, which takes the sender from the session, so a browser holding
 * this token cannot put anything in a chat room (error 106), let alone a message under another
 * user's name. It may publish to the typing room only, whose ephemeral "typing" signals carry
 * the sender the edge sets (`from`), so they cannot name anyone else either — and it may set
 * the live counter's keys in `counter:lobby` (a state room: `set` only, no messages). The client fetches
 * a new token before expiry.
 */
export function mintToken(user: User, ttlSeconds = 15 * 60): string {
  const now = Math.floor(Date.now() / 1000);
  const payload = {
    sub: user.id,
    iat: now,
    exp: now + ttlSeconds,
    plaza: {
      rooms: {
        "chat:*": ["subscribe", "presence"],
        "typing:lobby": ["subscribe", "publish"],
        "counter:lobby": ["subscribe", "publish"],
        "user:{sub}": ["subscribe"],
      },
      info: { name: user.name },
    },
  };
  const unsigned = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(payload)}`;
  const signature = createHmac("sha256", plazaSecret()).update(unsigned).digest("base64url");
  return `${unsigned}.${signature}`;
}

/** Publishes `data` to `room` via POST /v1/api/publish (see docs/api.md). */
export async function publish(room: string, data: unknown, idem?: string): Promise<{ epoch: string; offset: number }> {
  const res = await fetch(`${plazaUrl()}/v1/api/publish`, {
    method: "POST",
    headers: { Authorization: `Bearer ${plazaApiKey()}`, "Content-Type": "application/json" },
    body: JSON.stringify({ room, data, idem }),
    cache: "no-store",
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`plaza publish: ${res.status} ${json?.error?.code}: ${json?.error?.message}`);
  return json;
}

// Mints HS256 tokens with node:crypto, like an app's backend would.
import { createHmac } from "node:crypto";
import { SECRET } from "./edge.mjs";

const b64url = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");

/**
 * A token for `user` with every capability on every room unless `rooms` says otherwise.
 * `ttlSeconds` sets `exp` (negative → already expired); `secret` defaults to the test edges'.
 */
export function mintToken(user, { ttlSeconds = 3600, rooms, info, secret = SECRET } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const payload = {
    sub: user,
    iat: now,
    exp: now + ttlSeconds,
    plaza: {
      rooms: rooms ?? { "*": ["subscribe", "publish", "presence"] },
      info: info ?? { name: user },
    },
  };
  const head = `${b64url({ alg: "HS256", typ: "JWT" })}.${b64url(payload)}`;
  const sig = createHmac("sha256", secret).update(head).digest("base64url");
  return `${head}.${sig}`;
}

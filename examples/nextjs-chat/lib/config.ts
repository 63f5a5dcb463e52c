// Server-side configuration, read at request time (never exposed to the browser except
// the WebSocket URL, which is public anyway).

function required(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (see examples/nextjs-chat/README.md)`);
  return v;
}

/** The edge's HTTP base URL as seen from this server, e.g. http://127.0.0.1:8080. */
export const plazaUrl = () => required("PLAZA_URL").replace(/\/+$/, "");

/** The edge's WebSocket URL as seen from browsers (default: PLAZA_URL with ws:// and /v1/ws). */
export const plazaWsUrl = () =>
  process.env.PLAZA_WS_URL ?? `${plazaUrl().replace(/^http/, "ws")}/v1/ws`;

/** The HS256 secret shared with the edge (its PLAZA_AUTH__HMAC_SECRET), ≥ 32 bytes. */
export const plazaSecret = () => {
  const s = required("PLAZA_SECRET");
  if (Buffer.byteLength(s) < 32) throw new Error("PLAZA_SECRET must be at least 32 bytes");
  return s;
};

/** A server API key of the edge (one of its PLAZA_API__KEYS). */
export const plazaApiKey = () => required("PLAZA_API_KEY");

// Builds clients for the integration tests: Node's `ws` WebSocket, fast backoff, no browser globals.
import { WebSocket } from "ws";
import { PlazaClient } from "../../dist/index.js";
import { mintToken } from "./tokens.mjs";

const clients = new Set();

/**
 * A connected-on-demand client for `user` at `url`. `getToken` defaults to minting a valid
 * 1-hour token; `calls` counts getToken calls.
 */
export function makeClient(url, user, options = {}) {
  const stats = { tokenCalls: 0 };
  const getToken = options.getToken ?? (() => mintToken(user));
  const client = new PlazaClient({
    url,
    WebSocket,
    name: "sdk-tests",
    backoff: { baseMs: 50, maxMs: 400 },
    environment: { window: null, document: null },
    requestTimeoutMs: 5_000,
    publishTimeoutMs: 20_000,
    ...options,
    getToken: async () => {
      stats.tokenCalls += 1;
      return getToken();
    },
  });
  client.stats = stats;
  clients.add(client);
  return client;
}

/** Closes every client made by `makeClient`. */
export function closeAllClients() {
  for (const c of clients) c.close();
  clients.clear();
}

/** Collects a subscription's publications' data. */
export function collect(sub) {
  const items = [];
  sub.on("publication", (p) => items.push(p));
  return items;
}

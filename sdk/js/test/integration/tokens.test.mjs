// Token refresh and terminal close codes against a real edge.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ErrorCode, PlazaClosedError, PlazaError } from "../../dist/index.js";
import { startEdge } from "../support/edge.mjs";
import { mintToken } from "../support/tokens.mjs";
import { closeAllClients, makeClient } from "../support/clients.mjs";
import { nextEvent, sleep, waitFor } from "../support/wait.mjs";

describe("tokens", () => {
  let edge;
  before(async () => {
    // refresh pushes 2 s before exp; the 4002 close 1 s after exp.
    edge = await startEdge({ env: { PLAZA_CLIENT__REFRESH_AHEAD: "2s", PLAZA_AUTH__LEEWAY: "1s" } });
  });
  after(async () => {
    closeAllClients();
    await edge?.stop();
  });

  test("refresh pushes are answered with getToken(): the connection outlives several token lifetimes", async () => {
    const ann = makeClient(edge.wsUrl, "ann", { getToken: () => mintToken("ann", { ttlSeconds: 4 }) });
    const disconnects = [];
    let refreshed = 0;
    ann.on("disconnected", (d) => disconnects.push(d));
    ann.on("tokenRefreshed", () => refreshed++);
    ann.connect();
    const s = ann.subscribe("chat:refresh");
    await nextEvent(s, "subscribed");
    const client = ann.connection.client;
    await sleep(7_000); // the first token expired at 4 s (+1 s leeway)
    assert.deepEqual(disconnects, [], "never disconnected");
    assert.equal(ann.connection.client, client, "same connection");
    assert.ok(refreshed >= 2, `refreshed ${refreshed} times`);
    assert.ok(ann.stats.tokenCalls >= 3, `getToken called ${ann.stats.tokenCalls} times`);
    await s.publish("still here"); // the refreshed token's capabilities apply
  });

  test("after a token_expired close (4002) the client fetches a fresh token and reconnects", async () => {
    let mode = "valid";
    const ann = makeClient(edge.wsUrl, "ann", {
      // While mode is "expired", getToken hands out expired tokens: every refresh fails (111).
      getToken: () => mintToken("ann", { ttlSeconds: mode === "valid" ? 3 : -60 }),
    });
    const errors = [];
    ann.on("error", (e) => errors.push(e));
    ann.connect();
    const s = ann.subscribe("chat:expire");
    await nextEvent(s, "subscribed");
    const first = ann.connection.client;
    mode = "expired";
    const closed = await nextEvent(ann, "disconnected", () => true, 10_000);
    assert.equal(closed.code, 4002);
    assert.equal(closed.reconnect, true);
    assert.ok(errors.some((e) => e instanceof PlazaError && e.code === ErrorCode.tokenExpired), "refresh failed with 111");
    mode = "valid";
    const again = await nextEvent(s, "subscribed", () => true, 10_000);
    assert.equal(again.recovered, true);
    assert.notEqual(ann.connection.client, first);
    assert.equal(ann.state, "connected");
  });

  test("an invalid token closes for good (4500): no reconnect, requests refused", async () => {
    const eve = makeClient(edge.wsUrl, "eve", {
      getToken: () => mintToken("eve", { secret: "not-the-edge-secret-0123456789abcdef" }),
    });
    const errors = [];
    eve.on("error", (e) => errors.push(e));
    eve.connect();
    const s = eve.subscribe("chat:x");
    const pending = eve.publish("chat:x", 1).then(
      () => null,
      (e) => e,
    );
    await waitFor(() => eve.state === "closed", "the client closes");
    const refused = await pending;
    assert.ok(refused instanceof PlazaClosedError && refused.code === 4500, `publish refused with 4500, got ${refused}`);
    assert.ok(errors.some((e) => e instanceof PlazaError && e.code === ErrorCode.invalidToken), "connect got 110");
    await sleep(1_000);
    assert.equal(eve.stats.tokenCalls, 1, "no second attempt");
    assert.equal(s.state, "subscribing");
    await assert.rejects(eve.presence("chat:x"), PlazaClosedError);
  });

  test("a protocol violation (4501) is terminal too, a drain (4000) is not", async () => {
    // 4000: SIGTERM on a second edge; clients reconnect (here: to nothing, so they keep trying).
    const other = await startEdge({ env: { PLAZA_DRAIN__WINDOW: "200ms" } });
    const dan = makeClient(other.wsUrl, "dan");
    dan.connect();
    await waitFor(() => dan.state === "connected", "dan connects");
    const closing = nextEvent(dan, "disconnected");
    const stopped = other.stop();
    const d = await closing;
    await stopped;
    assert.equal(d.code, 4000);
    assert.equal(d.reconnect, true);
    assert.equal(dan.state, "reconnecting");
    dan.close();

    // 4501: a frame the edge cannot parse, sent through the client's socket.
    let socket;
    const { WebSocket } = await import("ws");
    class Spy extends WebSocket {
      constructor(...args) {
        super(...args);
        socket = this;
      }
    }
    const spied = makeClient(edge.wsUrl, "max", { WebSocket: Spy });
    spied.connect();
    await waitFor(() => spied.state === "connected", "connected");
    const gone = nextEvent(spied, "disconnected");
    socket.send("not json");
    const g = await gone;
    assert.equal(g.code, 4501);
    assert.equal(g.reconnect, false);
    assert.equal(spied.state, "closed");
  });
});

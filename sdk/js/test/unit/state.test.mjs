import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";
import { PlazaClient, canTransition, assertTransition } from "../../dist/index.js";
import { FakeSocket, flush } from "../support/fake-socket.mjs";

const ALL = ["connecting", "connected", "disconnected", "reconnecting", "closed"];

test("the transition table", () => {
  const allowed = new Set([
    "disconnected>connecting",
    "disconnected>reconnecting",
    "disconnected>closed",
    "connecting>connected",
    "connecting>disconnected",
    "connecting>closed",
    "connected>disconnected",
    "connected>closed",
    "reconnecting>connected",
    "reconnecting>disconnected",
    "reconnecting>closed",
    "closed>connecting",
  ]);
  for (const from of ALL) {
    for (const to of ALL) {
      assert.equal(canTransition(from, to), allowed.has(`${from}>${to}`), `${from} → ${to}`);
    }
  }
  assert.throws(() => assertTransition("closed", "connected"), /invalid connection state transition/);
});

function client(extra = {}) {
  return new PlazaClient({
    url: "ws://edge.test/v1/ws",
    getToken: extra.getToken ?? (() => "tok"),
    WebSocket: FakeSocket,
    environment: { window: null, document: null },
    backoff: { baseMs: 10, maxMs: 20, random: () => 0.5 },
    liveness: false,
    ...extra,
  });
}

beforeEach(() => FakeSocket.reset());

test("connect → connected → (drop) disconnected → reconnecting → connected", async () => {
  const c = client();
  const states = [];
  c.on("state", (s) => states.push(s.state));
  c.connect();
  await flush();
  const s1 = FakeSocket.last;
  assert.deepEqual(s1.protocols, "plaza.v1");
  await s1.accept();
  assert.equal(c.state, "connected");
  s1.drop(1006);
  assert.equal(c.state, "reconnecting");
  await new Promise((r) => setTimeout(r, 30));
  assert.equal(FakeSocket.instances.length, 2, "one new attempt after the backoff");
  await FakeSocket.last.accept();
  assert.deepEqual(states, ["connecting", "connected", "disconnected", "reconnecting", "connected"]);
  c.close();
  assert.equal(c.state, "closed");
});

test("failed attempts stay in reconnecting; a terminal code closes", async () => {
  const c = client();
  const states = [];
  c.on("state", (s) => states.push(s.state));
  c.connect();
  await flush();
  FakeSocket.last.drop(1006); // refused before open
  await new Promise((r) => setTimeout(r, 30));
  FakeSocket.last.drop(1006);
  await new Promise((r) => setTimeout(r, 30));
  const s = FakeSocket.last;
  s.open();
  s.push({ push: "disconnect", code: 4503, reason: "frame too big", reconnect: false });
  s.drop(4503, "frame too big");
  assert.deepEqual(states, ["connecting", "disconnected", "reconnecting", "closed"]);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(FakeSocket.instances.length, 3, "no attempt after a terminal close");
});

test("the disconnect push decides over the close frame's code", async () => {
  const c = client();
  c.connect();
  await flush();
  await FakeSocket.last.accept();
  const seen = [];
  c.on("disconnected", (d) => seen.push(d));
  FakeSocket.last.push({ push: "disconnect", code: 4000, reason: "draining", reconnect: true });
  FakeSocket.last.drop(1006);
  assert.equal(seen[0].code, 4000);
  assert.equal(seen[0].reconnect, true);
  assert.equal(c.state, "reconnecting");
  c.close();
});

test("4002 makes the next attempt call getToken again; other drops reuse a fresh token", async () => {
  let calls = 0;
  const c = client({ getToken: () => `tok${++calls}` });
  c.connect();
  await flush();
  await FakeSocket.last.accept({ expiresIn: 3600 });
  FakeSocket.last.drop(1006);
  await new Promise((r) => setTimeout(r, 30));
  FakeSocket.last.open();
  assert.equal(FakeSocket.last.ops("connect")[0].token, "tok1", "token with an hour left is reused");
  FakeSocket.last.reply(FakeSocket.last.ops("connect")[0], { client: "c", user: "ann", expires_in: 3600, ping_interval: 25 });
  await flush();
  FakeSocket.last.push({ push: "disconnect", code: 4002, reason: "token expired", reconnect: true });
  FakeSocket.last.drop(4002);
  await new Promise((r) => setTimeout(r, 30));
  FakeSocket.last.open();
  assert.equal(FakeSocket.last.ops("connect")[0].token, "tok2", "fresh token after 4002");
  assert.equal(calls, 2);
  c.close();
});

test("a refresh push is answered with a refresh command carrying getToken()'s token", async () => {
  let calls = 0;
  const c = client({ getToken: () => `tok${++calls}` });
  c.connect();
  await flush();
  const s = FakeSocket.last;
  await s.accept({ expiresIn: 20 });
  s.push({ push: "refresh", expires_in: 20 });
  await flush();
  const r = s.ops("refresh")[0];
  assert.equal(r.token, "tok2");
  let refreshed;
  c.on("tokenRefreshed", (e) => (refreshed = e));
  s.reply(r, { expires_in: 900 });
  await flush();
  await flush();
  assert.deepEqual(refreshed, { expiresIn: 900 });
  c.close();
});

test("the online event skips the backoff wait", async () => {
  const win = new EventTarget();
  const c = client({ environment: { window: win, document: null }, backoff: { baseMs: 60_000, maxMs: 60_000, random: () => 0.99 } });
  c.connect();
  await flush();
  await FakeSocket.last.accept();
  FakeSocket.last.drop(1006);
  assert.equal(c.state, "reconnecting");
  await flush();
  assert.equal(FakeSocket.instances.length, 1, "waiting ~1 minute");
  win.dispatchEvent(new Event("online"));
  await flush();
  assert.equal(FakeSocket.instances.length, 2, "reconnects at once");
  c.close();
});

test("a hidden tab becoming visible reconnects at once and refreshes a token near expiry", async () => {
  const doc = new EventTarget();
  doc.visibilityState = "hidden";
  let now = 1_000_000;
  let calls = 0;
  const c = client({
    environment: { window: null, document: doc },
    now: () => now,
    getToken: () => `tok${++calls}`,
    backoff: { baseMs: 60_000, maxMs: 60_000, random: () => 0.99 },
  });
  c.connect();
  await flush();
  await FakeSocket.last.accept({ expiresIn: 600 });
  // The tab sleeps; its timers were throttled. 9.5 minutes later it becomes visible again.
  now += 570_000;
  doc.visibilityState = "visible";
  doc.dispatchEvent(new Event("visibilitychange"));
  await flush();
  assert.equal(FakeSocket.last.ops("refresh").length, 1, "refresh sent on visibility with < 1 min left");
  assert.equal(FakeSocket.last.ops("refresh")[0].token, "tok2");
  FakeSocket.last.drop(1006);
  assert.equal(c.state, "reconnecting");
  doc.dispatchEvent(new Event("visibilitychange"));
  await flush();
  assert.equal(FakeSocket.instances.length, 2, "visible again: reconnect without waiting");
  c.close();
});

test("a missing WebSocket implementation is reported, not silently ignored", () => {
  const c = new PlazaClient({ url: "ws://x/v1/ws", getToken: () => "t", WebSocket: undefined, environment: {} });
  if (globalThis.WebSocket === undefined) {
    assert.throws(() => c.connect(), /no WebSocket implementation/);
  } else {
    assert.doesNotThrow(() => c.connect());
    c.close();
  }
});

test("liveness: an unanswered ping within one ping interval drops the connection and reconnects", async () => {
  const c = client({ liveness: true });
  const seen = [];
  c.on("disconnected", (d) => seen.push(d));
  c.connect();
  await flush();
  const s = FakeSocket.last;
  await s.accept({ pingInterval: 1 });
  await new Promise((r) => setTimeout(r, 1_100));
  const ping = s.ops("ping")[0];
  assert.ok(ping, "a ping command after one interval");
  s.reply(ping, {}); // answered: stays connected
  await new Promise((r) => setTimeout(r, 1_100));
  assert.equal(c.state, "connected");
  assert.equal(s.ops("ping").length, 2);
  // The second ping is never answered: one interval later the socket is dropped.
  await new Promise((r) => setTimeout(r, 1_100));
  assert.equal(seen.length, 1);
  assert.deepEqual([seen[0].code, seen[0].reason, seen[0].reconnect], [1006, "no reply to ping", true]);
  assert.ok(s.closedByClient, "the dead socket is closed");
  assert.ok(c.state === "reconnecting" || c.state === "connecting");
  c.close();
});

import assert from "node:assert/strict";
import { beforeEach, test } from "node:test";
import { PlazaClient } from "../../dist/index.js";
import { FakeSocket, flush } from "../support/fake-socket.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function connected(extra = {}) {
  const c = new PlazaClient({
    url: "ws://edge.test/v1/ws",
    getToken: () => "tok",
    WebSocket: FakeSocket,
    environment: { window: null, document: null },
    backoff: { baseMs: 10, maxMs: 20, random: () => 0.5 },
    liveness: false,
    unsubscribeDelayMs: 20,
    ...extra,
  });
  c.connect();
  return c;
}

async function ready(c) {
  await flush();
  await FakeSocket.last.accept();
  return FakeSocket.last;
}

beforeEach(() => FakeSocket.reset());

test("two handles on a room send one subscribe; the room is left after the last release", async () => {
  const c = connected();
  const s = await ready(c);
  const h1 = c.subscribe("chat:a");
  await flush();
  const h2 = c.subscribe("chat:a");
  await flush();
  assert.equal(s.ops("subscribe").length, 1);
  assert.equal(c.refCount("chat:a"), 2);
  s.reply(s.ops("subscribe")[0], { epoch: "e1", offset: 5, recovered: false, publications: [] });
  await flush();
  const got1 = [];
  const got2 = [];
  h1.on("publication", (p) => got1.push(p.offset));
  h2.on("publication", (p) => got2.push(p.offset));
  s.push({ push: "pub", room: "chat:a", offset: 7, data: 1, from: null });
  assert.deepEqual([got1, got2], [[7], [7]]);
  h1.unsubscribe();
  h1.unsubscribe(); // idempotent
  await sleep(40);
  assert.equal(s.ops("unsubscribe").length, 0, "one handle left");
  h2.unsubscribe();
  assert.equal(s.ops("unsubscribe").length, 0, "lingers briefly");
  await sleep(40);
  assert.equal(s.ops("unsubscribe").length, 1);
  assert.equal(c.refCount("chat:a"), 0);
  c.close();
});

test("release then subscribe again within the linger (React StrictMode) sends nothing", async () => {
  const c = connected();
  const s = await ready(c);
  const h1 = c.subscribe("chat:b");
  await flush();
  s.reply(s.ops("subscribe")[0], { epoch: "e1", offset: 1, recovered: false, publications: [] });
  await flush();
  h1.unsubscribe();
  const h2 = c.subscribe("chat:b");
  const ev = await new Promise((r) => h2.on("subscribed", r));
  assert.equal(ev.recovered, false);
  await sleep(40);
  assert.equal(s.ops("subscribe").length, 1);
  assert.equal(s.ops("unsubscribe").length, 0);
  assert.equal(h2.state, "subscribed");
  c.close();
});

test("after a reconnect rooms resubscribe with recover from the last pub offset; duplicates are dropped", async () => {
  const c = connected();
  const s1 = await ready(c);
  const h = c.subscribe("chat:c");
  await flush();
  const got = [];
  h.on("publication", (p) => got.push(p.offset));
  s1.reply(s1.ops("subscribe")[0], { epoch: "e1", offset: 10, recovered: false, publications: [] });
  await flush();
  s1.push({ push: "pub", room: "chat:c", offset: 12, data: null });
  s1.push({ push: "pub", room: "chat:c", offset: 12, data: null }); // duplicate
  s1.push({ push: "pub", room: "chat:c", offset: 11, data: null }); // older
  s1.drop(1006);
  assert.equal(h.state, "subscribing");
  await sleep(30);
  const s2 = FakeSocket.last;
  await s2.accept();
  const sub = s2.ops("subscribe")[0];
  assert.deepEqual(sub.recover, { epoch: "e1", offset: 12 });
  const subscribed = new Promise((r) => h.on("subscribed", r));
  s2.reply(sub, {
    epoch: "e1",
    offset: 20,
    recovered: true,
    publications: [
      { offset: 12, data: null, from: null },
      { offset: 15, data: null, from: null },
      { offset: 20, data: null, from: null },
    ],
  });
  const ev = await subscribed;
  assert.deepEqual(got, [12, 15, 20]);
  assert.equal(ev.recovered, true);
  assert.equal(ev.recoveredCount, 2);
  assert.deepEqual(h.position, { epoch: "e1", offset: 20 });
  c.close();
});

test("recovered: false reaches the handle with the new epoch", async () => {
  const c = connected();
  const s1 = await ready(c);
  const h = c.subscribe("chat:d");
  await flush();
  s1.reply(s1.ops("subscribe")[0], { epoch: "e1", offset: 3, recovered: false, publications: [] });
  await flush();
  s1.drop(1006);
  await sleep(30);
  const s2 = FakeSocket.last;
  await s2.accept();
  const subscribed = new Promise((r) => h.on("subscribed", r));
  s2.reply(s2.ops("subscribe")[0], { epoch: "e2", offset: 0, recovered: false, publications: [] });
  await flush();
  const ev = await subscribed;
  assert.deepEqual([ev.recovering, ev.recovered, ev.epochChanged], [true, false, true]);
  c.close();
});

test("a publish is resent after a reconnect with the same idem, after the resubscribe", async () => {
  const c = connected();
  const s1 = await ready(c);
  c.subscribe("chat:e");
  await flush();
  s1.reply(s1.ops("subscribe")[0], { epoch: "e1", offset: 1, recovered: false, publications: [] });
  await flush();
  const p = c.publish("chat:e", { t: "x" });
  await flush();
  const first = s1.ops("publish")[0];
  assert.ok(first.idem && first.idem.length >= 16, "automatic idem");
  s1.drop(1006);
  await sleep(30);
  const s2 = FakeSocket.last;
  await s2.accept();
  assert.equal(s2.ops("publish").length, 0, "waits for the room's resubscribe");
  s2.reply(s2.ops("subscribe")[0], { epoch: "e1", offset: 2, recovered: true, publications: [{ offset: 2, data: { t: "x" }, from: null }] });
  await flush();
  await flush();
  const again = s2.ops("publish")[0];
  assert.equal(again.idem, first.idem);
  s2.reply(again, { epoch: "e1", offset: 2 });
  await flush();
  assert.deepEqual(await p, { epoch: "e1", offset: 2 });
  c.close();
});

test("temporary errors are retried, permanent ones reject with the code", async () => {
  const c = connected();
  const s = await ready(c);
  const p = c.presenceStats("chat:f");
  await flush();
  s.fail(s.ops("presence_stats")[0], 113, "backend down", true);
  await flush();
  await sleep(400);
  assert.equal(s.ops("presence_stats").length, 2, "retried after 113");
  s.reply(s.ops("presence_stats")[1], { clients: 1, users: 1 });
  await flush();
  assert.deepEqual(await p, { clients: 1, users: 1 });
  const q = c.presence("chat:f").then(
    () => assert.fail("presence should be refused"),
    (e) => e,
  );
  await flush();
  s.fail(s.ops("presence")[0], 114, "presence off");
  await flush();
  const e = await q;
  assert.deepEqual([e.name, e.code, e.temporary, e.op], ["PlazaError", 114, false, "presence"]);
  c.close();
});

test("requests time out, including while waiting for a connection", async () => {
  const c = connected({ requestTimeoutMs: 50 });
  await flush(); // never accepted
  await assert.rejects(c.history("chat:g"), { name: "PlazaTimeoutError" });
  c.close();
});

test("a handle asking for presence upgrades a room subscribed without it", async () => {
  const c = connected();
  const s = await ready(c);
  const plain = c.subscribe("chat:h");
  await flush();
  s.reply(s.ops("subscribe")[0], { epoch: "e1", offset: 4, recovered: false, publications: [] });
  await flush();
  const withPresence = c.subscribe("chat:h", { presence: true });
  await flush();
  assert.equal(s.ops("unsubscribe").length, 1);
  const sub2 = s.ops("subscribe")[1];
  assert.deepEqual([sub2.presence, sub2.recover], [true, { epoch: "e1", offset: 4 }]);
  s.reply(s.ops("unsubscribe")[0], {});
  await flush();
  s.reply(sub2, { epoch: "e1", offset: 4, recovered: true, publications: [] });
  await flush();
  const joins = [];
  withPresence.on("join", (m) => joins.push(m.user));
  plain.on("join", (m) => joins.push(`plain:${m.user}`));
  s.push({ push: "join", room: "chat:h", member: { client: "x", user: "bob", info: null } });
  assert.deepEqual(joins, ["bob"], "only handles that asked get join events");
  c.close();
});

test("updatePresence is sent once the room is live, again after every resubscribe, and update pushes reach presence handles", async () => {
  const c = connected();
  const s1 = await ready(c);
  const h = c.subscribe("chat:up", { presence: true });
  await h.updatePresence({ status: "away" }); // still subscribing: remembered, sent when live
  await flush();
  assert.equal(s1.ops("presence_update").length, 0);
  s1.reply(s1.ops("subscribe")[0], { epoch: "e1", offset: 0, recovered: false, publications: [] });
  await flush();
  assert.deepEqual(
    s1.ops("presence_update").map((o) => [o.room, o.info]),
    [["chat:up", { status: "away" }]],
  );
  const updates = [];
  h.on("update", (m) => updates.push(m.info));
  s1.push({ push: "update", room: "chat:up", member: { client: "x", user: "bob", info: { status: "busy" } } });
  assert.deepEqual(updates, [{ status: "busy" }]);
  s1.drop(1006);
  await sleep(30);
  const s2 = FakeSocket.last;
  await s2.accept();
  s2.reply(s2.ops("subscribe")[0], { epoch: "e1", offset: 0, recovered: true, publications: [] });
  await flush();
  assert.deepEqual(
    s2.ops("presence_update").map((o) => o.info),
    [{ status: "away" }],
    "a new subscription starts from the token's info: ours is set again",
  );
  c.close();
});

test("a presence_resync push reaches presence handles only, with its members and next", async () => {
  const c = connected();
  const s = await ready(c);
  const withPresence = c.subscribe("chat:rs", { presence: true });
  const plain = c.subscribe("chat:rs");
  await flush();
  s.reply(s.ops("subscribe")[0], { epoch: "e1", offset: 0, recovered: false, publications: [] });
  await flush();
  const got = [];
  withPresence.on("presenceResync", (r) => got.push(r));
  plain.on("presenceResync", (r) => got.push({ plain: r }));
  const member = { client: "x", user: "bob", info: null };
  s.push({ push: "presence_resync", room: "chat:rs", members: [member], next: "x" });
  s.push({ push: "presence_resync", room: "chat:rs", members: [] });
  assert.deepEqual(got, [
    { members: [member], next: "x" },
    { members: [], next: undefined },
  ]);
  c.close();
});

test("handles made in the same task share one subscribe with the union of their options", async () => {
  const c = connected();
  const s = await ready(c);
  c.subscribe("chat:u");
  c.subscribe("chat:u", { presence: true });
  await flush();
  assert.equal(s.ops("subscribe").length, 1);
  assert.equal(s.ops("subscribe")[0].presence, true);
  assert.equal(s.ops("unsubscribe").length, 0);
  c.close();
});

test("an unsubscribed push ends the subscription with its code", async () => {
  const c = connected();
  const s = await ready(c);
  const h = c.subscribe("news:x");
  await flush();
  s.reply(s.ops("subscribe")[0], { epoch: "e1", offset: 1, recovered: false, publications: [] });
  await flush();
  const ended = new Promise((r) => h.on("state", (e) => e.state === "unsubscribed" && r(e)));
  s.push({ push: "unsubscribed", room: "news:x", code: 106, reason: "revoked" });
  const e = await ended;
  assert.equal(e.error.code, 106);
  assert.equal(h.state, "unsubscribed");
  s.drop(1006);
  await sleep(30);
  await FakeSocket.last.accept();
  assert.equal(FakeSocket.last.ops("subscribe").length, 0, "a revoked room is not resubscribed");
  c.close();
});

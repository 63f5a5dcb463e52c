// Against a real `plaza-edge --dev`: connect, rooms, publish, presence, history, typed errors.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ErrorCode, PlazaError } from "../../dist/index.js";
import { api, startEdge } from "../support/edge.mjs";
import { closeAllClients, collect, makeClient } from "../support/clients.mjs";
import { nextEvent, sleep, waitFor } from "../support/wait.mjs";

describe("basics against a real edge", () => {
  let edge;
  before(async () => {
    edge = await startEdge();
  });
  after(async () => {
    closeAllClients();
    await edge?.stop();
  });

  test("two clients connect, subscribe, publish and receive each other's publications", async () => {
    const ann = makeClient(edge.wsUrl, "ann");
    const bob = makeClient(edge.wsUrl, "bob");
    const states = [];
    ann.on("state", (s) => states.push(s.state));
    ann.connect();
    bob.connect();
    const a = ann.subscribe("chat:basics");
    const b = bob.subscribe("chat:basics");
    const got = collect(a);
    await Promise.all([nextEvent(a, "subscribed"), nextEvent(b, "subscribed")]);
    assert.deepEqual(states, ["connecting", "connected"]);
    assert.equal(ann.connection.user, "ann");
    const r1 = await bob.publish("chat:basics", { text: "hi ann" });
    const r2 = await b.publish({ text: "still there?" });
    assert.ok(r2.offset > r1.offset, "offsets grow");
    await waitFor(() => got.length === 2, "ann receives both publications");
    assert.deepEqual(got.map((p) => p.data.text), ["hi ann", "still there?"]);
    assert.equal(got[0].from.user, "bob");
    assert.equal(a.position.offset, r2.offset);
  });

  test("presence, presence stats, join and leave, history", async () => {
    const ann = makeClient(edge.wsUrl, "ann");
    const bob = makeClient(edge.wsUrl, "bob");
    ann.connect();
    bob.connect();
    const a = ann.subscribe("chat:presence", { presence: true });
    await nextEvent(a, "subscribed");
    const joins = collect2(a, "join");
    const leaves = collect2(a, "leave");
    const b = bob.subscribe("chat:presence");
    await nextEvent(b, "subscribed");
    await waitFor(() => joins.some((m) => m.user === "bob"), "ann sees bob join");
    const members = await ann.presence("chat:presence");
    assert.deepEqual(members.map((m) => m.user).sort(), ["ann", "bob"]);
    assert.deepEqual(members.find((m) => m.user === "bob").info, { name: "bob" });
    assert.deepEqual(await bob.presenceStats("chat:presence"), { clients: 2, users: 2 });
    await b.publish({ n: 1 });
    await b.publish({ n: 2 });
    const h = await ann.history("chat:presence", { limit: 10 });
    assert.deepEqual(h.publications.map((p) => p.data.n), [1, 2]);
    assert.equal(h.complete, true);
    b.unsubscribe();
    await waitFor(() => leaves.some((m) => m.user === "bob"), "ann sees bob leave after the last handle is released");
  });

  test("two handles on one room share one subscription (ref counting)", async () => {
    const ann = makeClient(edge.wsUrl, "ann", { unsubscribeDelayMs: 20 });
    ann.connect();
    const h1 = ann.subscribe("chat:shared");
    const h2 = ann.subscribe("chat:shared");
    const [g1, g2] = [collect(h1), collect(h2)];
    await Promise.all([nextEvent(h1, "subscribed"), nextEvent(h2, "subscribed")]);
    assert.equal(ann.refCount("chat:shared"), 2);
    // One protocol subscription = one presence member.
    assert.deepEqual(await ann.presenceStats("chat:shared"), { clients: 1, users: 1 });
    await h1.publish("x");
    await waitFor(() => g1.length === 1 && g2.length === 1, "both handles get the publication once");
    h1.unsubscribe();
    await sleep(100);
    assert.equal(h2.state, "subscribed", "the other handle keeps the room");
    assert.deepEqual(await ann.presenceStats("chat:shared"), { clients: 1, users: 1 });
    await h2.publish("y");
    await waitFor(() => g2.length === 2, "the remaining handle still receives");
    assert.equal(g1.length, 1, "a released handle receives nothing more");
    h2.unsubscribe();
    await waitFor(async () => (await ann.presenceStats("chat:shared")).clients === 0, "room left after the last handle");
  });

  test("errors carry protocol codes", async () => {
    const ann = makeClient(edge.wsUrl, "ann", {
      getToken: () => mintLimited("ann"),
    });
    ann.connect();
    await assert.rejects(ann.publish("chat:nosub", 1), (e) => e instanceof PlazaError && e.code === ErrorCode.notSubscribed);
    const denied = ann.subscribe("admin:audit");
    const ev = await nextEvent(denied, "state", (s) => s.state === "unsubscribed");
    assert.equal(ev.error.code, ErrorCode.permissionDenied);
    assert.equal(ev.error.temporary, false);
    await assert.rejects(ann.presence("chat:x"), (e) => e instanceof PlazaError && e.code === ErrorCode.permissionDenied);
    const bad = ann.subscribe("chat lobby");
    const ev2 = await nextEvent(bad, "state", (s) => s.state === "unsubscribed");
    assert.equal(ev2.error.code, ErrorCode.invalidRoom);
    assert.equal(ann.state, "connected", "error replies leave the connection open");
  });

  test("a kick from the server API (4009) is reconnectable: the client comes back and resubscribes", async () => {
    const kim = makeClient(edge.wsUrl, "kim");
    kim.connect();
    const s = kim.subscribe("chat:kick");
    await nextEvent(s, "subscribed");
    const first = kim.connection.client;
    const disconnected = nextEvent(kim, "disconnected");
    await api(edge, "/disconnect", { user: "kim", reason: "test kick" });
    const d = await disconnected;
    assert.equal(d.code, 4009);
    assert.equal(d.reconnect, true);
    const again = await nextEvent(s, "subscribed");
    assert.equal(again.recovering, true);
    assert.equal(again.recovered, true);
    assert.notEqual(kim.connection.client, first);
  });
});

function collect2(sub, event) {
  const items = [];
  sub.on(event, (v) => items.push(v));
  return items;
}

import { mintToken } from "../support/tokens.mjs";
function mintLimited(user) {
  return mintToken(user, { rooms: { "chat:*": ["subscribe", "publish"] } });
}

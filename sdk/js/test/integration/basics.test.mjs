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

  test("ephemeral publications reach subscribers without an offset and stay out of history", async () => {
    const ann = makeClient(edge.wsUrl, "ann");
    const bob = makeClient(edge.wsUrl, "bob");
    ann.connect();
    bob.connect();
    const a = ann.subscribe("chat:ephemeral");
    const b = bob.subscribe("chat:ephemeral");
    const got = collect2(a, "ephemeral");
    const pubs = collect(a);
    // Not subscribed yet (or not connected): nothing is sent, nothing is queued.
    assert.equal(await bob.publishEphemeral("chat:elsewhere", { typing: true }), false);
    await Promise.all([nextEvent(a, "subscribed"), nextEvent(b, "subscribed")]);
    const before = a.position.offset;
    for (let i = 0; i < 5; i++) assert.equal(await b.publishEphemeral({ typing: i }), true);
    await waitFor(() => got.length === 5, "ann receives every ephemeral publication");
    assert.deepEqual(got.map((m) => m.data.typing), [0, 1, 2, 3, 4], "in publisher order");
    assert.equal(got[0].from.user, "bob");
    assert.equal(got[0].offset, undefined, "no offset");
    assert.equal(a.position.offset, before, "the recovery position does not move");
    assert.equal(pubs.length, 0, "not delivered as publications");
    const h = await ann.history("chat:ephemeral");
    assert.equal(h.publications.length, 0, "never stored");
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
    // Pages in client id order; `next` leads to the rest and is absent on the last page.
    const first = await ann.presencePage("chat:presence", { limit: 1 });
    assert.equal(first.members.length, 1);
    assert.equal(typeof first.next, "string");
    const rest = await ann.presencePage("chat:presence", { after: first.next, limit: 1 });
    assert.equal(rest.members.length, 1);
    assert.equal(rest.next, undefined, "the last page has no next");
    assert.deepEqual(
      [...first.members, ...rest.members].map((m) => m.client),
      members.map((m) => m.client),
    );
    await b.publish({ n: 1 });
    await b.publish({ n: 2 });
    const h = await ann.history("chat:presence", { limit: 10 });
    assert.deepEqual(h.publications.map((p) => p.data.n), [1, 2]);
    assert.equal(h.complete, true);
    b.unsubscribe();
    await waitFor(() => leaves.some((m) => m.user === "bob"), "ann sees bob leave after the last handle is released");
  });

  test("updatePresence: presence subscribers get update, presence lists the new info", async () => {
    const ann = makeClient(edge.wsUrl, "ann");
    const bob = makeClient(edge.wsUrl, "bob");
    ann.connect();
    bob.connect();
    const a = ann.subscribe("chat:status", { presence: true });
    await nextEvent(a, "subscribed");
    const updates = collect2(a, "update");
    const b = bob.subscribe("chat:status");
    await b.updatePresence({ name: "bob", status: "away" }); // sent once the room is live
    await waitFor(() => updates.some((m) => m.user === "bob"), "ann sees bob's update");
    assert.deepEqual(updates.find((m) => m.user === "bob").info, { name: "bob", status: "away" });
    const members = await ann.presence("chat:status");
    assert.deepEqual(members.find((m) => m.user === "bob").info, { name: "bob", status: "away" });
    await assert.rejects(
      bob.updatePresence("chat:not-subscribed", 1),
      (e) => e instanceof PlazaError && e.code === ErrorCode.notSubscribed,
    );
  });

  test("user-level presence: one entry per user, pushes on first/last connection, both kinds at once", async () => {
    const ann = makeClient(edge.wsUrl, "ann");
    const bob1 = makeClient(edge.wsUrl, "bob");
    const bob2 = makeClient(edge.wsUrl, "bob");
    for (const c of [ann, bob1, bob2]) c.connect();
    const a = ann.subscribe("chat:users", { presence: "users" });
    await nextEvent(a, "subscribed");
    const joins = collect2(a, "userJoin");
    const updates = collect2(a, "userUpdate");
    const leaves = collect2(a, "userLeave");
    const b1 = bob1.subscribe("chat:users");
    await waitFor(() => joins.some((u) => u.user === "bob"), "ann sees bob's first connection");
    assert.equal(joins.find((u) => u.user === "bob").connections, 1);
    const b2 = bob2.subscribe("chat:users");
    await waitFor(() => updates.some((u) => u.user === "bob" && u.connections === 2), "bob's second connection");
    assert.deepEqual(
      (await ann.presenceUsers("chat:users")).map((u) => [u.user, u.connections]),
      [["ann", 1], ["bob", 2]],
    );
    // A connection-level handle on the same room: the subscription carries both kinds.
    const c = ann.subscribe("chat:users", { presence: true });
    const memberJoins = collect2(c, "join");
    await nextEvent(c, "subscribed");
    const cy = makeClient(edge.wsUrl, "cy");
    cy.connect();
    cy.subscribe("chat:users");
    await waitFor(() => memberJoins.some((m) => m.user === "cy"), "connection-level join of cy");
    await waitFor(() => joins.some((u) => u.user === "cy"), "user-level join of cy");
    b2.unsubscribe();
    await waitFor(() => updates.some((u) => u.user === "bob" && u.connections === 1), "bob down to one connection");
    b1.unsubscribe();
    await waitFor(() => leaves.some((u) => u.user === "bob"), "bob's last leave, after the server's debounce");
    assert.equal(joins.filter((u) => u.user === "bob").length, 1, "one userJoin for two connections");
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

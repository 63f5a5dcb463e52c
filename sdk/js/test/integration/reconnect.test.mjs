// Reconnects against a real edge: connection drops while the edge lives (a TCP proxy we cut),
// a lost reply to a publish, and an edge killed and restarted (memory backend: new epoch).
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { freePort, startEdge } from "../support/edge.mjs";
import { startProxy } from "../support/proxy.mjs";
import { closeAllClients, collect, makeClient } from "../support/clients.mjs";
import { nextEvent, sleep, waitFor } from "../support/wait.mjs";

const texts = (items) => items.map((p) => p.data.n);
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

describe("reconnect while the edge survives (TCP proxy cut)", () => {
  let edge;
  let proxy;
  before(async () => {
    edge = await startEdge();
    proxy = await startProxy(new URL(edge.httpUrl).host);
  });
  after(async () => {
    closeAllClients();
    await proxy?.close();
    await edge?.stop();
  });

  test("missed publications are recovered exactly once, in order, and queued publishes go out once", async () => {
    const ann = makeClient(proxy.wsUrl, "ann"); // behind the proxy
    const bob = makeClient(edge.wsUrl, "bob"); // direct
    ann.connect();
    bob.connect();
    const a = ann.subscribe("chat:recover");
    const b = bob.subscribe("chat:recover");
    const atAnn = collect(a);
    const atBob = collect(b);
    await Promise.all([nextEvent(a, "subscribed"), nextEvent(b, "subscribed")]);
    for (const n of range(1, 5)) await bob.publish("chat:recover", { n });
    await waitFor(() => atAnn.length === 5, "ann has 1..5 live");

    const states = [];
    ann.on("state", (s) => states.push(s.state));
    proxy.cut();
    await waitFor(() => ann.state === "reconnecting", "ann notices the drop");
    for (const n of range(6, 10)) await bob.publish("chat:recover", { n });
    // Published by ann while she is offline: queued, sent after the resubscribe.
    const queued = ann.publish("chat:recover", { n: 11 });
    await sleep(300);
    const resubscribed = nextEvent(a, "subscribed");
    proxy.restore();
    const ev = await resubscribed;
    assert.equal(ev.recovering, true);
    assert.equal(ev.recovered, true, "the edge kept the room's log: recovery succeeds");
    assert.equal(ev.recoveredCount, 5);
    assert.equal(ev.epochChanged, false);
    const r = await queued;
    await waitFor(() => atAnn.length === 11 && atBob.length === 11, "both see 11 publications");
    await sleep(200);
    assert.deepEqual(texts(atAnn), range(1, 11), "ann: no gap, no duplicate");
    assert.deepEqual(texts(atBob), range(1, 11), "bob: ann's queued publish delivered once");
    assert.equal(atBob[10].offset, r.offset);
    assert.deepEqual(states.slice(0, 3), ["disconnected", "reconnecting", "connected"]);
  });

  test("a publish whose reply was lost is retried with the same idem and delivered once", async () => {
    const ann = makeClient(proxy.wsUrl, "ann");
    const bob = makeClient(edge.wsUrl, "bob");
    ann.connect();
    bob.connect();
    const a = ann.subscribe("chat:idem");
    const b = bob.subscribe("chat:idem");
    const atAnn = collect(a);
    const atBob = collect(b);
    await Promise.all([nextEvent(a, "subscribed"), nextEvent(b, "subscribed")]);
    proxy.blackholeReplies(true); // ann's frames reach the edge; nothing comes back
    const pending = ann.publish("chat:idem", { n: 1 });
    await waitFor(() => atBob.length === 1, "the publish reached the edge");
    assert.equal(atAnn.length, 0, "ann has not seen it (blackholed)");
    proxy.cut(); // the socket dies before ann got the reply
    await sleep(100);
    proxy.restore();
    const r = await pending;
    assert.equal(r.offset, atBob[0].offset, "the retry returned the original's offset");
    await waitFor(() => atAnn.length === 1, "ann gets it through recovery");
    await bob.publish("chat:idem", { n: 2 });
    await waitFor(() => atAnn.length === 2 && atBob.length === 2, "later publications flow");
    assert.deepEqual(texts(atBob), [1, 2], "bob saw ann's publish exactly once");
    assert.deepEqual(texts(atAnn), [1, 2], "ann saw it exactly once");
  });
});

describe("edge killed and restarted", () => {
  let edge;
  let port;
  before(async () => {
    port = await freePort();
    edge = await startEdge({ port });
  });
  after(async () => {
    closeAllClients();
    await edge?.stop();
  });

  test("the client reconnects, resubscribes and reports recovered: false with the new epoch", async () => {
    const ann = makeClient(edge.wsUrl, "ann");
    ann.connect();
    const a = ann.subscribe("chat:restart", { presence: true });
    const atAnn = collect(a);
    const first = await nextEvent(a, "subscribed");
    await ann.publish("chat:restart", { n: 1 });
    await waitFor(() => atAnn.length === 1, "ann sees her own publication");

    await edge.kill();
    await waitFor(() => ann.state === "reconnecting", "ann notices the crash");
    await sleep(300); // a few refused attempts
    const resubscribed = nextEvent(a, "subscribed");
    edge = await startEdge({ port });
    const ev = await resubscribed;
    assert.equal(ev.recovering, true);
    assert.equal(ev.recovered, false, "the memory backend lost the log: the app must refetch");
    assert.equal(ev.epochChanged, true);
    assert.notEqual(ev.epoch, first.epoch);
    assert.equal(a.position.epoch, ev.epoch, "the handle adopted the new position");

    const bob = makeClient(edge.wsUrl, "bob");
    bob.connect();
    const b = bob.subscribe("chat:restart");
    await nextEvent(b, "subscribed");
    await bob.publish("chat:restart", { n: 2 });
    await waitFor(() => atAnn.length === 2, "publications after the restart arrive");
    assert.deepEqual(texts(atAnn), [1, 2]);
    const members = await ann.presence("chat:restart");
    assert.deepEqual(members.map((m) => m.user).sort(), ["ann", "bob"], "presence rebuilt on the new edge");
  });
});

// Live-state rooms against a real `plaza-edge --dev` whose `board` namespace has state rooms:
// set/delete, the map on subscriptions and after a reconnect, compare-and-set conflicts.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { ErrorCode, PlazaError } from "../../dist/index.js";
import { startEdge } from "../support/edge.mjs";
import { closeAllClients, makeClient } from "../support/clients.mjs";
import { nextEvent, waitFor } from "../support/wait.mjs";

const values = (map) => Object.fromEntries([...(map ?? new Map())].map(([k, v]) => [k, v.value]));

describe("live-state rooms against a real edge", () => {
  let edge;
  before(async () => {
    edge = await startEdge({ env: { PLAZA_ROOMS__NAMESPACES__BOARD__STATE__ENABLED: "true" } });
  });
  after(async () => {
    closeAllClients();
    await edge?.stop();
  });

  test("set and delete reach every subscriber's map; CAS conflicts carry code 119", async () => {
    const ann = makeClient(edge.wsUrl, "ann");
    const bob = makeClient(edge.wsUrl, "bob");
    ann.connect();
    bob.connect();
    const a = ann.subscribe("board:sdk");
    await nextEvent(a, "subscribed");
    assert.deepEqual(values(a.map), {}, "an empty room's map is empty, not undefined");
    const v1 = await ann.set("board:sdk", "score", 1, { version: 0 });
    await ann.set("board:sdk", "gone", true);
    const b = bob.subscribe("board:sdk");
    await nextEvent(b, "subscribed");
    await waitFor(() => values(bob.roomState("board:sdk")).score === 1, "bob's snapshot");
    assert.deepEqual(values(b.map), { score: 1, gone: true });
    await bob.delete("board:sdk", "gone");
    await assert.rejects(
      bob.set("board:sdk", "score", 5, { version: v1 - 1 }),
      (e) => e instanceof PlazaError && e.code === ErrorCode.stateConflict,
    );
    const v2 = await bob.set("board:sdk", "score", 2, { version: v1 });
    await waitFor(() => values(ann.roomState("board:sdk")).score === 2, "ann sees the change");
    assert.deepEqual(values(a.map), { score: 2 });
    assert.equal(a.map.get("score").version, v2);
    const plain = ann.subscribe("chat:plain");
    await nextEvent(plain, "subscribed");
    await assert.rejects(ann.set("chat:plain", "k", 1), (e) => e instanceof PlazaError && e.code === ErrorCode.notStateRoom);
  });
});
